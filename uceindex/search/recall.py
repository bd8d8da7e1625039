"""Recall of the searches a store runs now, measured against exact search on a sample.

Its own module since it needs both the index rules (`index.py`) and the search that runs
them (`neighbours.py`), which itself builds on the index rules.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from uceindex.errors import QueryError
from uceindex.search.annotation import K
from uceindex.search.index import SearchParams, cells_table, describe_index, search_params
from uceindex.search.neighbours import knn, sample_cells
from uceindex.store.store import Store

RECALL_SAMPLE = 200  # stored cells searched as queries


@dataclass
class RecallReport:
    """Recall@k of the searches the store runs now, against exact search, on a sample."""

    k: int
    sample: int
    recall_mean: float
    recall_min: float
    recall_p05: float
    params: SearchParams
    index_ms_per_query: float
    exact_ms_per_query: float

    def as_dict(self) -> dict:
        d = asdict(self)
        d["params"] = self.params.as_dict()
        for key in ("recall_mean", "recall_min", "recall_p05"):
            d[key] = round(d[key], 4)
        for key in ("index_ms_per_query", "exact_ms_per_query"):
            d[key] = round(d[key], 3)
        return d


def index_stats(
    store: Store | str | None,
    *,
    k: int = K,
    sample: int = RECALL_SAMPLE,
    seed: int = 0,
    storage_options: dict | None = None,
    **overrides,
) -> RecallReport:
    """Measure recall@k: `sample` stored cells (seeded) are searched through the index as
    queries run (`search_params`, with `overrides` such as nprobes=) and exactly, for k + 1
    neighbours of which the cell itself is dropped (it would be a free hit); recall of a
    cell = share of its exact k neighbours that the index search returned. Both searches
    are batched; the timings are per query inside the batch. With no index, recall is 1.
    store: a Store or a URI (storage_options as `Store.open` takes them)."""
    with Store.using(store, storage_options=storage_options) as st:
        table = cells_table(st)
        state = describe_index(table)
        if k >= state.n_rows:
            raise QueryError(
                f"k = {k} but the store holds only {state.n_rows} cells, the sampled one "
                "included: lower k"
            )
        ids, vectors = sample_cells(table, sample, seed=seed)
        params = search_params(state, k, **overrides)
        started = time.perf_counter()
        found = knn(table, vectors, k + 1, params=params)
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        truth = knn(table, vectors, k + 1, params=SearchParams("flat"))
        exact_s = time.perf_counter() - started

    def others(result, i: int) -> list:
        return [c for c in result.cell_id[i][result.valid[i]] if c != ids[i]][:k]

    recall = np.array(
        [len(set(others(found, i)) & set(others(truth, i))) / k for i in range(len(ids))]
    )
    return RecallReport(
        k=k,
        sample=len(ids),
        recall_mean=float(recall.mean()),
        recall_min=float(recall.min()),
        recall_p05=float(np.quantile(recall, 0.05)),
        params=params,
        index_ms_per_query=1000 * index_s / len(ids),
        exact_ms_per_query=1000 * exact_s / len(ids),
    )
