"""Official model directory -> a loaded model: network, token table, species vocabularies.

Follows docs/uce.md §3. Files are read as published: tensors are
memory-mapped where the format allows, protein-embedding files are opened only for the
species asked for, and nothing is converted on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uceindex.errors import ModelFilesError, UnknownSpeciesError
from uceindex.model.digest import file_digest
from uceindex.model.files import (
    NEW_SPECIES_CSV,
    SETTINGS_FILE,
    TRAINING_SPECIES,
    ModelFiles,
    protein_embedding_file,
    read_offsets,
)
from uceindex.model.network import UCE, UCEConfig, published_sizes
from uceindex.model.vocab import SpeciesVocab


def load_tensors(path: str | os.PathLike, *, allow: tuple[type, ...] = ()):
    """torch.load on the CPU, memory-mapped when the file is in the zip format (every official
    file is), else read whole (the legacy format cannot be mapped).

    Only tensors and the classes in `allow` are unpickled, always: weights_only=True is passed
    explicitly, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot lift it and a crafted file is
    refused rather than run. Errors are torch's own: each caller says what the file was (with
    `refusal` for one line)."""
    allowed = torch.serialization.safe_globals(list(allow)) if allow else nullcontext()
    with allowed:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def refusal(exc: Exception) -> str:
    """Why torch refused a file, in one line (its unpickler says it after paragraphs of advice)."""
    text = " ".join(str(exc).split())
    key = "WeightsUnpickler error:"
    if key in text:
        text = text.split(key, 1)[1].split("Check the documentation")[0].split(". Please use")[0]
    return f"{type(exc).__name__}: {text.strip()[:200]}".rstrip(": ")


def _read(path: Path):
    """A model file's tensors; a truncated or foreign file is one clear error."""
    try:
        return load_tensors(path)
    except Exception as exc:
        raise ModelFilesError(
            f"cannot read {path.name} ({refusal(exc)}): download it again"
        ) from None


def _upper_keys(embeddings: dict) -> list[str]:
    """Upper-cased symbols in dict order, first occurrence kept, as the reference indexes them."""
    return list(dict.fromkeys(str(k).upper() for k in embeddings))


