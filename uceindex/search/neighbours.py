"""Batched k-nearest-neighbour search over the `cells` table, with an optional SQL prefilter.

Two paths, chosen by `index.search_params` (the caller may force either):
- index: Lance's vector search, QUERY_BATCH query vectors per call (a list of vectors in
  one `search()`, told apart by Lance's `query_index` column), prefilter with `where`;
  SEARCH_THREADS calls at once, since Lance answers one call on one core;
- exact: one Lance scan of the (filtered) table in SCAN_ROWS batches, numpy dot products
  against every query, a running top k. Used below index.FLAT_MAX_ROWS and as the ground
  truth of `index_stats`; one scan serves any number of queries.

Both return a `Neighbours` of (n, k) arrays, padded where fewer than k cells match.
Similarity is cosine (stored cells and queries are unit norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from uceindex import CORES
from uceindex.errors import QueryError
from uceindex.search.index import METRIC, SearchParams, describe_index, search_params
from uceindex.store.schema import EMBEDDING
from uceindex.store.store import sql_string
from uceindex.vectors import unit_rows

QUERY_BATCH = 256  # query vectors per Lance search call
SEARCH_THREADS = min(4, CORES)  # Lance search calls in flight at once
SCAN_ROWS = 16_384  # stored rows per batch of the exact scan (84 MB at 1280-d)
EXACT_BLOCK = 1 << 24  # query x row similarities held at once by the exact path (64 MB)
ID = "cell_id"

Progress = Callable[[int, int], None]  # (queries done, queries in all)


@dataclass(frozen=True)
class Neighbours:
    """k neighbour slots per query, best first. Padded slots (fewer than k cells in the
    filtered reference) have valid False, cell_id None and similarity NaN."""

    cell_id: np.ndarray  # object (n, k)
    similarity: np.ndarray  # float64 (n, k), cosine
    valid: np.ndarray  # bool (n, k)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # name -> object (n, k)
    params: SearchParams | None = None


def both(*predicates: str | None) -> str | None:
    """The AND of the predicates given (None ones skipped), each in parentheses."""
    parts = [f"({p})" for p in predicates if p]
    return " AND ".join(parts) or None


def _query_rows(vectors, dim: int) -> np.ndarray:
    """(n, dim) float32 rows scaled to unit norm; refuses NaN, inf, zero rows, wrong width."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise QueryError(f"query vectors must be (n, {dim}) to match the store, got {v.shape}")
    unit, ok = unit_rows(v)
    if not ok.all():
        raise QueryError("a query vector has NaN/inf values or is all zeros")
    return unit


@contextmanager
def filtering(where: str | None) -> Iterator[None]:
    """Lance's refusal of `where` as a QueryError that names it and says why in one line:
    at planning (ValueError: syntax, unknown column) or while it runs (RuntimeError: a
    regular expression that does not compile, a cast that fails). Without a filter nothing
    is caught."""
    try:
        yield
    except (ValueError, RuntimeError) as exc:
        if not where:
            raise
        why = " ".join(str(exc).split())[:300]
        raise QueryError(f"cannot filter cells with {where!r}: {why}") from None


def count_cells(table, where: str | None) -> int:
    """Rows of `table` matching `where`; a malformed filter becomes a QueryError."""
    with filtering(where):
        return table.count_rows(where) if where else table.count_rows()


def knn(
    table,
    vectors,
    k: int,
    *,
    where: str | None = None,
    columns: tuple[str, ...] | list[str] = (),
    params: SearchParams | None = None,
    progress: Progress | None = None,
) -> Neighbours:
    """The k most similar stored cells of each query vector (n, D), within `where`.

    params: from `index.search_params` (default: the rule for the table's index). columns:
    more `cells` columns to return per neighbour (labels, dataset_id). A malformed `where`
    or an unknown column raises QueryError. k may exceed the matching cells (slots padded).
    """
    dim = table.schema.field(EMBEDDING).type.list_size
    q = _query_rows(vectors, dim)
    if k < 1:
        raise QueryError(f"k must be at least 1, got {k}")
    if EMBEDDING in columns:
        raise QueryError(
            f"column {EMBEDDING!r} is the vector searched, not a column to return per "
            f"neighbour: choose among {', '.join(c for c in table.schema.names if c != EMBEDDING)}"
        )
    missing = [c for c in columns if c not in table.schema.names]
    if missing:
        raise QueryError(
            f"the store has no column {missing[0]!r}; it has: {', '.join(table.schema.names)}"
        )
    asked = list(dict.fromkeys(columns))
    columns = [c for c in asked if c != ID]
    if params is None:
        n_ref = count_cells(table, where) if where else None
        params = search_params(describe_index(table), k, n_reference=n_ref)
    if len(q) == 0:
        ids, sims, cols = _empty(0, k, columns)
        out = ids, sims, np.zeros((0, k), dtype=bool), cols
    elif params.kind == "flat":
        out = _exact(table, q, k, where, columns, progress)
    else:
        out = _indexed(table, q, k, where, columns, params, progress)
    ids, sims, valid, cols = out
    if ID in asked:  # e.g. the label of an annotation
        cols[ID] = ids
    return Neighbours(ids, sims, valid, cols, params=params)


