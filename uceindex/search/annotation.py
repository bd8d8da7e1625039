"""Annotate query cells from a store: k-NN label vote and novelty, and the summary of the result.

Each query cell (`query.query_vectors`) is searched against the labelled cells of the store
(optionally narrowed by a SQL `where`), all queries in batched searches (`neighbours.knn`);
`vote.weighted_vote` turns the neighbours into a label, its confidence and the runner-up,
and `novelty` flags the cells farther from the reference than its own cells are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from uceindex.errors import QueryError
from uceindex.io.genes import GeneFilter
from uceindex.search.index import cells_table, describe_index, search_params
from uceindex.search.neighbours import both, count_cells, knn
from uceindex.search.novelty import novelty_threshold_for
from uceindex.search.query import LABEL, Progress, check_label, query_vectors
from uceindex.search.vote import is_novel, weighted_vote
from uceindex.store.store import Store, sql_name
from uceindex.vectors import usable_rows

K = 50  # default neighbours per query cell
NEIGHBOUR_SEP = ";"  # joins neighbour ids in the `neighbours` column


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
    frame.attrs has label, k, where, novelty_threshold, the search settings and `warnings`
    (one line each: e.g. query cells embedded with another gene filter than the store's).
    """
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
        found = knn(
            cells, vectors[ok], k, where=reference, columns=[label], params=params, progress=step
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
            warnings=warnings,
        )
        return frame


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
    return {
        **frame.attrs,
        "cells": len(frame),
        "not_searched": int((~searched).sum()),
        "novel": int(novel.sum()) if has_novelty else None,
        "labels": labels,
    }
