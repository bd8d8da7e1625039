"""Gene embeddings from protein sequences with ESM-2 (fair-esm), the recipe UCE's tokens use.

UCE's gene tokens come from SATURN (snap-stanford/SATURN, `protein_embeddings/`): fair-esm's
`scripts/extract.py --include mean --truncate` gives each protein the mean of the last
layer's representation over its residues (BOS, EOS and padding excluded), and
`convert_protein_embeddings_to_gene_embeddings.py` averages a gene's proteins.

Long proteins: ESM-2 was trained on 1024 positions, 1022 residues plus BOS and EOS. As
`extract.py --truncate` does, a longer protein is cut to its first MAX_RESIDUES residues, so
uceindex reproduces the official embeddings rather than inventing a rule of its own.

Resume: finished proteins go to a cache folder (shards of {protein id: tensor}, each written
whole then renamed), every FLUSH_EVERY batches and when the run stops, even on an error or
Ctrl-C; a later run with the same weights computes only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from uceindex.atomic import written_whole
from uceindex.errors import InputDataError, ModelFilesError
from uceindex.model.load import load_tensors, refusal
from uceindex.species.esm_numerics import DEFAULT_PRECISION, PRECISIONS, TOKENS_PER_BATCH

MAX_RESIDUES = 1022  # ESM-2's context (1024 positions) less BOS and EOS
FLUSH_EVERY = 50  # batches between two cache shards
DTYPES = {name: getattr(torch, name) for name in PRECISIONS}  # precision name -> torch dtype
UNKNOWN = "X"  # residues outside the ESM alphabet are read as X (any amino acid)

Progress = Callable[[int, int], None]  # (proteins done, proteins in all)


@dataclass
class EsmStats:
    """What one run of `embed_proteins` did; `computed` + `from_cache` == `proteins`."""

    proteins: int = 0
    computed: int = 0  # embedded in this run
    from_cache: int = 0  # found in the cache of an earlier run
    truncated: int = 0  # longer than max_residues: first max_residues residues used
    max_residues: int = MAX_RESIDUES
    weights: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _read_weights(path: Path) -> dict:
    """torch.load of a fair-esm file: tensors plus the argparse.Namespace holding its sizes;
    nothing else is unpickled, whatever the environment says (a crafted file is refused)."""
    try:
        return load_tensors(path, allow=(argparse.Namespace,))
    except Exception as exc:
        raise ModelFilesError(
            f"cannot read ESM weights {path.name} ({refusal(exc)}): use a fair-esm checkpoint "
            "as published (tensors and its argparse.Namespace only)"
        ) from None


def esm_width(data: dict) -> int:
    """Embedding width of a fair-esm checkpoint, read off its token embedding."""
    state = data.get("model") if isinstance(data, dict) else None
    if isinstance(state, dict):
        for key, tensor in state.items():
            if key.endswith("embed_tokens.weight") and getattr(tensor, "dim", lambda: 0)() == 2:
                return int(tensor.shape[1])
    raise ModelFilesError("the ESM weights file has no embed_tokens.weight: not a fair-esm model")


def load_esm(
    weights: str | os.PathLike,
    *,
    expect_width: int | None = None,
    device: str | torch.device | None = None,
    precision: str = DEFAULT_PRECISION,
):
    """A fair-esm model and alphabet from a local weights file, in eval mode on `device`.

    Same as `esm.pretrained.load_model_and_alphabet_local`, except that the file is
    memory-mapped (a 15B checkpoint is not held twice in memory), the
    `-contact-regression.pt` file is not needed (contacts are not used), the width is checked
    against `expect_width` before the model is built, and errors are one actionable line."""
    import esm

    if precision not in PRECISIONS:
        raise InputDataError(f"precision must be one of {', '.join(PRECISIONS)}")
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise InputDataError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputDataError(f"--device {device} but no CUDA GPU is visible: use --device cpu")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelFilesError(
            f"no ESM weights at {path}: download esm2_t48_15B_UR50D.pt from "
            "https://dl.fbaipublicfiles.com/fair-esm/models/esm2_t48_15B_UR50D.pt"
        )
    data = _read_weights(path)
    width = esm_width(data)
    if expect_width is not None and width != expect_width:
        raise ModelFilesError(
            f"{path.name} gives {width}-d protein embeddings but this UCE checkpoint takes "
            f"{expect_width}-d gene tokens: the official checkpoints need ESM-2 15B "
            "(esm2_t48_15B_UR50D, 5120-d)"
        )
    # fair-esm picks the ESM-2 loader by file name; a renamed ESM-2 file still has "cfg".
    name = path.stem if path.stem.startswith("esm2") or "cfg" not in data else "esm2_" + path.stem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Regression weights not found": contacts unused
            model, alphabet = esm.pretrained.load_model_and_alphabet_core(name, data, None)
    except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
        raise ModelFilesError(
            f"{path.name} is not a fair-esm model fair-esm can rebuild ({refusal(exc)})"
        ) from None
    # One call: each parameter is cast and moved alone, so no second full copy is made.
    model = model.to(device=device, dtype=DTYPES[precision]).eval()
    return model, alphabet


class ProteinCache:
    """Finished protein embeddings of one run in a folder, so that a stopped run resumes.

    `meta` (weights, width, max_residues) is written once; a folder made with other weights
    or another truncation is refused rather than mixed in."""

    def __init__(self, root: str | os.PathLike, meta: dict):
        self.root = Path(root)
        self.meta = meta
        self._pending: dict[str, torch.Tensor] = {}

    def load(self) -> dict[str, torch.Tensor]:
        meta_file = self.root / "meta.json"
        if meta_file.exists():
            found = json.loads(meta_file.read_text())
            if found != self.meta:
                raise InputDataError(
                    f"the ESM cache in {self.root} was made with {found}, not {self.meta}: "
                    "rerun with the same settings, or delete that folder to start over"
                )
        done: dict[str, torch.Tensor] = {}
        for shard in sorted(self.root.glob("shard-*.pt")):
            try:
                done.update(load_tensors(shard))
            except Exception as exc:
                raise InputDataError(
                    f"cannot read the ESM cache shard {shard} ({refusal(exc)}): delete "
                    f"{self.root} to start over"
                ) from None
        return done

    def add(self, embeddings: dict[str, torch.Tensor]) -> None:
        self._pending.update(embeddings)

    def flush(self) -> None:
        """Write what was added since the last flush as one new shard (atomic rename)."""
        if not self._pending:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "meta.json").write_text(json.dumps(self.meta) + "\n")
        taken = [int(p.stem.split("-")[1]) for p in self.root.glob("shard-*.pt")]
        shard = self.root / f"shard-{max(taken, default=-1) + 1:06d}.pt"
        with written_whole(shard) as scratch:
            torch.save(self._pending, scratch)
        self._pending = {}


def _batches(lengths: list[int], tokens_per_batch: int, extra: int) -> list[list[int]]:
    """Indices, longest first (an out-of-memory error shows on the first batch), packed so
    that rows x padded length stays within tokens_per_batch (at least one row a batch)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = (lengths[current[0]] if current else lengths[i]) + extra
        if current and (len(current) + 1) * width > tokens_per_batch:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _encode(alphabet, sequences: list[str], device) -> tuple[torch.Tensor, int]:
    """(B, T) tokens: [BOS] residues [EOS] then padding; returns the first residue position."""
    bos, eos = int(alphabet.prepend_bos), int(alphabet.append_eos)
    unknown = alphabet.tok_to_idx[UNKNOWN]
    tokens = torch.full(
        (len(sequences), max(map(len, sequences)) + bos + eos), alphabet.padding_idx
    )
    for row, seq in enumerate(sequences):
        ids = [alphabet.tok_to_idx.get(c, unknown) for c in seq]
        if bos:
            tokens[row, 0] = alphabet.cls_idx
        tokens[row, bos : bos + len(ids)] = torch.tensor(ids)
        if eos:
            tokens[row, bos + len(ids)] = alphabet.eos_idx
    return tokens.to(device), bos


