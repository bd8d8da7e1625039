"""The vector index over `cells.embedding`: which kind, when it is (re)built, how it is searched.

Cosine distance throughout (stored embeddings are unit norm). The rules (why, with the
figures in BENCHMARKS.md "Search" and docs/lance.md §2):

- Fewer than FLAT_MAX_ROWS cells: no index. Exact search (numpy over one Lance scan,
  `neighbours.py`) answers a batch of queries about as fast as an index would, with recall
  1 and nothing to build or keep fresh.
- From FLAT_MAX_ROWS: IVF_FLAT with partitions of about sqrt(n) rows (4096 from
  LARGE_ROWS on; `partition_rows`), set through Lance's `target_partition_size`, which
  Lance's `optimize()` keeps when it folds new rows in (a bare `num_partitions` is merged
  down to a few partitions by the first `optimize()`). A query probes enough partitions
  to scan about SCAN_FACTOR * sqrt(n) rows (at least MIN_SCAN_ROWS rows and NPROBES_MIN
  partitions), more for k > 50. IVF_FLAT keeps raw vectors, so distances are exact, and it
  builds in seconds where graph indexes take minutes.
- IVF_HNSW_SQ is available (`kind="ivf_hnsw_sq"`) but not chosen: slower to build, lower
  recall at k = 50 and slower batches than IVF_FLAT on cell embeddings.
- IVF_PQ is never chosen: product quantisation loses the small differences between
  neighbouring cells (recall far below annotation grade without refine).

Incremental: rows ingested after the build are searched exactly by Lance (a flat scan of
the unindexed fragments) until `refresh_index` folds them in with `optimize()`; once they
reach REBUILD_SHARE of the indexed rows, the partitions are retrained (a full rebuild).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

from uceindex.errors import QueryError, StoreError
from uceindex.store import history
from uceindex.store.schema import EMBEDDING
from uceindex.store.store import Store, retry_commit

INDEX_NAME = "embedding_idx"
METRIC = "cosine"
KINDS = ("auto", "flat", "ivf_flat", "ivf_hnsw_sq")
FLAT_MAX_ROWS = 20_000  # below this, exact search is as fast as an index and needs no build
MIN_PARTITION_ROWS = 256  # rows per IVF partition: about sqrt(n), never fewer than this...
LARGE_ROWS = 500_000  # ... and from this many cells, MAX_PARTITION_ROWS (see partition_rows)
MAX_PARTITION_ROWS = 4_096
KMEANS_SAMPLE_RATE = 64  # training vectors per partition (Lance: 256, 4x the k-means work)
KMEANS_ITERATIONS = 20  # Lance: 50. Both cut the 200k build from 77 to 58 s, same recall
SCAN_FACTOR = 12  # rows a query scans = SCAN_FACTOR * sqrt(indexed rows), in whole partitions
NPROBES_MIN = 3  # partitions searched per query, at least...
MIN_SCAN_ROWS = 4_096  # ... and enough for this many rows (small tables, unclustered data)
NPROBES_K = 50  # nprobes grows in proportion to k above this
HNSW_M = 20  # graph degree of IVF_HNSW_SQ (Lance default)
HNSW_EF_CONSTRUCTION = 150
HNSW_EF_MIN = (
    200  # search breadth; at least 3 k as well (ef >= k * refine_factor, docs/lance.md §1)
)
REBUILD_SHARE = 0.5  # retrain the partitions when new rows reach this share of the indexed
BITMAP_COLUMNS = ("dataset_id", "species", "cell_type", "tissue", "assay", "disease", "sex")
BTREE_COLUMNS = ("cell_id",)  # `similar` looks cells up by id


@dataclass(frozen=True)
class IndexPlan:
    """What to build: kind, and for IVF the rows per partition (about sqrt(n))."""

    kind: str  # flat (no index), ivf_flat or ivf_hnsw_sq
    partition_rows: int | None = None

    def config(self):
        """The lancedb index config object."""
        from lancedb.index import IvfFlat, IvfHnswSq

        if self.kind == "ivf_flat":
            return IvfFlat(
                distance_type=METRIC,
                target_partition_size=self.partition_rows,
                sample_rate=KMEANS_SAMPLE_RATE,
                max_iterations=KMEANS_ITERATIONS,
            )
        if self.kind == "ivf_hnsw_sq":
            return IvfHnswSq(distance_type=METRIC, m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION)
        raise ValueError(f"no index config for kind {self.kind!r}")


@dataclass(frozen=True)
class IndexState:
    """The index of `cells` as it is now. kind is "flat" when there is no vector index."""

    kind: str
    n_rows: int
    indexed_rows: int
    unindexed_rows: int
    num_partitions: int | None
    version: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SearchParams:
    """How one search runs: exact (kind flat) or through the index with these settings."""

    kind: str
    nprobes: int | None = None
    ef: int | None = None
    refine_factor: int | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class IndexReport:
    """What `refresh_index` did."""

    action: str  # built, rebuilt, refreshed, up to date, not needed, dropped
    state: IndexState
    seconds: float
    scalar_indexes: list[str]

    def as_dict(self) -> dict:
        return {
            "action": self.action,
            **self.state.as_dict(),
            "seconds": round(self.seconds, 3),
            "scalar_indexes_built": self.scalar_indexes,
        }


def partition_rows(n_rows: int) -> int:
    """Rows per IVF partition for a table of n_rows: sqrt(n) (at least MIN_PARTITION_ROWS),
    MAX_PARTITION_ROWS from LARGE_ROWS on. Measured with Lance 0.40 on 1280-d cells: at
    200k, 447-row partitions searched 5-8x faster than 1789-row ones at equal recall; at
    1M, 4096-row partitions (3 probes) beat 1000- and 500-row ones (10-30 probes) by
    1.3-5x, since Lance's cost per query grows steeply past about ten probes."""
    if n_rows >= LARGE_ROWS:
        return MAX_PARTITION_ROWS
    return int(min(MAX_PARTITION_ROWS, max(MIN_PARTITION_ROWS, round(math.sqrt(max(n_rows, 1))))))


