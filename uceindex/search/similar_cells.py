"""The stored cells most similar to one stored cell, itself left out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from uceindex.errors import QueryError
from uceindex.search.index import cells_table, describe_index, search_params
from uceindex.search.neighbours import both, cell_vector, count_cells, knn
from uceindex.store.store import Store, sql_string

SIMILAR_K = 20
SIMILAR_COLUMNS = ("dataset_id", "species", "cell_type", "tissue")  # shown when present


def similar(
    store: Store | str | None,
    cell_id: str,
    k: int = SIMILAR_K,
    *,
    where: str | None = None,
    columns: list[str] | None = None,
    exact: bool = False,
    nprobes: int | None = None,
    storage_options: dict | None = None,
) -> pd.DataFrame:
    """The k stored cells most similar to the stored cell `cell_id` (itself left out), best
    first: rank, cell_id, similarity and `columns` (default: those of SIMILAR_COLUMNS the
    store has). store: a Store or a URI (storage_options as `Store.open` takes them). where
    narrows the cells searched."""
    with Store.using(store, storage_options=storage_options) as st:
        cells = cells_table(st)
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        vector = cell_vector(cells, cell_id)
        names = cells.schema.names
        columns = list(columns) if columns else [c for c in SIMILAR_COLUMNS if c in names]
        n_where = count_cells(cells, where)
        others = n_where - count_cells(cells, both(where, f"cell_id = {sql_string(cell_id)}"))
        if k > others:
            raise QueryError(
                f"k = {k} but only {others} other cells"
                + (f" match {where}" if where else " are in the store")
                + f": lower --k to {others} or less"
            )
        params = search_params(
            describe_index(cells),
            k + 1,
            n_reference=n_where if where else None,
            exact=exact,
            nprobes=nprobes,
        )
        found = knn(cells, vector, k + 1, where=where, columns=columns, params=params)
        keep = found.valid[0] & (found.cell_id[0] != cell_id)
        idx = np.flatnonzero(keep)[:k]
        frame = pd.DataFrame(
            {
                "rank": np.arange(1, len(idx) + 1),
                "cell_id": found.cell_id[0][idx],
                "similarity": found.similarity[0][idx],
                **{c: found.columns[c][0][idx] for c in columns},
            }
        )
        frame.attrs.update(cell_id=cell_id, k=k, where=where, search=params.as_dict())
        return frame
