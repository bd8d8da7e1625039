"""Annotate query cells from a store: k-NN label vote and novelty, and the summary of the result.

Each query cell (`query.query_vectors`) is searched against the labelled cells of the store
(optionally narrowed by a SQL `where`), all queries in batched searches (`neighbours.knn`);
`vote.weighted_vote` turns the neighbours into a label, its confidence and the runner-up,
and `novelty` flags the cells farther from the reference than its own cells are. With
`ontology`, `ontology_vote` also calls a Cell Ontology term from the neighbours' terms.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from uceindex.errors import QueryError
from uceindex.io.genes import GeneFilter
from uceindex.ontology import TERM, cell_ontology
from uceindex.search.index import cells_table, describe_index, search_params
from uceindex.search.neighbours import both, count_cells, knn
from uceindex.search.novelty import novelty_threshold_for
from uceindex.search.ontology_vote import MIN_SCORE, ontology_vote
from uceindex.search.query import LABEL, Progress, check_label, query_vectors
from uceindex.search.vote import is_novel, weighted_vote
from uceindex.store.store import Store, sql_name
from uceindex.vectors import usable_rows

K = 50  # default neighbours per query cell
NEIGHBOUR_SEP = ";"  # joins neighbour ids in the `neighbours` column, the terms of `term_path`
TERM_OUTPUTS = ("predicted_term_id", "predicted_term_label", "term_score", "term_path")


def annotate(
    store: Store | str | None,
    query,
    *,
    label: str = LABEL,
    k: int = K,
    where: str | None = None,
    species: str | None = None,
    embedding_key: str | None = None,
    model_dir=None,
    model=None,
    neighbour_ids: bool = False,
    novelty: bool = True,
    exact: bool = False,
    nprobes: int | None = None,
    device: str | None = None,
    gene_filter: str | GeneFilter = GeneFilter.PER_CELL,
    progress: Progress | None = None,
    storage_options: dict | None = None,
    ontology: bool = False,
    min_score: float = MIN_SCORE,
    ontology_level: list[str] | None = None,
) -> pd.DataFrame:
    """Predict `label` for each query cell from its k most similar labelled stored cells.

    store: a Store or a URI (storage_options as `Store.open` takes them). query: AnnData
    (embedded with the store's model unless embedding_key names an obsm entry) or an (n, D)
    array. where: SQL over `cells` columns narrowing the reference (e.g. "tissue = 'lung'");
    cells without a label never vote.
    exact / nprobes: force exact search or the partitions an IVF search probes.
    gene_filter: how an AnnData query is embedded (io/genes.py GeneFilter).

    Returns one row per query cell (index: obs names): predicted, confidence (its
    similarity-weighted vote share), runner_up, runner_up_share, mean_similarity,
    n_neighbours, novel (nullable bool), and with neighbour_ids a `neighbours` column of
    ';'-joined cell ids. Cells that could not be embedded get no prediction (novel NA).
    frame.attrs has label, k, where, novelty_threshold, the search settings, `as_of` (the
    version read, for a store opened as of one) and `warnings`
    (one line each: e.g. query cells embedded with another gene filter than the store's).

    ontology: also call a Cell Ontology term from the neighbours' `cell_type_ontology_term_id`
    (search/ontology_vote.py): columns predicted_term_id, predicted_term_label, term_score,
    term_path (the coarser passing terms, ';'-joined) and cell_ontology (the CL version).
    ontology_level: CL ids or labels; the call is then the level term with the highest score
    (at least min_score), e.g. ["myeloid cell", "lymphocyte"] (implies ontology).
    """
    levels = _levels(ontology_level) if ontology_level else None
    ontology = ontology or levels is not None
    with Store.using(store, storage_options=storage_options) as st:
        cells = cells_table(st)
        check_label(st, label)
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        # k and the filter are checked on the store first: embedding the query takes minutes
        reference = both(where, _labelled(cells, label))
        n_ref = count_cells(cells, reference)
        if n_ref == 0:
            raise QueryError(
                f"no stored cell has a {label!r} label"
                + (f" where {where}" if where else "")
                + ": check --label and --where"
            )
        if k > n_ref:
            raise QueryError(
                f"k = {k} but the reference holds only {n_ref} labelled cells"
                + (f" where {where}" if where else "")
                + f": lower --k to {n_ref} or less"
            )
        if ontology:
            _check_terms(st, reference, where)
        vectors, names, warnings = query_vectors(
            st,
            query,
            species=species,
            embedding_key=embedding_key,
            model_dir=model_dir,
            model=model,
            device=device,
            gene_filter=gene_filter,
            progress=progress,
        )
        params = search_params(
            describe_index(cells),
            k,
            n_reference=n_ref if reference else None,
            exact=exact,
            nprobes=nprobes,
        )
        ok = usable_rows(vectors)
        step = (lambda done, total: progress(done, total, "searching")) if progress else None
        columns = [label, TERM] if ontology and label != TERM else [label]
        found = knn(
            cells, vectors[ok], k, where=reference, columns=columns, params=params, progress=step
        )
        vote = weighted_vote(found.columns[label], found.similarity, found.valid)
        frame = _frame(names, ok, vote)
        threshold = None
        if novelty:
            threshold = novelty_threshold_for(st, k=k, reference=reference, params=params)
            novel = pd.array(np.full(len(names), pd.NA), dtype="boolean")
            novel[ok] = is_novel(vote.mean_similarity, threshold)
            frame["novel"] = novel
        else:
            frame = frame.drop(columns="novel")
        if ontology:
            _add_terms(frame, ok, found, min_score, levels)
        if neighbour_ids:
            joined = np.full(len(names), None, dtype=object)
            joined[ok] = [NEIGHBOUR_SEP.join(r[r != None]) for r in found.cell_id]  # noqa: E711
            frame["neighbours"] = joined
        frame.attrs.update(
            label=label,
            k=k,
            where=where,
            reference_cells=n_ref,
            novelty_threshold=threshold,
            search=params.as_dict(),
            store=st.uri,
            as_of=st.as_of.label if st.as_of is not None else None,  # the version read
            warnings=warnings,
        )
        if ontology:
            frame.attrs.update(cell_ontology=cell_ontology().version, min_score=min_score)
            if levels:
                frame.attrs["ontology_level"] = ";".join(levels)
        return frame


def _check_terms(store: Store, reference: str | None, where: str | None) -> None:
    """--ontology needs reference cells with a CL term: one line saying how to get them."""
    mapped = both(reference, f"{TERM} IS NOT NULL")
    if TERM not in store.obs_columns() or not count_cells(cells_table(store), mapped):
        raise QueryError(
            "no stored cell"
            + (f" where {where}" if where else "")
            + " has a Cell Ontology term, so --ontology has nothing to vote with: "
            "see `uceindex labels` and re-ingest with --label-map labels.csv (label,term_id)"
        )


def _levels(names: list[str]) -> list[str]:
    """--ontology-level values (CL ids or current labels) as CL ids, each checked."""
    o = cell_ontology()
    out = []
    for name in names:
        term = o.resolve(name)
        if term is None:
            raise QueryError(
                f"ontology level {name!r} is not a current Cell Ontology id or label "
                "(e.g. CL:0000763 or 'myeloid cell')"
            )
        out.append(term)
    return out


def _add_terms(frame: pd.DataFrame, ok: np.ndarray, found, min_score: float, levels) -> None:
    """The ontology call of the searched rows as the TERM_OUTPUTS columns of `frame`."""
    o = cell_ontology()
    vote = ontology_vote(
        found.columns[TERM], found.similarity, o.ancestors, found.valid, min_score, levels
    )
    n = len(frame)
    term, label = np.full(n, None, dtype=object), np.full(n, None, dtype=object)
    score, path = np.full(n, np.nan), np.full(n, None, dtype=object)
    term[ok], score[ok] = vote.term, vote.score
    label[ok] = [o.label(t) if t else None for t in vote.term]
    path[ok] = [NEIGHBOUR_SEP.join(p) if t and p else None for t, p in zip(vote.term, vote.path)]
    for name, values in zip(TERM_OUTPUTS, (term, label, score, path)):
        frame[name] = values
    frame["cell_ontology"] = o.version


def _labelled(table, label: str) -> str | None:
    """The filter that keeps unlabelled cells out of the vote; None when every cell has a
    label (a filter costs: Lance must apply it to every search)."""
    missing = f"{sql_name(label)} IS NULL"
    return f"{sql_name(label)} IS NOT NULL" if count_cells(table, missing) else None


def _frame(names: pd.Index, ok: np.ndarray, vote) -> pd.DataFrame:
    """The vote of the searchable rows spread over all query cells (others empty)."""
    n = len(names)
    out = {}
    for col, empty, dtype in (
        ("predicted", None, object),
        ("confidence", np.nan, np.float64),
        ("runner_up", None, object),
        ("runner_up_share", np.nan, np.float64),
        ("mean_similarity", np.nan, np.float64),
        ("n_neighbours", 0, np.int64),
    ):
        values = np.full(n, empty, dtype=dtype)
        field = "label" if col == "predicted" else col
        values[ok] = getattr(vote, field)
        out[col] = values
    frame = pd.DataFrame(out, index=names)
    frame["novel"] = pd.array(np.full(n, pd.NA), dtype="boolean")
    return frame


def summarise(frame: pd.DataFrame) -> dict:
    """What an `annotate` result comes to: its settings (frame.attrs), `cells`, the cells
    `not_searched` (not embedded, no prediction), the `novel` cells, and per predicted
    label (most cells first) its `cells`, `mean_confidence` and `novel` cells. Without a
    novel column (novelty off) the novel counts are None."""
    searched = frame["predicted"].notna()
    has_novelty = "novel" in frame.columns
    novel = frame["novel"].fillna(False).astype(bool) if has_novelty else searched & False
    groups = (
        frame[searched]
        .assign(novel=novel[searched])
        .groupby("predicted", sort=False)
        .agg(
            cells=("confidence", "size"),
            mean_confidence=("confidence", "mean"),
            novel=("novel", "sum"),
        )
        .sort_values("cells", ascending=False)
        .reset_index()
    )
    labels = [
        {k: (int(v) if k in ("cells", "novel") else v) for k, v in row.items()}
        for row in groups.to_dict("records")
    ]
    if not has_novelty:
        labels = [{**row, "novel": None} for row in labels]
    out = {
        **frame.attrs,
        "cells": len(frame),
        "not_searched": int((~searched).sum()),
        "novel": int(novel.sum()) if has_novelty else None,
        "labels": labels,
    }
    if "predicted_term_id" in frame.columns:
        out["terms"] = _term_summary(frame)
    return out


def _term_summary(frame: pd.DataFrame) -> list[dict]:
    """Per called CL term (most cells first; None: no term reached min_score) its label,
    cells and mean score."""
    called = frame[frame["predicted"].notna()].astype({"predicted_term_id": object})
    groups = (
        called.fillna({"predicted_term_id": "", "predicted_term_label": ""})
        .groupby(["predicted_term_id", "predicted_term_label"], sort=False)
        .agg(cells=("term_score", "size"), mean_score=("term_score", "mean"))
        .sort_values("cells", ascending=False)
        .reset_index()
    )
    return [
        {
            "term_id": r.predicted_term_id or None,
            "term_label": r.predicted_term_label or None,
            "cells": int(r.cells),
            "mean_score": None if pd.isna(r.mean_score) else float(r.mean_score),
        }
        for r in groups.itertuples(index=False)
    ]