def _empty(n: int, k: int, columns):
    ids = np.full((n, k), None, dtype=object)
    sims = np.full((n, k), np.nan)
    cols = {c: np.full((n, k), None, dtype=object) for c in columns}
    return ids, sims, cols


def _lance_search(table, q, k, where, select, params: SearchParams, adaptive: bool):
    """One Lance search call for the block of query vectors q (arrow table of its hits)."""
    query = (
        table.search(q, vector_column_name=EMBEDDING).distance_type(METRIC).select(select).limit(k)
    )
    if where:
        query = query.where(where, prefilter=True)
    if params.nprobes and adaptive:  # more partitions only where too few rows match
        query = query.minimum_nprobes(params.nprobes).maximum_nprobes(0)
    elif params.nprobes:
        query = query.nprobes(params.nprobes)
    if params.ef:
        query = query.ef(params.ef)
    if params.refine_factor:
        query = query.refine_factor(params.refine_factor)
    with filtering(where):
        return query.to_arrow()


def _indexed(table, q, k, where, columns, params: SearchParams, progress):
    """Fixed nprobes for every query, then once more for the queries that found fewer rows
    than the (filtered) table holds, letting Lance probe further partitions
    (minimum_nprobes + maximum_nprobes(0)). That adaptive mode is 5-8x slower per query in
    a batch, so it is kept for the few that need it; a fixed nprobes alone starves under a
    selective filter (docs/lance.md §1), or when the probed partitions are small."""
    n = len(q)
    ids, sims, cols = _empty(n, k, columns)
    select = [ID, *columns, "_distance"]  # never the vector itself (docs/lance.md §1)

    def search(rows: np.ndarray, adaptive: bool) -> None:
        blocks = [rows[s : s + QUERY_BATCH] for s in range(0, len(rows), QUERY_BATCH)]
        if not blocks:
            return
        pool = ThreadPoolExecutor(min(SEARCH_THREADS, len(blocks)))
        found = [
            pool.submit(_lance_search, table, q[b], k, where, select, params, adaptive)
            for b in blocks
        ]
        try:
            for done, (block, result) in enumerate(zip(blocks, found), start=1):
                _fill(result.result(), block, k, ids, sims, cols)
                if progress and not adaptive:
                    progress(min(done * QUERY_BATCH, n), n)
        finally:  # a failure anywhere (a search, the caller's progress) drops the rest
            pool.shutdown(wait=True, cancel_futures=True)

    search(np.arange(n), adaptive=False)
    if params.nprobes:  # unbalanced partitions can starve a query even without a filter
        expected = min(k, count_cells(table, where))
        short = np.flatnonzero((~np.isnan(sims)).sum(axis=1) < expected)
        for a in (ids, sims, *cols.values()):
            a[short] = np.nan if a is sims else None
        search(short, adaptive=True)
    return ids, sims, ~np.isnan(sims), cols


def _fill(result, block: np.ndarray, k: int, ids, sims, cols) -> None:
    """Write a search result into the rows `block` of the (n, k) arrays, best first."""
    if "query_index" in result.column_names:
        row = result.column("query_index").to_numpy().astype(np.int64)
    else:  # a search of one vector
        row = np.zeros(result.num_rows, dtype=np.int64)
    dist = result.column("_distance").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.lexsort((dist, row))
    row, dist = row[order], dist[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row)  # position inside its query
    keep = rank < k
    r, s, take = block[row[keep]], rank[keep], order[keep]
    ids[r, s] = result.column(ID).to_numpy(zero_copy_only=False)[take]
    sims[r, s] = 1.0 - dist[keep]
    for c, a in cols.items():
        a[r, s] = result.column(c).to_numpy(zero_copy_only=False)[take]


