"""AnnData / CSR chunks -> UCE cell embeddings.

A cell's embedding depends only on the model, the seed and the cell: sentences are seeded
per cell (sentences.py) and the fast path masks padding exactly (model/network.py), so
batch size, order, device batching and length buckets never change a result.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from uceindex.atomic import written_whole
from uceindex.errors import DeviceMemoryError, InputDataError
from uceindex.io.counts import check_chunk, find_counts
from uceindex.io.genes import (
    MIN_GENES,
    GeneFilter,
    GeneMatch,
    gene_filter_of,
    qc_reasons,
)
from uceindex.io.plan import plan_counts
from uceindex.model.load import UCEModel
from uceindex.model.network import UCE
from uceindex.model.numerics import DEFAULT_MODE, DEFAULT_PRECISION, PRECISIONS
from uceindex.pipeline import ahead, default_threads
from uceindex.sentences import sample_sentences

CHUNK_CELLS = 4096  # cells read and sampled at a time
TOKENS_PER_BATCH = {"cpu": 16 * 1100, "cuda": 512 * 1100}  # device batch cap, in sentence tokens
DEVICE_MEMORY_SHARE = 0.5  # of the free device memory a batch's activations may take
REFERENCE_BATCH = 25  # the reference's default batch size (eval_single_anndata.py)
PROJECT_BLOCK = 256  # token rows projected together: a row's projection never depends on history


Progress = Callable[[int, int], None]  # (cells done, cells in all)


@dataclass
class EmbedReport:
    """What happened to the cells of one call: how many embedded, rejected and why."""

    n_cells: int = 0
    n_embedded: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    genes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "cells": self.n_cells,
            "embedded": self.n_embedded,
            "rejected": sum(self.rejects.values()),
            "reject_reasons": dict(self.rejects),
            "genes": self.genes,
        }


@dataclass
class Sentences:
    """A chunk made ready for the model on a CPU thread: its cells' reject reasons, the rows
    that passed, and their sentences cut into device batches (host tensors, pinned for a GPU)."""

    n_cells: int
    reasons: np.ndarray  # (n_cells,) object, None where the cell is embedded
    ok: np.ndarray  # (n_ok,) rows of the chunk that are embedded
    batches: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]  # (rows of ok, tokens, lengths)
    token_rows: np.ndarray  # distinct token rows used (the projection cache fills these first)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _network_on(network: UCE, device: torch.device) -> UCE:
    """`network` itself when it already lives on `device`, else a copy there: the caller's
    network is never moved (a network shared by a notebook stays where it was)."""
    if all(t.device == device for t in network.state_dict().values()):
        return network
    with torch.device("meta"):
        copy = UCE(network.config)
    state = {k: v.to(device) for k, v in network.state_dict().items()}
    copy.load_state_dict(state, strict=True, assign=True)
    return copy.eval()


def batch_tokens(config, dtype: torch.dtype, free_bytes: int | None, cap: int) -> int:
    """Sentence tokens per device batch: the cap, or fewer when the activations of one layer
    (about 12 model widths per token, plus one row of attention scores per head should the
    backend materialise them) would pass DEVICE_MEMORY_SHARE of the free memory."""
    if free_bytes is None:
        return cap
    per_token = (12 * config.d_model + config.nhead * config.max_len) * dtype.itemsize
    return int(max(config.max_len, min(cap, DEVICE_MEMORY_SHARE * free_bytes // per_token)))


class Embedder:
    """A model on a device, ready to turn count chunks into embeddings.

    `prepare` (counts -> sentences in device batches) is CPU work that releases the GIL and may
    run on other threads, ahead of `embed_prepared` (the model); `embed_counts` does both.
    The model's own network is never moved: a copy is made on another device."""

    def __init__(
        self,
        model: UCEModel | UCE,
        *,
        device: str | None = None,
        precision: str = DEFAULT_PRECISION,
        mode: str = DEFAULT_MODE,
        tokens_per_batch: int | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        self.model = model
        self.device = torch.device(device or default_device())
        if precision == "auto":
            precision = "bfloat16" if self.device.type == "cuda" and mode == "fast" else "float32"
        self.dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        self.mode = mode
        self.network = _network_on(model if isinstance(model, UCE) else model.network, self.device)
        free = torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else None
        cap = TOKENS_PER_BATCH.get(self.device.type, TOKENS_PER_BATCH["cpu"])
        self.tokens_per_batch = tokens_per_batch or batch_tokens(
            self.network.config, self.dtype, free, cap
        )
        # Token rows after steps 1-2 of the forward pass, filled in fixed blocks as first used.
        self._projected: torch.Tensor | None = None
        self._filled: np.ndarray | None = None

    @property
    def precision(self) -> str:
        return "bfloat16" if self.dtype == torch.bfloat16 else "float32"

    def _project(self, rows: np.ndarray) -> torch.Tensor:
        """The projection cache, with `rows` filled. Rows are projected in aligned blocks of
        PROJECT_BLOCK, each block always whole, so a row's value is the same whichever rows
        were cached before it (a resumed ingest gives the same bits as an uninterrupted one)."""
        weight = self.network.pe_embedding.weight
        if self._projected is None:
            n, d = weight.shape[0], self.network.config.d_model  # n > n_tokens with new species
            self._projected = torch.zeros(n, d, device=self.device, dtype=self.dtype)
            self._filled = np.zeros(-(-n // PROJECT_BLOCK), dtype=bool)
        blocks = np.unique(rows // PROJECT_BLOCK)
        for b in blocks[~self._filled[blocks]]:
            block = torch.arange(
                b * PROJECT_BLOCK, min((b + 1) * PROJECT_BLOCK, weight.shape[0]), device=self.device
            )
            with self._autocast():
                self._projected[block] = self.network.embed_tokens(block).to(self.dtype)
            self._filled[b] = True
        return self._projected

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16
        )

    def _batches(self, tokens: np.ndarray, lengths: np.ndarray):
        """Device batches of sentences, as host tensors (pinned when the device is a GPU).

        Fast mode sorts sentences by length and fills each batch up to tokens_per_batch, so a
        batch carries little padding; reference mode batches them in order, REFERENCE_BATCH at
        a time, as the reference does (its float mask lets padding move an embedding)."""
        n = len(lengths)
        reference = self.mode == "reference"
        order = np.arange(n) if reference else np.argsort(lengths, kind="stable")
        pin = self.device.type == "cuda"
        out, start = [], 0
        while start < n:
            stop = min(n, start + REFERENCE_BATCH) if reference else start + 1
            if not reference:  # lengths ascend: the last sentence sets the batch width
                while stop < n and (stop - start + 1) * int(lengths[order[stop]]) <= (
                    self.tokens_per_batch
                ):
                    stop += 1
            idx = order[start:stop]
            width = int(lengths[idx].max())
            tok = torch.from_numpy(np.ascontiguousarray(tokens[idx, :width]))
            lens = torch.from_numpy(np.ascontiguousarray(lengths[idx]))
            out.append((idx, tok.pin_memory() if pin else tok, lens.pin_memory() if pin else lens))
            start = stop
        return out

    def prepare(
        self, counts: sp.csr_matrix, match: GeneMatch, *, seed: int = 0, min_genes: int = MIN_GENES
    ) -> Sentences:
        """Counts over the *input* genes -> the chunk's sentences in device batches (CPU only)."""
        counts = match.apply(counts)  # vocabulary genes, genomic order, canonical
        reasons = qc_reasons(counts, min_genes)
        ok = np.flatnonzero(reasons == None)  # noqa: E711 (object array)
        batches, rows = [], np.zeros(0, dtype=np.int64)
        if len(ok):
            kept = counts if len(ok) == counts.shape[0] else counts[ok]  # no copy when all pass
            tokens, lengths = sample_sentences(kept, match.genes, seed)
            batches = self._batches(tokens, lengths)
            rows = np.unique(tokens)
        return Sentences(counts.shape[0], reasons, ok, batches, rows)

    @torch.inference_mode()
    def embed_prepared(self, sentences: Sentences) -> tuple[np.ndarray, np.ndarray]:
        """The model over a prepared chunk -> (embeddings with NaN rows for rejects, reasons)."""
        dim = self.network.config.output_dim
        out = np.full((sentences.n_cells, dim), np.nan, dtype=np.float32)
        if len(sentences.ok):
            out[sentences.ok] = self._run(
                sentences.batches, len(sentences.ok), sentences.token_rows
            )
        return out, sentences.reasons

    def _run(self, batches, n: int, token_rows: np.ndarray) -> np.ndarray:
        projected = self._project(token_rows) if self.mode == "fast" else None
        results = []  # stays on the device until the chunk is done: no sync per batch
        queue = list(batches)
        while queue:
            idx, tok, lens = queue.pop(0)
            try:
                tok_d = tok.to(self.device, non_blocking=True)
                lens_d = lens.to(self.device, non_blocking=True)
                with self._autocast():
                    emb = self.network(tok_d, lens_d, mode=self.mode, projected=projected)
                results.append((idx, emb.float()))
            except torch.cuda.OutOfMemoryError:  # raised on any device type
                queue[:0] = self._halve(idx, tok, lens)
        out = np.empty((n, self.network.config.output_dim), dtype=np.float32)
        for idx, emb in results:
            out[idx] = emb.cpu().numpy()
        return out

    def _halve(self, idx, tok, lens):
        """After an out-of-memory error: the batch in two halves, and smaller batches from now
        on; one sentence that does not fit is an error the user can act on."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(idx) == 1:
            raise DeviceMemoryError(
                f"{self.device} ran out of memory embedding a single cell ({int(lens[0])} tokens, "
                f"{self.precision}): free the device (is another process using it?), use "
                "--precision bfloat16, or --device cpu"
            ) from None
        half = len(idx) // 2
        self.tokens_per_batch = max(1, self.tokens_per_batch // 2)
        return [(idx[:half], tok[:half], lens[:half]), (idx[half:], tok[half:], lens[half:])]

    def embed_sentences(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Sentences (n, L) and lengths (n,) -> embeddings (n, output_dim) float32, unit norm."""
        with torch.inference_mode():
            return self._run(self._batches(tokens, lengths), len(lengths), np.unique(tokens))

    def embed_counts(
        self, counts: sp.csr_matrix, match: GeneMatch, *, seed: int = 0, min_genes: int = MIN_GENES
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts over the *input* genes -> (embeddings with NaN rows for rejects, reasons)."""
        return self.embed_prepared(self.prepare(counts, match, seed=seed, min_genes=min_genes))


def _embed_chunks(rows, n, plan, embedder, *, seed, min_genes, threads, progress):
    """(start, embeddings, reasons) of each chunk of `rows(start, stop)`, in order; threads
    read and sample the next chunks while the model runs."""
    if progress:
        progress(0, n)

    def prepare(start: int) -> tuple[int, Sentences]:
        chunk = sp.csr_matrix(rows(start, min(start + CHUNK_CELLS, n)), dtype=np.float64)
        check_chunk(chunk, plan.source.name)
        return start, embedder.prepare(chunk, plan.match, seed=seed, min_genes=min_genes)

    threads = default_threads() if threads is None else threads
    for start, sentences in ahead(
        prepare, range(0, n, CHUNK_CELLS), threads=threads, depth=threads + 1
    ):
        emb, why = embedder.embed_prepared(sentences)
        yield start, emb, why
        if progress:
            progress(start + len(emb), n)


def _provenance(model, species, plan, embedder, reasons, *, seed, mode, gene_filter, min_genes):
    """uns["uce"]: the model, the settings and what happened to the cells; refuses a run in
    which no cell could be embedded."""
    n = len(reasons)
    report = EmbedReport(n_cells=n, genes=plan.match.summary())
    if plan.genes_from != plan.match.source:
        report.genes["symbols_from"] = plan.genes_from
    for reason in reasons[reasons != None]:  # noqa: E711
        report.rejects[reason] = report.rejects.get(reason, 0) + 1
    report.n_embedded = n - sum(report.rejects.values())
    if report.n_embedded == 0:
        raise InputDataError(
            f"none of the {n} cells could be embedded ({'; '.join(report.rejects)}): "
            f"check the counts and --min-genes ({min_genes})"
        )
    return {
        "model": model.name,
        "fingerprint": model.fingerprint,
        "vocabulary": model.vocabulary_fingerprint(species),
        "species": species,
        "seed": seed,
        "mode": mode,
        "gene_filter": gene_filter.value,
        "precision": embedder.precision,
        "counts_from": plan.source.name,
        **{k: v for k, v in report.as_dict().items() if k != "reject_reasons"},
        "reject_reasons": {k: int(v) for k, v in report.rejects.items()},
    }


def embed(
    adata,
    species: str,
    model_dir: str | os.PathLike | None = None,
    *,
    model: UCEModel | None = None,
    seed: int = 0,
    layer: str | None = None,
    min_genes: int = MIN_GENES,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    mode: str = DEFAULT_MODE,
    gene_filter: str | GeneFilter = GeneFilter.PER_CELL,
    threads: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Embed every cell of `adata` with UCE.

    Returns (n_cells, output_dim) float32, unit rows, in obs order, and writes it to
    `adata.obsm["X_uce"]`. A cell that cannot be embedded gets a NaN row and its reason in
    `adata.obs["uce_reject_reason"]`; `adata.uns["uce"]` records the model, seed and counts.
    `threads` threads (default `default_threads()`, 0 for none) read and sample the next
    chunks while the model runs; the result does not depend on it. `gene_filter="reference"`
    first drops the genes detected in fewer than 10 cells of `adata` (one extra pass over the
    counts), as the official pipeline does; the default keeps a cell's embedding its own.
    Genes are matched as `ingest` matches them (Ensembl ids included); `embed_file` does the
    same for a file, streamed.
    """
    gene_filter = gene_filter_of(gene_filter)
    model = model or UCEModel(model_dir)
    source = find_counts(adata, layer)

    def rows(start: int, stop: int):
        return source.matrix[start:stop]

    n = adata.n_obs
    out = np.full((n, model.config.output_dim), np.nan, dtype=np.float32)
    reasons, uns = _embed_rows(
        out,
        source,
        rows,
        n,
        model,
        species,
        Embedder(model, device=device, precision=precision, mode=mode),
        seed=seed,
        mode=mode,
        gene_filter=gene_filter,
        min_genes=min_genes,
        threads=threads,
        progress=progress,
    )
    adata.obsm["X_uce"] = out
    adata.obs["uce_reject_reason"] = pd.Categorical(reasons)  # NaN where the cell was embedded
    adata.uns["uce"] = uns
    return out


def embed_file(
    path: str | os.PathLike,
    output: str | os.PathLike,
    species: str,
    model_dir: str | os.PathLike | None = None,
    *,
    model: UCEModel | None = None,
    seed: int = 0,
    layer: str | None = None,
    min_genes: int = MIN_GENES,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    mode: str = DEFAULT_MODE,
    gene_filter: str | GeneFilter = GeneFilter.PER_CELL,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict:
    """`embed` for an .h5ad on disk, streamed as `ingest` reads it (memory flat in the cells):
    `output` is a copy of the file with obsm["X_uce"], obs["uce_reject_reason"] and
    uns["uce"] added (replaced when present), written whole. Returns uns["uce"]."""
    from uceindex.io.stream import H5AD

    gene_filter = gene_filter_of(gene_filter)
    model = model or UCEModel(model_dir)
    with H5AD(path) as h5:
        source = h5.find_counts(layer)
        n = h5.n_obs
        with written_whole(output) as scratch:
            shutil.copyfile(path, scratch)
            with h5py.File(scratch, "r+") as out:
                vectors = _new_array(out, "obsm", "X_uce", (n, model.config.output_dim))
                reasons, uns = _embed_rows(
                    vectors,
                    source,
                    source.matrix.rows,
                    n,
                    model,
                    species,
                    Embedder(model, device=device, precision=precision, mode=mode),
                    seed=seed,
                    mode=mode,
                    gene_filter=gene_filter,
                    min_genes=min_genes,
                    threads=threads,
                    progress=progress,
                )
                _write_obs_column(out, "uce_reject_reason", pd.Categorical(reasons))
                _replace(out, "uns", "uce", uns)
    return uns


def _embed_rows(
    target, source, rows, n, model, species, embedder, *, gene_filter, threads, progress, **how
):
    """The work `embed` and `embed_file` share: genes matched as `ingest` matches them, then
    every cell's embedding written into `target` (an array or an h5py dataset of n rows; a
    rejected cell's row stays NaN). Returns (reasons (n,), uns["uce"]); how: seed, mode,
    min_genes."""
    plan = plan_counts(
        source,
        rows,
        model.vocab(species),
        species,
        gene_filter=gene_filter,
        chunk_cells=CHUNK_CELLS,
    )
    reasons = np.full(n, None, dtype=object)
    steps = _embed_chunks(
        rows, n, plan, embedder, seed=how["seed"], min_genes=how["min_genes"], threads=threads,
        progress=progress,
    )  # fmt: skip
    for start, emb, why in steps:
        target[start : start + len(emb)] = emb
        reasons[start : start + len(emb)] = why
    return reasons, _provenance(
        model, species, plan, embedder, reasons, gene_filter=gene_filter, **how
    )


def _group(out, name: str):
    """The file's `name` group (obsm, uns), created as anndata encodes a dict when absent."""
    if name not in out:
        anndata.io.write_elem(out, name, {})
    return out[name]


def _replace(out, group: str, key: str, value) -> None:
    node = _group(out, group)
    if key in node:
        del node[key]
    anndata.io.write_elem(node, key, value)


def _new_array(out, group: str, key: str, shape: tuple[int, int]):
    """An empty float32 array (NaN) encoded as anndata's, to fill a chunk at a time."""
    node = _group(out, group)
    if key in node:
        del node[key]
    array = node.create_dataset(key, shape=shape, dtype="float32", fillvalue=np.nan)
    array.attrs["encoding-type"], array.attrs["encoding-version"] = "array", "0.2.0"
    return array


def _write_obs_column(out, name: str, values) -> None:
    """obs[name] replaced or appended, its place in obs' column order kept."""
    _replace(out, "obs", name, values)
    order = [
        c.decode() if isinstance(c, bytes) else str(c) for c in out["obs"].attrs["column-order"]
    ]
    if name not in order:
        out["obs"].attrs["column-order"] = np.array(order + [name], dtype=object)
