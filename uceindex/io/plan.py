"""The counts of a file matched to a species' genes: what `embed` and `ingest` read, one way.

Ensembl-only var_names are mapped to symbols through GENCODE tables, the gene rules
(`MIN_MATCHED_SHARE`) refuse a file of another species, and the reference's gene filter
counts each gene's cells over the whole file, a chunk at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from uceindex.io.counts import CountsSource
from uceindex.io.ensembl import MAPPED_COLUMN, PACKAGE, add_symbols, needs_symbols
from uceindex.io.genes import (
    MIN_MATCHED_SHARE,
    GeneFilter,
    GeneMatch,
    detected_cells,
    keep_detected,
    match_genes,
    require_enough,
    top_unmatched,
)


@dataclass(frozen=True)
class CountsPlan:
    """A file's counts and their genes matched to a species: what `embed` and `ingest` read,
    one way (Ensembl ids mapped, the gene rules applied, the reference filter counted)."""

    source: CountsSource
    match: GeneMatch
    genes_from: str  # where the symbols came from, as the data set records it


def plan_counts(
    source: CountsSource,
    rows: Callable[[int, int], object],
    vocab,
    species: str,
    *,
    chunk_cells: int,
    min_share: float = MIN_MATCHED_SHARE,
    gene_filter: GeneFilter = GeneFilter.PER_CELL,
) -> CountsPlan:
    """Match `source`'s genes to `vocab` (Ensembl-only var_names through GENCODE tables first),
    refuse a file with too few of them, and with the reference's gene filter count each gene's
    cells over the file, reading `rows(start, stop)` a chunk at a time."""
    var, mapped = source.var, None
    if needs_symbols(var):  # Ensembl ids only: map them through GENCODE tables
        var, mapped = add_symbols(var, species), f"{MAPPED_COLUMN} from Ensembl ids ({PACKAGE})"
    match = match_genes(var, vocab)
    require_enough(
        match,
        species,
        min_share=min_share,
        top_unmatched=top_unmatched(source.matrix, match, var.index.to_numpy()),
    )
    if gene_filter is GeneFilter.REFERENCE:
        n = source.matrix.shape[0]
        chunks = (rows(s, min(s + chunk_cells, n)) for s in range(0, n, chunk_cells))
        match = keep_detected(match, detected_cells(chunks))
    return CountsPlan(source, match, mapped or match.source)