@torch.inference_mode()
def embed_proteins(
    sequences: dict[str, str],
    model,
    alphabet,
    *,
    max_residues: int = MAX_RESIDUES,
    tokens_per_batch: int | None = None,
    cache: ProteinCache | None = None,
    flush_every: int = FLUSH_EVERY,
    progress: Progress | None = None,
) -> tuple[dict[str, torch.Tensor], EsmStats]:
    """Protein id -> sequence  =>  protein id -> float32 CPU tensor [embed_dim].

    Mean of the last layer over the first `max_residues` residues. Identical sequences are
    run once. With a cache, proteins already in it are not run again and new ones are saved
    as they finish."""
    if max_residues < 1:
        raise InputDataError("max_residues must be at least 1")
    device = next(model.parameters()).device
    tokens_per_batch = tokens_per_batch or TOKENS_PER_BATCH.get(
        device.type, TOKENS_PER_BATCH["cpu"]
    )
    stats = EsmStats(proteins=len(sequences), max_residues=max_residues)
    done = cache.load() if cache is not None else {}
    done = {k: v for k, v in done.items() if k in sequences}
    stats.from_cache = len(done)
    ids_of: dict[str, list[str]] = {}
    for pid, seq in sequences.items():
        stats.truncated += len(seq) > max_residues
        if pid not in done:
            ids_of.setdefault(seq[:max_residues], []).append(pid)
    todo = list(ids_of)
    if progress:
        progress(len(done), len(sequences))
    extra = int(alphabet.prepend_bos) + int(alphabet.append_eos)
    layer = model.num_layers
    try:
        for n, batch in enumerate(_batches([len(s) for s in todo], tokens_per_batch, extra), 1):
            seqs = [todo[i] for i in batch]
            tokens, first = _encode(alphabet, seqs, device)
            rep = model(tokens, repr_layers=[layer])["representations"][layer]  # (B, T, E)
            finished = {}
            for row, seq in enumerate(seqs):
                mean = rep[row, first : first + len(seq)].float().mean(0).cpu()
                for pid in ids_of[seq]:
                    finished[pid] = mean
            done.update(finished)
            stats.computed += len(finished)
            if cache is not None:
                cache.add(finished)
                if n % flush_every == 0:
                    cache.flush()
            if progress:
                progress(len(done), len(sequences))
    finally:
        if cache is not None:
            cache.flush()
    return {pid: done[pid] for pid in sequences}, stats


def gene_embeddings(
    gene_proteins: dict[str, list[str]], proteins: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Gene symbol -> mean of its proteins' embeddings, in the order of `gene_proteins`."""
    genes = {}
    for symbol, ids in gene_proteins.items():
        found = [proteins[i] for i in ids if i in proteins]
        if found:
            genes[symbol] = torch.stack(found).mean(0)
    return genes