def plan_index(n_rows: int, kind: str = "auto", partition_size: int | None = None) -> IndexPlan:
    """The index for a table of n_rows: `kind="auto"` applies the rules of the module
    docstring; any other kind is taken as given. partition_size overrides the rows per
    IVF partition."""
    if kind not in KINDS:
        raise QueryError(f"index kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "auto":
        kind = "flat" if n_rows < FLAT_MAX_ROWS else "ivf_flat"
    if kind == "flat":
        return IndexPlan("flat")
    if partition_size is not None and partition_size < 1:
        raise QueryError(f"partition size must be a positive number of rows, got {partition_size}")
    return IndexPlan(kind, partition_size or partition_rows(n_rows))


def _vector_index(table):
    for config in table.list_indices():
        if EMBEDDING in config.columns and config.name == INDEX_NAME:
            return config
    for config in table.list_indices():  # an index built by hand, under another name
        if EMBEDDING in config.columns and "ivf" in config.index_type.lower():
            return config
    return None


def _num_partitions(table, name: str) -> int | None:
    """From Lance's index statistics (pylance); None when they cannot be read. The delta
    segments `optimize()` may append share the first segment's centroids (a probe searches
    a partition in each), so their partitions are not added up."""
    os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")  # counts, not 1000s of vectors
    try:
        stats = table.to_lance().stats.index_stats(name)
        return int(max(part["num_partitions"] for part in stats["indices"]))
    except Exception:  # an index kind or pylance version without these statistics
        return None


_STATES: dict[tuple, IndexState] = {}  # (table uri, version) -> state; a version never changes


def describe_index(table) -> IndexState:
    """The vector index of the `cells` table `table` (a lancedb Table), cached per version."""
    key = (getattr(table, "_dataset_uri", None) or id(table), table.version)
    if key in _STATES:
        return _STATES[key]
    n = table.count_rows()
    config = _vector_index(table)
    if config is None:
        state = IndexState("flat", n, 0, n, None, table.version)
    else:
        stats = table.index_stats(config.name)
        state = IndexState(
            kind=stats.index_type.lower(),
            n_rows=n,
            indexed_rows=int(stats.num_indexed_rows),
            unindexed_rows=int(stats.num_unindexed_rows),
            num_partitions=_num_partitions(table, config.name),
            version=table.version,
        )
    if len(_STATES) > 256:
        _STATES.clear()
    _STATES[key] = state
    return state


def search_params(
    state: IndexState,
    k: int,
    *,
    n_reference: int | None = None,
    exact: bool = False,
    nprobes: int | None = None,
    ef: int | None = None,
    refine_factor: int | None = None,
) -> SearchParams:
    """The settings a search of k neighbours uses on an index in `state`; each given value
    overrides the rule. Exact search (kind "flat") when exact=True, when there is no index,
    or when a filter leaves fewer than FLAT_MAX_ROWS cells (n_reference): an exact scan of
    those few is faster than the index and never misses one."""
    small = n_reference is not None and n_reference < FLAT_MAX_ROWS
    if exact or state.kind == "flat" or small:
        return SearchParams("flat")
    scale = max(1.0, k / NPROBES_K)
    if "hnsw" in state.kind:
        ef = ef or max(HNSW_EF_MIN, 3 * k * (refine_factor or 1))
        if ef < k * (refine_factor or 1):
            raise QueryError(f"ef ({ef}) must be at least k * refine_factor")
        return SearchParams(state.kind, nprobes=nprobes, ef=ef, refine_factor=refine_factor)
    if nprobes is None:  # scan about SCAN_FACTOR * sqrt(n) rows, in whole partitions
        rows = max(state.indexed_rows, 1)
        per_partition = rows / (state.num_partitions or max(1, rows // partition_rows(rows)))
        scan = max(SCAN_FACTOR * math.sqrt(rows), MIN_SCAN_ROWS)
        nprobes = math.ceil(max(NPROBES_MIN, scan / per_partition) * scale)
    if nprobes < 1:
        raise QueryError(f"nprobes must be at least 1, got {nprobes}")
    if state.kind.endswith("_pq") and refine_factor is None:
        refine_factor = 10  # an index built by hand: PQ distances alone lose most neighbours
    return SearchParams(state.kind, nprobes=nprobes, refine_factor=refine_factor)


def cells_table(store):
    """`store.cells`, or StoreError when the store holds no cells yet."""
    table = store.cells
    if table is None or table.count_rows() == 0:
        raise StoreError(
            f"the store at {store.uri} has no cells yet: ingest a data set first "
            "(uceindex ingest FILE --species ... --store ...)"
        )
    return table


def _scalar_indexes(table) -> list[str]:
    """BITMAP indexes on the usual filter columns and a BTREE on cell_id, where missing.
    They make prefilters (--where) and id look-ups faster (docs/lance.md §2)."""
    import pyarrow as pa
    from lancedb.index import Bitmap, BTree

    have = {c for config in table.list_indices() for c in config.columns}
    built = []
    schema = table.schema
    for columns, config in ((BTREE_COLUMNS, BTree), (BITMAP_COLUMNS, Bitmap)):
        for name in columns:
            if name in have or name not in schema.names:
                continue
            if not pa.types.is_string(schema.field(name).type):
                continue
            table.create_index(name, config=config())
            built.append(name)
    return built


def refresh_index(
    store: Store | str | None,
    kind: str = "auto",
    *,
    rebuild: bool = False,
    partition_size: int | None = None,
    storage_options: dict | None = None,
) -> IndexReport:
    """Bring the vector index of the store's `cells` up to date; returns what was done.

    store: a Store or a URI (storage_options as `Store.open` takes them). No index yet: build
    the planned one (nothing for a table below FLAT_MAX_ROWS). An index with new rows: fold them in with Lance's `optimize()` (which
    also compacts small fragments), or retrain it when they reach REBUILD_SHARE of the
    indexed rows, when rebuild=True, or when another kind is asked for. kind="flat" drops
    the index. Scalar indexes on filter columns are added where missing. Safe to run again:
    with nothing new it does nothing. The store is refreshed to the new version, recorded in
    its history when anything changed. Old versions are cleaned up as `history.prune` does:
    never one a tag holds."""
    started = time.perf_counter()
    with Store.using(store, storage_options=storage_options) as st:
        st.check_writable()
        table = cells_table(st)
        state = describe_index(table)
        plan_index(state.n_rows, kind, partition_size)  # checks the arguments
        scalar = _scalar_indexes(table)
        current = state.kind
        if kind == "flat":
            action = "not needed"
            if current != "flat":
                table.drop_index(_vector_index(table).name)
                action = "dropped"
        elif current == "flat":
            plan = plan_index(state.n_rows, kind, partition_size)
            action = "not needed"
            if plan.kind != "flat":
                table.create_index(EMBEDDING, config=plan.config(), name=INDEX_NAME, replace=True)
                action = "built"
        else:  # an index exists: keep its kind unless another is asked for
            plan = plan_index(state.n_rows, current if kind == "auto" else kind, partition_size)
            stale = state.unindexed_rows >= REBUILD_SHARE * max(state.indexed_rows, 1)
            if rebuild or plan.kind != current or stale:
                table.create_index(EMBEDDING, config=plan.config(), name=INDEX_NAME, replace=True)
                action = "rebuilt"
            elif state.unindexed_rows == 0:
                action = "up to date"
            else:  # folds new rows into the partitions, compacts; `prune` cleans up
                retry_commit(table.optimize, cleanup_older_than=history.NEVER)
                history.prune(table)
                action = "refreshed"
        changes = [f"index {action}"] if action not in ("not needed", "up to date") else []
        if scalar:
            changes.append(f"scalar indexes on {', '.join(scalar)}")
        if changes:
            st.record_version("index", "; ".join(changes))
        st.refresh()
        return IndexReport(action, describe_index(st.cells), time.perf_counter() - started, scalar)


def prewarm_index(store: Store | str | None, *, storage_options: dict | None = None) -> list[str]:
    """Load the indexes of `cells` (the vector index and the scalar ones filters use) into
    Lance's cache now, in a few large reads; returns their names.

    Left alone, Lance reads the partitions a query probes on first use, as many small range
    requests: on object storage the first queries after opening a store then pay hundreds of
    round trips. A kept-open store (`uceindex serve --prewarm`) pays them once, up front. The
    cache holds the whole vector index (for IVF_FLAT: every stored vector), so the memory is
    the index's size. A store without indexes has nothing to load (exact search reads the
    table itself)."""
    with Store.using(store, storage_options=storage_options) as st:
        table = cells_table(st)
        names = [config.name for config in table.list_indices()]
        for name in names:
            table.prewarm_index(name)
        return names