def _exact(table, q, k, where, columns, progress):
    """Running top k over one scan: per scan batch and block of queries, keep the best k
    of (the k so far + the batch). Positions index the concatenated scan."""
    import pyarrow as pa

    n = len(q)
    best_sim = np.full((n, k), -np.inf, dtype=np.float32)
    best_pos = np.full((n, k), -1, dtype=np.int64)
    query = table.search().select([ID, *columns, EMBEDDING]).limit(None)
    if where:
        query = query.where(where)
    meta, offset = [], 0
    for batch in _scan(query, where):
        if batch.num_rows == 0:
            continue
        emb = batch.column(EMBEDDING).flatten().to_numpy().reshape(batch.num_rows, -1)
        rows = np.arange(offset, offset + batch.num_rows)
        step = max(1, EXACT_BLOCK // batch.num_rows)
        for a in range(0, n, step):
            sim = np.concatenate([best_sim[a : a + step], q[a : a + step] @ emb.T], axis=1)
            pos = np.concatenate(
                [best_pos[a : a + step], np.broadcast_to(rows, (len(sim), len(rows)))], axis=1
            )
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if sim.shape[1] > k else None
            if top is not None:
                sim = np.take_along_axis(sim, top, axis=1)
                pos = np.take_along_axis(pos, top, axis=1)
            best_sim[a : a + step], best_pos[a : a + step] = sim, pos
        meta.append(batch.drop_columns([EMBEDDING]))
        offset += batch.num_rows
    order = np.argsort(-best_sim, axis=1, kind="stable")
    best_sim = np.take_along_axis(best_sim, order, axis=1)
    best_pos = np.take_along_axis(best_pos, order, axis=1)
    valid = best_pos >= 0
    ids, sims, cols = _empty(n, k, columns)
    if valid.any():
        found = pa.Table.from_batches(meta).take(pa.array(best_pos[valid]))
        ids[valid] = found.column(ID).to_numpy(zero_copy_only=False)
        sims[valid] = best_sim[valid]
        for c in columns:
            cols[c][valid] = found.column(c).to_numpy(zero_copy_only=False)
    if progress:
        progress(n, n)
    return ids, sims, valid, cols


def _scan(query, where: str | None):
    """The batches of a Lance scan, streamed; its filter's errors as QueryErrors."""
    with filtering(where):
        yield from query.to_batches(SCAN_ROWS)


def sample_cells(table, n: int, *, where: str | None = None, seed: int = 0):
    """Up to n stored cells drawn without replacement (seeded) among those matching `where`:
    (cell ids (m,) object, embeddings (m, D) float32). Reads row ids, then only those rows."""
    got = sample_rows(table, n, where=where, seed=seed)
    if got.num_rows == 0:
        return np.empty(0, dtype=object), np.empty((0, 0), dtype=np.float32)
    return got.column(ID).to_numpy(zero_copy_only=False), embeddings_of(got)


def sample_rows(table, n: int, *, where: str | None = None, seed: int = 0, columns=()):
    """Up to n stored rows (seeded, without replacement) matching `where`, as an Arrow table
    of cell_id, embedding and `columns`, in storage order."""
    rows = table.search().with_row_id(True).select([ID]).limit(None)
    if where:
        rows = rows.where(where)
    with filtering(where):
        row_ids = rows.to_arrow().column("_rowid").to_numpy()
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(row_ids, size=min(n, len(row_ids)), replace=False))
    wanted = [ID, EMBEDDING, *(c for c in columns if c not in (ID, EMBEDDING))]
    if len(pick) == 0:
        return pa.schema([table.schema.field(c) for c in wanted]).empty_table()
    return table.take_row_ids(pick.tolist()).select(wanted).to_arrow()


def take_cells(table, row_ids, columns):
    """The stored rows `row_ids` (Lance row ids): (an arrow table of `columns`, their
    embeddings (m, D) float32), in the order Lance returns them."""
    got = table.take_row_ids([int(r) for r in row_ids]).select([*columns, EMBEDDING]).to_arrow()
    return got.drop_columns([EMBEDDING]), embeddings_of(got)


def embeddings_of(rows) -> np.ndarray:
    """The embedding column of an Arrow table of cells as (m, D) float32."""
    emb = rows.column(EMBEDDING).combine_chunks().flatten().to_numpy().reshape(rows.num_rows, -1)
    return emb.astype(np.float32, copy=False)


def cell_vector(table, cell_id: str) -> np.ndarray:
    """The stored embedding (D,) of one cell; QueryError when the id is not in the store."""
    got = (
        table.search()
        .where(f"{ID} = {sql_string(cell_id)}")
        .select([ID, EMBEDDING])
        .limit(1)
        .to_arrow()
    )
    if got.num_rows == 0:
        raise QueryError(
            f"no cell {cell_id!r} in the store (ids are DATASET/OBS_NAME; "
            "`uceindex datasets` lists the data sets)"
        )
    return got.column(EMBEDDING).combine_chunks().flatten().to_numpy().astype(np.float32)
