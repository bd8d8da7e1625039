"""Which genes the columns of a data set are, in the model's vocabulary, and the rules on
them: a data set needs MIN_MATCHED_SHARE of its genes in the vocabulary, a cell needs
MIN_GENES expressed vocabulary genes, and with the reference's gene filter a gene must be
detected in MIN_CELLS cells of the file.

The gene filter is a choice (GeneFilter): per cell (the default) a cell's embedding depends
on the cell alone; `reference` drops the genes detected in fewer than MIN_CELLS cells of the
whole file before any sentence is drawn, as the reference's `filter_genes(min_cells=10)`
does, so that embeddings match the official pipeline's (and CELLxGENE Census's).

Symbols are matched case-insensitively (the reference upper-cases them). CELLxGENE files
keep Ensembl ids in var_names and symbols in var["feature_name"], which is not unique
since schema 2.4.0: columns that resolve to the same symbol are summed, as if one gene.

pandas, scipy and the sampler are imported where they are used: the CLI reads the two
rules' defaults when it starts, and its --help should not wait for them.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np

from uceindex.errors import InputDataError
from uceindex.model.vocab import SpeciesVocab

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

    from uceindex.sentences import GeneOrder

SYMBOL_COLUMNS = (
    "feature_name",
    "gene_symbols",
    "gene_symbol",
    "gene_name",
    "gene_names",
    "symbol",
)
ENSEMBL_ID = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
MIN_MATCHED_SHARE = 0.10  # refuse a data set when fewer of its genes are in the vocabulary
MIN_GENES = 25  # a cell needs this many expressed vocabulary genes (reference: filter_cells)
MIN_CELLS = 10  # with the reference's gene filter, a gene needs this many cells (filter_genes)

REASON_NO_COUNTS = "no counts in genes the model knows"
REASON_FEW_GENES = "fewer than {n} expressed genes the model knows"


class GeneFilter(str, Enum):
    """Which genes a cell's sentence may draw: its own expressed ones (`per-cell`), or only
    those detected in MIN_CELLS cells of its file (`reference`, the official pipeline)."""

    PER_CELL = "per-cell"
    REFERENCE = "reference"


EXTERNAL = "external"  # the gene filter recorded for embeddings made outside uceindex


def gene_filter_of(value: str | GeneFilter) -> GeneFilter:
    """`value` as a GeneFilter, or one clear error naming the choices."""
    try:
        return GeneFilter(value)
    except ValueError:
        choices = ", ".join(f.value for f in GeneFilter)
        raise InputDataError(f"gene filter {value!r} is not one of {choices}") from None


def looks_like_ensembl(names) -> bool:
    sample = [str(n) for n in list(names)[:200]]
    return bool(sample) and sum(bool(ENSEMBL_ID.match(n)) for n in sample) > len(sample) / 2


def gene_symbols(var: pd.DataFrame) -> tuple[np.ndarray, str]:
    """The symbols of the columns and where they were found."""
    if not looks_like_ensembl(var.index):
        return np.asarray(var.index.astype(str)), "var_names"
    for column in SYMBOL_COLUMNS:
        if column in var.columns and not looks_like_ensembl(var[column]):
            return np.asarray(var[column].astype(str)), f"var[{column!r}]"
    raise InputDataError(
        f"var_names are Ensembl ids (e.g. {var.index[0]}) and no column holds gene symbols "
        f"(looked for {', '.join(SYMBOL_COLUMNS)}): add one, e.g. var['feature_name'], and try again"
    )


@dataclass(frozen=True)
class GeneMatch:
    """How input columns become the model's genes.

    `combiner` (input genes x matched genes, 0/1) selects, sums duplicate symbols and puts
    the genes in genomic order in one sparse product: counts @ combiner."""

    combiner: sp.csr_matrix
    genes: GeneOrder
    symbols: np.ndarray  # matched symbols, upper case, in combiner column order
    source: str
    n_input: int
    n_matched_columns: int  # input columns that found a gene
    unmatched: np.ndarray  # input symbols not in the vocabulary
    gene_filter: GeneFilter = GeneFilter.PER_CELL
    n_filtered_columns: int = 0  # matched columns the reference's gene filter dropped

    @property
    def share(self) -> float:
        return self.n_matched_columns / max(self.n_input, 1)

    def summary(self) -> dict:
        return {
            "genes_in_file": self.n_input,
            "genes_matched": self.n_matched_columns,
            "tokens": len(self.symbols),
            "share_matched": round(self.share, 4),
            "symbols_from": self.source,
            "gene_filter": self.gene_filter.value,
            **({"genes_filtered_out": self.n_filtered_columns} if self.filtered else {}),
        }

    @property
    def filtered(self) -> bool:
        return self.gene_filter is GeneFilter.REFERENCE

    @functools.cached_property
    def target(self) -> np.ndarray:
        """Per input column, its matched gene's column (-1: none); the combiner has one entry
        a row, since an input gene is one gene. Derived once, used for every chunk."""
        target = np.full(self.combiner.shape[0], -1, dtype=np.int64)
        rows = np.repeat(np.arange(self.combiner.shape[0]), np.diff(self.combiner.indptr))
        target[rows] = self.combiner.indices
        return target

    def apply(self, counts):
        """Counts over the input genes (sparse or dense) -> counts over the matched genes, in
        genomic order: canonical CSR, what the sampler takes (`counts @ combiner`, faster)."""
        from uceindex.sentences import gather_columns

        return gather_columns(counts, self.target, self.combiner.shape[1])


def match_genes(var: pd.DataFrame, vocab: SpeciesVocab) -> GeneMatch:
    import pandas as pd
    import scipy.sparse as sp

    from uceindex.sentences import GeneOrder

    symbols, source = gene_symbols(var)
    upper = np.char.upper(symbols.astype(str))
    position = pd.Index(vocab.symbols).get_indexer(upper)  # -1 when unknown
    found = np.flatnonzero(position >= 0)
    genes_used = np.unique(position[found])  # vocabulary entries, each once
    order = GeneOrder.genomic_order(
        vocab.token_rows[genes_used], vocab.chrom_rows[genes_used], vocab.starts[genes_used]
    )
    genes_used = genes_used[order]
    column_of = np.full(len(vocab), -1)
    column_of[genes_used] = np.arange(len(genes_used))
    combiner = sp.csr_matrix(
        (np.ones(len(found), np.float32), (found, column_of[position[found]])),
        shape=(len(symbols), len(genes_used)),
    )
    return GeneMatch(
        combiner=combiner,
        genes=GeneOrder(vocab.token_rows[genes_used], vocab.chrom_rows[genes_used]),
        symbols=vocab.symbols[genes_used],
        source=source,
        n_input=len(symbols),
        n_matched_columns=len(found),
        unmatched=symbols[position < 0],
    )


def detected_cells(chunks: Iterable) -> np.ndarray:
    """Per input column, in how many cells it has a count above zero, summed over row chunks
    (sparse or dense), so that a whole file is counted in flat memory."""
    import scipy.sparse as sp

    total = None
    for chunk in chunks:
        chunk = sp.csr_matrix(chunk)
        if not chunk.has_canonical_format:
            chunk = chunk.copy()
            chunk.sum_duplicates()
        counted = np.bincount(chunk.indices[chunk.data > 0], minlength=chunk.shape[1])
        total = counted if total is None else total + counted
    return np.zeros(0, dtype=np.int64) if total is None else total


def keep_detected(match: GeneMatch, detected: np.ndarray, min_cells: int = MIN_CELLS) -> GeneMatch:
    """`match` restricted to the input columns detected in at least `min_cells` cells: the
    reference's `filter_genes`, applied before the vocabulary match is summed, as the
    reference applies it before its vocabulary subset."""
    import scipy.sparse as sp

    from uceindex.sentences import GeneOrder

    keep = np.asarray(detected) >= min_cells
    matched = np.asarray(match.combiner.sum(axis=1)).ravel() > 0
    combiner = sp.csr_matrix(sp.diags(keep.astype(np.float32)) @ match.combiner)
    combiner.eliminate_zeros()
    used = np.asarray(combiner.sum(axis=0)).ravel() > 0
    return dataclasses.replace(
        match,
        combiner=sp.csr_matrix(combiner[:, used]),
        genes=GeneOrder(match.genes.token_rows[used], match.genes.chrom_rows[used]),
        symbols=match.symbols[used],
        gene_filter=GeneFilter.REFERENCE,
        n_filtered_columns=int((matched & ~keep).sum()),
    )


def require_enough(
    match: GeneMatch, species: str, min_share: float = MIN_MATCHED_SHARE, top_unmatched: str = ""
) -> None:
    """Refuse a data set whose genes mostly miss the vocabulary, naming what was seen."""
    if match.n_matched_columns and match.share >= min_share:
        return
    example = ", ".join(map(str, match.unmatched[:5]))
    hint = top_unmatched or example
    raise InputDataError(
        f"only {match.n_matched_columns} of {match.n_input} genes ({match.share:.0%}) from "
        f"{match.source} are {species} gene symbols the model knows (unmatched: {hint}); "
        f"check --species, or put gene symbols in var_names"
    )


def top_unmatched(matrix, match: GeneMatch, symbols: np.ndarray, n: int = 5) -> str:
    """The most expressed genes that found no token, for the error message."""
    import scipy.sparse as sp

    unmatched = np.flatnonzero(np.asarray(match.combiner.sum(axis=1)).ravel() == 0)
    if not len(unmatched):
        return ""
    sample = sp.csr_matrix(matrix[: min(matrix.shape[0], 2000)])
    totals = np.asarray(sample[:, unmatched].sum(axis=0)).ravel()
    best = unmatched[np.argsort(-totals)[:n]]
    return ", ".join(map(str, symbols[best]))


def qc_reasons(counts: sp.csr_matrix, min_genes: int) -> np.ndarray:
    """Per cell, why it cannot be embedded (object array, None when it can).

    Counts are over vocabulary genes only: the reference counts genes before that subset,
    so a cell whose genes are all unknown passes its filter and then crashes its sampler."""
    expressed = np.diff(counts.indptr) if counts.nnz else np.zeros(counts.shape[0], int)
    reasons = np.full(counts.shape[0], None, dtype=object)
    reasons[expressed < min_genes] = REASON_FEW_GENES.format(n=min_genes)
    reasons[expressed == 0] = REASON_NO_COUNTS
    return reasons