def legacy_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """The fingerprint earlier uceindex versions bound stores to: names, shapes and a strided
    sample of every tensor of the checkpoint, nothing else. Kept only to recognise them."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        flat = t.reshape(-1)
        step = max(1, flat.numel() // 256)
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(flat[::step][:256].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(files: ModelFiles, nhead: int) -> str:
    """What every species' embeddings depend on: the bytes of the checkpoint, the token table,
    the chromosome table and the species offsets, and the head count. Each file is hashed
    whole once per version of it (`digest.file_digest`), so a check costs a few stats."""
    h = hashlib.sha256(f"uceindex-model-v2 nhead={nhead}".encode())
    for path in (files.checkpoint, files.tokens, files.species_chrom, files.offsets):
        h.update(f"{path.name}={file_digest(path)};".encode())
    return h.hexdigest()[:16]


def vocabulary_fingerprint(vocab: SpeciesVocab, tokens: torch.Tensor | None = None) -> str:
    """What one species adds to the model fingerprint: its genes in token order, their token
    and chromosome rows and starts (read off its protein-embedding file, the offsets and the
    chromosome table), and, for an added species, the values of its own token rows."""
    h = hashlib.sha256(vocab.name.encode())
    h.update("\0".join(map(str, vocab.symbols)).encode())
    for array in (vocab.token_rows, vocab.chrom_rows, vocab.starts):
        h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    if tokens is not None:
        h.update(tokens.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class UCEModel:
    """A loaded model directory. `vocab(species)` reads that species' files on first use."""

    def __init__(self, model_dir: str | os.PathLike | None = None):
        self.files = ModelFiles.find(model_dir)
        settings = self._settings()
        state = _read(self.files.checkpoint)
        if not isinstance(state, dict):
            raise ModelFilesError(
                f"{self.files.checkpoint.name} is not a state dict: download it again"
            )
        nhead = int(settings.get("nhead", 20))
        self.fingerprint = fingerprint(self.files, nhead)
        self.legacy_fingerprint = legacy_fingerprint(state)
        self.network = UCE.from_state_dict(state, nhead=nhead)
        self.config: UCEConfig = self.network.config
        tokens = _read(self.files.tokens)
        self.chrom_token_offset = int(tokens.shape[0])  # first chromosome row
        if tokens.dim() != 2 or tokens.shape[1] != self.config.token_dim:
            raise ModelFilesError(
                f"all_tokens.torch has rows of width {tuple(tokens.shape)[1:]}, the checkpoint "
                f"expects {self.config.token_dim}: the two files come from different releases"
            )
        self._chrom_table = self._read_chrom_table()
        n_chrom = self.config.n_tokens - self.chrom_token_offset
        if n_chrom < len(self._chrom_table["spec_chrom"].cat.categories):
            raise ModelFilesError(
                f"species_chrom.csv names {len(self._chrom_table['spec_chrom'].cat.categories)} "
                f"chromosomes but the checkpoint has {n_chrom} chromosome tokens: "
                "the checkpoint does not match the token table"
            )
        self._offsets = read_offsets(self.files.offsets)
        self._extra = self._register_extra_species()
        self._vocabs: dict[str, SpeciesVocab] = {}
        self._vocab_fingerprints: dict[str, str] = {}

    @property
    def name(self) -> str:
        return f"uce-{self.config.nlayers}l-{self.fingerprint}"

    def _settings(self) -> dict:
        path = self.files.root / SETTINGS_FILE
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFilesError(
                f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from None

    def _read_chrom_table(self) -> pd.DataFrame:
        table = pd.read_csv(self.files.species_chrom)
        missing = {"species", "gene_symbol", "chromosome", "start"} - set(table.columns)
        if missing:
            raise ModelFilesError(f"species_chrom.csv lacks the column(s) {sorted(missing)}")
        # Chromosome code = category code over the whole file, as the reference computes it.
        table["spec_chrom"] = pd.Categorical(
            table["species"] + "_" + table["chromosome"].astype(str)
        )
        return table

    # -- species -----------------------------------------------------------------------------

    @property
    def species(self) -> list[str]:
        official = [s for s in TRAINING_SPECIES if s in self._offsets]
        return official + [s for s in self._extra if s not in official]

    def vocab(self, species: str) -> SpeciesVocab:
        if species not in self._vocabs:
            if species in self._extra:
                self._vocabs[species] = self._extra[species]
            elif species in self._offsets and species in TRAINING_SPECIES:
                self._vocabs[species] = self._official_vocab(species)
            else:
                raise UnknownSpeciesError(
                    f"unknown species {species!r}; this model knows: {', '.join(self.species)} "
                    "(add one with `uceindex species add`)"
                )
        return self._vocabs[species]

    def vocabulary_fingerprint(self, species: str) -> str:
        """The fingerprint of `species`' vocabulary (`vocabulary_fingerprint`); data sets of a
        store record it, so that a swapped protein-embedding file is refused."""
        if species not in self._vocab_fingerprints:
            vocab = self.vocab(species)
            tokens = None
            if species in self._extra:  # its token rows are its own file's, not the checkpoint's
                weight = self.network.pe_embedding.weight
                rows = np.unique(np.concatenate([vocab.token_rows, vocab.chrom_rows]))
                tokens = weight[torch.from_numpy(rows)]
            self._vocab_fingerprints[species] = vocabulary_fingerprint(vocab, tokens)
        return self._vocab_fingerprints[species]

    def _official_vocab(self, species: str) -> SpeciesVocab:
        path = self.files.protein_embeddings / protein_embedding_file(species)
        if not path.exists():
            raise ModelFilesError(
                f"{path.name} is missing from {path.parent}: run "
                f"`uceindex models download {self.files.model_name} --dir {self.files.root}`"
            )
        symbols = _upper_keys(_read(path))
        rows = self._offsets[species] + np.arange(len(symbols), dtype=np.int64)
        table = self._chrom_table[self._chrom_table["species"] == species]
        codes = pd.Series(
            table["spec_chrom"].cat.codes.to_numpy(), index=table["gene_symbol"].str.upper()
        )
        return _vocab(species, symbols, rows, codes, table["start"], self.chrom_token_offset)

    def _register_extra_species(self) -> dict[str, SpeciesVocab]:
        """Species from new_species_protein_embeddings.csv get rows appended to the token table:
        their gene embeddings, then chromosome tokens seeded by their taxonomy id (docs/uce.md §7)."""
        csv = self.files.root / NEW_SPECIES_CSV
        if not csv.exists():
            return {}
        listing = pd.read_csv(csv)
        if not {"species", "path"} <= set(listing.columns):
            raise ModelFilesError(f"{NEW_SPECIES_CSV} needs the columns species and path")
        vocabs, blocks, next_row = {}, [], self.config.n_tokens
        for row in listing.itertuples():
            vocab, block = self._extra_species(row, next_row)
            vocabs[row.species] = vocab
            blocks.append(block)
            next_row += block.shape[0]
        if blocks:
            table = torch.cat([self.network.pe_embedding.weight] + blocks)
            self.network.pe_embedding = torch.nn.Embedding.from_pretrained(table, freeze=True)
        return vocabs

    def _extra_species(self, row, first_row: int) -> tuple[SpeciesVocab, torch.Tensor]:
        pt = self.files.resolve(row.path)
        chrom_csv = self.files.resolve(getattr(row, "chrom_csv", None) or "")
        taxonomy_id = getattr(row, "taxonomy_id", None)
        if not pt.exists() or not chrom_csv.is_file() or pd.isna(taxonomy_id):
            raise ModelFilesError(
                f"species {row.species!r} in {NEW_SPECIES_CSV} needs an existing path, chrom_csv "
                "and taxonomy_id: register it with `uceindex species add`"
            )
        embeddings = _read(pt)
        symbols = _upper_keys(embeddings)
        first = {}
        for k, v in embeddings.items():
            first.setdefault(str(k).upper(), v)
        genes = torch.stack([first[s].float() for s in symbols])
        if genes.shape[1] != self.config.token_dim:
            raise ModelFilesError(
                f"species {row.species!r} has gene embeddings of width {genes.shape[1]}, "
                f"the checkpoint needs {self.config.token_dim}"
            )
        chrom = pd.read_csv(chrom_csv)
        chrom["spec_chrom"] = pd.Categorical(row.species + "_" + chrom["chromosome"].astype(str))
        n_chrom = len(chrom["spec_chrom"].cat.categories)
        gen = torch.Generator().manual_seed(int(taxonomy_id))
        chrom_tokens = torch.normal(0, 1, (n_chrom, self.config.token_dim), generator=gen)
        rows = first_row + np.arange(len(symbols), dtype=np.int64)
        codes = pd.Series(
            chrom["spec_chrom"].cat.codes.to_numpy(), index=chrom["gene_symbol"].str.upper()
        )
        vocab = _vocab(row.species, symbols, rows, codes, chrom["start"], first_row + len(symbols))
        return vocab, torch.cat([genes, chrom_tokens])

    def describe(self) -> dict:
        """What `uceindex models info` shows."""
        c = self.config
        return {
            "model_dir": str(self.files.root),
            "checkpoint": self.files.checkpoint.name,
            "sizes": published_sizes(c) or "custom",
            "name": self.name,
            "fingerprint": self.fingerprint,
            "layers": c.nlayers,
            "d_model": c.d_model,
            "nhead": c.nhead,
            "d_hid": c.d_hid,
            "token_dim": c.token_dim,
            "output_dim": c.output_dim,
            "token_rows": c.n_tokens,
            "species": {s: len(self.vocab(s)) for s in self.species},
        }


def _vocab(species, symbols, rows, codes: pd.Series, starts, chrom_offset: int) -> SpeciesVocab:
    """Keep the genes that have a chromosome and a start; the first row wins for duplicates."""
    starts = pd.Series(np.asarray(starts), index=codes.index)
    keep = ~codes.index.duplicated(keep="first")
    codes, starts = codes[keep], starts[keep]
    symbols = np.asarray(symbols, dtype=object)
    has = pd.Index(codes.index).get_indexer(symbols)
    ok = has >= 0
    return SpeciesVocab(
        name=species,
        symbols=symbols[ok],
        token_rows=np.asarray(rows)[ok].astype(np.int64),
        chrom_rows=chrom_offset + codes.to_numpy()[has[ok]].astype(np.int64),
        starts=starts.to_numpy()[has[ok]].astype(np.int64),
    )


def load_model(model_dir: str | os.PathLike | None = None) -> UCEModel:
    return UCEModel(model_dir)
