"""Cross-species matching over a store: query cells of one species against another's labels.

Each query cell is annotated against the stored cells of the reference species only
(`annotate` with where "species = against"); `matching` then tabulates the query's own
labels against those predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uceindex.atomic import written_whole
from uceindex.errors import QueryError
from uceindex.io.genes import GeneFilter
from uceindex.search.annotation import K, annotate
from uceindex.search.index import cells_table
from uceindex.search.matching import best_matches, match_matrix, match_table, plot_match
from uceindex.search.neighbours import both, count_cells
from uceindex.search.ontology_vote import MIN_SCORE
from uceindex.search.query import LABEL, Progress
from uceindex.store.store import Store, sql_string


@dataclass
class MatchResult:
    """Per query cell predictions (`cells`, with the query's own label in `query_label`),
    the long matching table and the query x reference matrix of shares."""

    cells: pd.DataFrame
    table: pd.DataFrame
    matrix: pd.DataFrame
    species: str
    against: str

    def best(self) -> pd.DataFrame:
        """Each query label's best reference label, with the query label's cells
        (matching.best_matches)."""
        return best_matches(self.table)

    def write_table(self, path) -> Path:
        """The matching table as CSV, written whole."""
        path = Path(path)
        with written_whole(path) as scratch:
            self.table.to_csv(scratch, index=False)
        return path

    def plot(self, path) -> Path:
        """The matrix as a heatmap PNG (matching.plot_match)."""
        return plot_match(
            self.matrix,
            path,
            title=f"{self.species} cells vs {self.against} reference: share of each "
            f"{self.species} label's cells per predicted {self.against} label",
            xlabel=f"{self.against} reference label",
            ylabel=f"{self.species} query label",
        )


def store_species(store: Store) -> list[str]:
    """The species of the store's data sets."""
    frame = store.datasets()
    return sorted({str(s) for s in frame["species"].dropna()}) if len(frame) else []


def match(
    store: Store | str | None,
    query,
    *,
    species: str,
    against: str,
    label: str = LABEL,
    query_label: str | None = None,
    k: int = K,
    where: str | None = None,
    embedding_key: str | None = None,
    model_dir=None,
    model=None,
    exact: bool = False,
    nprobes: int | None = None,
    device: str | None = None,
    gene_filter: str | GeneFilter = GeneFilter.PER_CELL,
    progress: Progress | None = None,
    storage_options: dict | None = None,
    ontology_level: list[str] | None = None,
    min_score: float = MIN_SCORE,
) -> MatchResult:
    """Match query cells of `species` (an AnnData) against the stored cells of species
    `against`: each query cell gets the best `label` of its k most similar reference cells
    (`annotate` with where "species = against"), then `matching.match_table` /
    `match_matrix` tabulate the query's own labels (obs[query_label], default `label`)
    against them, with each query label's share of novel cells. store: a Store or a URI
    (storage_options as `Store.open` takes them). `cells.attrs["warnings"]` has annotate's
    warnings.

    ontology_level: match at these Cell Ontology terms (ids or labels, e.g. "myeloid cell",
    "lymphocyte") instead of the reference's labels: each query cell's reference label is
    the level term its neighbours' CL terms score highest (at least min_score), by label."""
    query_label = query_label or label
    if query_label not in query.obs:
        raise QueryError(
            f"the query has no obs column {query_label!r} to match (--query-label); "
            f"it has: {', '.join(map(str, query.obs.columns)) or 'none'}"
        )
    with Store.using(store, storage_options=storage_options) as st:
        cells = cells_table(st)
        if not count_cells(cells, f"species = {sql_string(against)}"):
            have = ", ".join(store_species(st)) or "none"
            raise QueryError(f"the store has no {against} cells to match against (it has: {have})")
        frame = annotate(
            st,
            query,
            label=label,
            k=k,
            where=both(f"species = {sql_string(against)}", where),
            species=species,
            embedding_key=embedding_key,
            model_dir=model_dir,
            model=model,
            exact=exact,
            nprobes=nprobes,
            device=device,
            gene_filter=gene_filter,
            progress=progress,
            ontology_level=ontology_level,
            min_score=min_score,
        )
    own = query.obs[query_label].astype(object)
    own = np.asarray(own.where(own.notna(), None), dtype=object)
    frame.insert(0, "query_label", own)
    predicted = frame["predicted_term_label" if ontology_level else "predicted"].to_numpy()
    table = match_table(own, predicted, frame["mean_similarity"].to_numpy(), frame["novel"].array)
    return MatchResult(frame, table, match_matrix(table), species, against)
