"""AnnData / CSR chunks -> UCE cell embeddings.

A cell's embedding depends only on the model, the seed and the cell: sentences are seeded
per cell (sentences.py) and the fast path masks padding exactly (model/network.py), so
batch size, order, device batching and length buckets never change a result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from uceindex.errors import InputDataError
from uceindex.io.counts import check_chunk, find_counts
from uceindex.io.genes import (
    MIN_GENES,
    GeneMatch,
    match_genes,
    qc_reasons,
    require_enough,
    top_unmatched,
)
from uceindex.model.load import UCEModel
from uceindex.sentences import sample_sentences

CHUNK_CELLS = 4096  # cells read and sampled at a time
TOKENS_PER_BATCH = {"cpu": 16 * 1100, "cuda": 256 * 1100}  # device batch, in sentence tokens
PRECISIONS = ("auto", "float32", "bfloat16")
REFERENCE_BATCH = 25  # the reference's default batch size (eval_single_anndata.py)

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


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """A model on a device, ready to turn count chunks into embeddings."""

    def __init__(
        self,
        model: UCEModel,
        *,
        device: str | None = None,
        precision: str = "auto",
        mode: str = "fast",
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
        self.tokens_per_batch = tokens_per_batch or TOKENS_PER_BATCH.get(
            self.device.type, TOKENS_PER_BATCH["cpu"]
        )
        self.network = model.network.to(self.device)
        # Token rows after steps 1-2 of the forward pass, filled as rows are first used.
        self._projected: torch.Tensor | None = None
        self._filled: torch.Tensor | None = None

    @property
    def precision(self) -> str:
        return "bfloat16" if self.dtype == torch.bfloat16 else "float32"

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._projected is None:
            n = self.network.pe_embedding.weight.shape[0]  # more than n_tokens with added species
            d = self.network.config.d_model
            self._projected = torch.zeros(n, d, device=self.device, dtype=self.dtype)
            self._filled = torch.zeros(n, dtype=torch.bool, device=self.device)
        rows = torch.unique(tokens)
        missing = rows[~self._filled[rows]]
        if len(missing):
            with self._autocast():
                self._projected[missing] = self.network.embed_tokens(missing).to(self.dtype)
            self._filled[missing] = True
        return self._projected

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16
        )

    @torch.inference_mode()
    def embed_sentences(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Sentences (n, L) and lengths (n,) -> embeddings (n, output_dim) float32, unit norm.

        Fast mode buckets sentences by length so that a device batch carries little padding;
        reference mode batches them in order, REFERENCE_BATCH at a time, as the reference
        does (its float mask lets padding move an embedding)."""
        n = len(lengths)
        out = np.empty((n, self.network.config.output_dim), dtype=np.float32)
        reference = self.mode == "reference"
        order = np.arange(n) if reference else np.argsort(lengths, kind="stable")
        start = 0
        while start < n:
            per_batch = (
                REFERENCE_BATCH
                if reference
                else max(1, self.tokens_per_batch // int(lengths[order[start]]))
            )
            idx = order[start : start + per_batch]
            width = int(lengths[idx].max())
            tok = torch.from_numpy(tokens[idx, :width]).to(self.device)
            lens = torch.from_numpy(lengths[idx]).to(self.device)
            projected = self._project(tok) if self.mode == "fast" else None
            with self._autocast():
                emb = self.network(tok, lens, mode=self.mode, projected=projected)
            out[idx] = emb.float().cpu().numpy()
            start += per_batch
        return out

    def embed_counts(
        self, counts: sp.csr_matrix, match: GeneMatch, *, seed: int = 0, min_genes: int = MIN_GENES
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts over the *input* genes -> (embeddings with NaN rows for rejects, reasons)."""
        counts = sp.csr_matrix(counts @ match.combiner)  # vocabulary genes, genomic order
        counts.eliminate_zeros()
        counts.sort_indices()  # in place: the sampler would copy an unsorted chunk
        reasons = qc_reasons(counts, min_genes)
        out = np.full((counts.shape[0], self.network.config.output_dim), np.nan, dtype=np.float32)
        ok = np.flatnonzero(reasons == None)  # noqa: E711 (object array)
        if len(ok):
            kept = counts if len(ok) == counts.shape[0] else counts[ok]  # no copy when all pass
            tokens, lengths = sample_sentences(kept, match.genes, seed)
            out[ok] = self.embed_sentences(tokens, lengths)
        return out, reasons


def _chunks(matrix, chunk_cells: int):
    for start in range(0, matrix.shape[0], chunk_cells):
        block = matrix[start : start + chunk_cells]
        yield start, sp.csr_matrix(block, dtype=np.float64)


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
    precision: str = "auto",
    mode: str = "fast",
    progress: Progress | None = None,
) -> np.ndarray:
    """Embed every cell of `adata` with UCE.

    Returns (n_cells, output_dim) float32, unit rows, in obs order, and writes it to
    `adata.obsm["X_uce"]`. A cell that cannot be embedded gets a NaN row and its reason in
    `adata.obs["uce_reject_reason"]`; `adata.uns["uce"]` records the model, seed and counts.
    """
    model = model or UCEModel(model_dir)
    vocab = model.vocab(species)
    source = find_counts(adata, layer)
    match = match_genes(source.var, vocab)
    require_enough(
        match,
        species,
        top_unmatched=top_unmatched(source.matrix, match, source.var.index.to_numpy()),
    )
    embedder = Embedder(model, device=device, precision=precision, mode=mode)
    n = adata.n_obs
    out = np.full((n, model.config.output_dim), np.nan, dtype=np.float32)
    reasons = np.full(n, None, dtype=object)
    if progress:
        progress(0, n)
    for start, chunk in _chunks(source.matrix, CHUNK_CELLS):
        check_chunk(chunk, source.name)
        emb, why = embedder.embed_counts(chunk, match, seed=seed, min_genes=min_genes)
        out[start : start + len(emb)] = emb
        reasons[start : start + len(emb)] = why
        if progress:
            progress(start + len(emb), n)
    report = EmbedReport(n_cells=n, genes=match.summary())
    for reason in reasons[reasons != None]:  # noqa: E711
        report.rejects[reason] = report.rejects.get(reason, 0) + 1
    report.n_embedded = n - sum(report.rejects.values())
    if report.n_embedded == 0:
        raise InputDataError(
            f"none of the {n} cells could be embedded ({'; '.join(report.rejects)}): "
            f"check the counts and --min-genes ({min_genes})"
        )
    adata.obsm["X_uce"] = out
    adata.obs["uce_reject_reason"] = pd.Categorical(reasons)  # NaN where the cell was embedded
    adata.uns["uce"] = {
        "model": model.name,
        "fingerprint": model.fingerprint,
        "species": species,
        "seed": seed,
        "mode": mode,
        "precision": embedder.precision,
        "counts_from": source.name,
        **{k: v for k, v in report.as_dict().items() if k != "reject_reasons"},
        "reject_reasons": {k: int(v) for k, v in report.rejects.items()},
    }
    return out
