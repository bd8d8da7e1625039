"""A 2-D map of query cells among a seeded sample of the reference: UMAP of the embeddings.

Where do my cells fall in the atlas? The query vectors and up to `reference` stored cells
(drawn with `neighbours.sample_rows`, so the same seed maps the same cells) are laid out
together by umap-learn with the cosine metric, the metric the store searches with. Both
sides are bounded (MAP_REFERENCE, MAP_QUERY) so a map takes seconds, not hours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from uceindex.errors import QueryError
from uceindex.search.index import cells_table
from uceindex.search.neighbours import ID, embeddings_of, sample_rows
from uceindex.search.query import LABEL, check_label
from uceindex.store.store import Store
from uceindex.vectors import usable_rows

MAP_REFERENCE = 2000  # stored cells drawn for the map
MAP_QUERY = 5000  # query cells mapped at most (a seeded sample beyond)
MAP_NEIGHBOURS = 15  # UMAP's n_neighbors: local structure of about a cluster's size
MIN_MAP_CELLS = 5  # fewer cannot be laid out by UMAP's graph


def cell_map(
    store: Store | str | None,
    vectors: np.ndarray,
    names,
    *,
    label: str = LABEL,
    where: str | None = None,
    reference: int = MAP_REFERENCE,
    max_query: int = MAP_QUERY,
    seed: int = 0,
    storage_options: dict | None = None,
) -> pd.DataFrame:
    """2-D coordinates of query cells (`vectors` (n, D) in the store's space, one per
    `names`) among up to `reference` stored cells matching `where` (seeded sample).

    Rows that cannot be searched (NaN, e.g. cells that could not be embedded) are left out;
    beyond `max_query` a seeded sample of the query is mapped. Returns one row per mapped
    cell: cell (query obs name or stored cell_id), source ("query" or "reference"), x, y
    and `label` (the stored label of reference cells, None for query cells)."""
    import umap  # numba-compiled: imported when a map is drawn

    vectors = np.asarray(vectors, dtype=np.float32)
    names = np.asarray(names, dtype=object)
    if vectors.ndim != 2 or len(vectors) != len(names):
        raise QueryError("the map needs one query vector (n, D) per query cell name")
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(usable_rows(vectors))
    if len(keep) > max_query:
        keep = np.sort(rng.choice(keep, size=max_query, replace=False))
    with Store.using(store, storage_options=storage_options) as st:
        cells = cells_table(st)
        check_label(st, label)
        ref = sample_rows(cells, reference, where=where, seed=seed, columns=[label])
    ref_vectors = embeddings_of(ref) if ref.num_rows else np.empty((0, vectors.shape[1]))
    if ref_vectors.shape[1] != vectors.shape[1]:
        raise QueryError(
            f"the query vectors are {vectors.shape[1]}-d but the store's are "
            f"{ref_vectors.shape[1]}-d: map vectors of the store's model"
        )
    together = np.vstack([vectors[keep], ref_vectors])
    if len(together) < MIN_MAP_CELLS:
        raise QueryError(
            f"only {len(together)} cells to map (query and reference): a map needs "
            f"{MIN_MAP_CELLS} or more"
        )
    layout = umap.UMAP(
        n_neighbors=min(MAP_NEIGHBOURS, len(together) - 1),
        metric="cosine",
        random_state=seed,
        init="spectral" if len(together) > MAP_NEIGHBOURS + 1 else "random",
        n_jobs=1,  # random_state makes umap-learn single-threaded anyway; say so
    ).fit_transform(together)
    ref_labels = ref.column(label).to_pylist() if ref.num_rows else []
    return pd.DataFrame(
        {
            "cell": [*names[keep], *ref.column(ID).to_pylist()],
            "source": ["query"] * len(keep) + ["reference"] * ref.num_rows,
            "x": layout[:, 0].astype(np.float64),
            "y": layout[:, 1].astype(np.float64),
            label: [None] * len(keep) + ref_labels,
        }
    )
