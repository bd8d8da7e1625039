"""The vector index and batched k-NN search over stores written by uceindex."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from uceindex.errors import QueryError, StoreError
from uceindex.ingestion import ingest_embeddings
from uceindex.search import index as uindex
from uceindex.search import index_stats, knn, neighbours, refresh_index
from uceindex.search.index import SearchParams, describe_index
from uceindex.store import Store

runner = CliRunner()
DIM = 32
TYPES = 6
NOISE = 0.35


def centres(seed: int = 0, n: int = TYPES) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM))


def cells(rng, n: int, types: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """n points around the centres of `types` (cycled), unit norm not required."""
    labels = types[np.arange(n) % len(types)]
    return centre[labels] + NOISE * rng.standard_normal((n, DIM)), labels


def write_dataset(uri, dataset_id: str, x: np.ndarray, labels, species="human", **obs) -> None:
    frame = pd.DataFrame(
        {"cell_type": [f"type{v}" for v in labels], **obs},
        index=[f"c{i}" for i in range(len(x))],
    )
    ingest_embeddings(uri, dataset_id, frame, x, species, "synthetic", "synthetic-v1")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Novelty thresholds are cached under XDG_CACHE_HOME: keep them in the test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """Two data sets of 6 cell types: `lung` (1200 cells) and `blood` (900), human."""
    uri = tmp_path_factory.mktemp("search") / "atlas"
    rng = np.random.default_rng(1)
    c = centres()
    xa, la = cells(rng, 1200, np.arange(TYPES), c)
    xb, lb = cells(rng, 900, np.arange(TYPES), c)
    write_dataset(uri, "lung", xa, la, tissue="lung")
    write_dataset(uri, "blood", xb, lb, tissue="blood")
    return {"uri": str(uri), "x": np.vstack([xa, xb]), "centres": c}


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_brute_force(atlas):
    with Store.open(atlas["uri"]) as store:
        q = np.random.default_rng(2).standard_normal((25, DIM))
        found = knn(store.cells, q, 10, columns=["cell_type"])
    ids = [f"lung/c{i}" for i in range(1200)] + [f"blood/c{i}" for i in range(900)]
    sims = unit(q) @ unit(atlas["x"]).T
    top = np.argsort(-sims, axis=1)[:, :10]
    assert found.params.kind == "flat" and found.valid.all()
    assert [list(r) for r in found.cell_id] == [[ids[j] for j in row] for row in top]
    assert np.allclose(found.similarity, np.take_along_axis(sims, top, axis=1), atol=1e-5)
    assert (np.diff(found.similarity, axis=1) <= 1e-7).all()  # best first
    assert set(found.columns["cell_type"].ravel()) <= {f"type{t}" for t in range(TYPES)}


def test_small_store_needs_no_index_but_gets_scalar_indexes(atlas):
    with Store.open(atlas["uri"]) as store:
        report = refresh_index(store)
        assert report.action == "not needed" and report.state.kind == "flat"
        assert {"cell_id", "dataset_id", "species", "cell_type", "tissue"} <= set(
            report.scalar_indexes
        )
    again = refresh_index(atlas["uri"])  # a store URI does as well as an open Store
    assert again.action == "not needed" and again.scalar_indexes == []


def test_plan_follows_table_size():
    assert uindex.plan_index(uindex.FLAT_MAX_ROWS - 1).kind == "flat"
    assert uindex.plan_index(200_000).partition_rows == 447  # sqrt(n)
    big = uindex.plan_index(1_000_000)
    assert big.kind == "ivf_flat" and big.partition_rows == uindex.MAX_PARTITION_ROWS
    assert uindex.plan_index(10, "ivf_hnsw_sq").kind == "ivf_hnsw_sq"
    with pytest.raises(QueryError, match="index kind"):
        uindex.plan_index(10, "ivf_pq")
    mid = uindex.IndexState("ivf_flat", 200_000, 200_000, 0, 447, 1)
    assert uindex.search_params(mid, 50).nprobes == 12  # 12 sqrt(n) rows of 447-row partitions
    state = uindex.IndexState("ivf_flat", 10**6, 10**6, 0, 244, 1)
    assert uindex.search_params(state, 50).nprobes == 3
    assert uindex.search_params(state, 100).nprobes == 6  # grows with k
    assert uindex.search_params(state, 50, n_reference=500).kind == "flat"  # tiny filter: exact


def test_ivf_recall_refresh_and_rebuild(tmp_path):
    uri = tmp_path / "atlas"
    rng = np.random.default_rng(3)
    c = 0.5 * centres(n=40)  # clusters touching: neighbours spread over a few partitions
    x, labels = cells(rng, 3000, np.arange(40), c)
    write_dataset(uri, "first", x, labels)
    with Store.open(uri) as store:
        built = refresh_index(store, "ivf_flat", partition_size=100)
        assert built.action == "built" and built.state.kind == "ivf_flat"
        assert built.state.num_partitions >= 20 and built.state.unindexed_rows == 0
        stats = index_stats(store, k=20, sample=100)
        assert stats.params.kind == "ivf_flat" and stats.recall_mean >= 0.95
        narrow = index_stats(store, k=20, sample=100, nprobes=1)
        assert narrow.recall_mean < stats.recall_mean  # the sample does measure the index

        more, more_labels = cells(rng, 300, np.arange(40), c)
        write_dataset(uri, "second", more, more_labels)
        store.refresh()
        assert describe_index(store.cells).unindexed_rows == 300
        refreshed = refresh_index(store)
        assert refreshed.action == "refreshed" and refreshed.state.unindexed_rows == 0
        # Kept, not merged down to a few (Lance may split or merge one or two); when
        # optimize() appends a delta segment, it shares the centroids: not counted twice.
        assert 0.8 <= refreshed.state.num_partitions / built.state.num_partitions <= 1.25
        assert refresh_index(store).action == "up to date"

        grown, grown_labels = cells(rng, 2000, np.arange(40), c)
        write_dataset(uri, "third", grown, grown_labels)
        store.refresh()
        assert refresh_index(store).action == "rebuilt"  # 2000 new >= half of 3300 indexed
        dropped = refresh_index(store, "flat")
        assert dropped.action == "dropped" and dropped.state.kind == "flat"


class CountingTable:
    """A Lance table that counts the search calls made on it (one per block of queries)."""

    def __init__(self, table):
        self.table, self.calls = table, 0

    def search(self, *args, **kwargs):
        self.calls += 1
        return self.table.search(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.table, name)


def test_indexed_search_in_concurrent_blocks(tmp_path, monkeypatch):
    """Queries go to Lance in blocks, several at once; each answer lands on its own query,
    and a failure (a search, or the caller's progress callback) stops the blocks queued."""
    uri = tmp_path / "atlas"
    x, labels = cells(np.random.default_rng(8), 3000, np.arange(40), 0.5 * centres(n=40))
    write_dataset(uri, "one", x, labels)
    q = np.random.default_rng(9).standard_normal((90, DIM))
    params = SearchParams("ivf_flat", nprobes=4)
    with Store.open(uri) as store:
        refresh_index(store, "ivf_flat", partition_size=100)
        whole = knn(store.cells, q, 20, params=params, columns=["cell_type"])
        monkeypatch.setattr(neighbours, "QUERY_BATCH", 7)
        monkeypatch.setattr(neighbours, "SEARCH_THREADS", 3)
        seen = []
        blocks = knn(
            store.cells, q, 20, params=params, columns=["cell_type"],
            progress=lambda done, total: seen.append((done, total)),
        )  # fmt: skip

        monkeypatch.setattr(neighbours, "SEARCH_THREADS", 1)
        table = CountingTable(store.cells)
        with pytest.raises(QueryError, match="cannot filter cells with"):
            knn(table, q, 20, where="cell_type = = 'x'", params=params)  # Lance refuses it
        assert 1 <= table.calls <= 4  # the blocks still queued were dropped, not searched

        def stop(done, total):
            raise KeyboardInterrupt

        table = CountingTable(store.cells)
        with pytest.raises(KeyboardInterrupt):
            knn(table, q, 20, params=params, progress=stop)
        assert 1 <= table.calls <= 4
    assert whole.valid.all() and (blocks.cell_id == whole.cell_id).all()
    np.testing.assert_allclose(blocks.similarity, whole.similarity, rtol=1e-6)
    assert (blocks.columns["cell_type"] == whole.columns["cell_type"]).all()
    assert seen[-1] == (90, 90) and len(seen) == 13  # one report per block of 7


def test_hnsw_override(tmp_path):
    uri = tmp_path / "atlas"
    x, labels = cells(np.random.default_rng(4), 1500, np.arange(TYPES), centres())
    write_dataset(uri, "one", x, labels)
    with Store.open(uri) as store:
        assert refresh_index(store, "ivf_hnsw_sq").state.kind == "ivf_hnsw_sq"
        stats = index_stats(store, k=10, sample=50)
    assert stats.params.ef >= 30 and stats.recall_mean >= 0.9


def test_where_is_a_prefilter_on_every_path(atlas, tmp_path):
    q = np.random.default_rng(5).standard_normal((30, DIM))
    with Store.open(atlas["uri"]) as store:
        exact = knn(store.cells, q, 40, where="tissue = 'blood'", columns=["tissue"])
    assert exact.valid.all() and set(exact.columns["tissue"].ravel()) == {"blood"}
    assert all(i.startswith("blood/") for i in exact.cell_id.ravel())

    uri = tmp_path / "atlas"  # an index, and a filter matching 2 of 40 types
    x, labels = cells(np.random.default_rng(6), 4000, np.arange(40), centres(n=40))
    write_dataset(uri, "one", x, labels)
    with Store.open(uri) as store:
        refresh_index(store, "ivf_flat", partition_size=100)
        where = "cell_type IN ('type0', 'type1')"  # 200 cells, in a few partitions
        found = knn(
            store.cells,
            q,
            50,
            where=where,
            columns=["cell_type"],
            params=SearchParams("ivf_flat", nprobes=1),
        )
    assert found.valid.all()  # a fixed nprobes=1 alone starves; the second pass fills up
    assert set(found.columns["cell_type"].ravel()) == {"type0", "type1"}


def test_knn_pads_when_the_filter_leaves_fewer_than_k(atlas):
    with Store.open(atlas["uri"]) as store:
        found = knn(store.cells, np.ones(DIM), 5, where="cell_id IN ('lung/c1', 'blood/c2')")
    assert found.valid.tolist() == [[True, True, False, False, False]]
    assert found.cell_id[0, 2] is None and np.isnan(found.similarity[0, 2])


def test_errors_are_clear(atlas, tmp_path):
    empty = tmp_path / "empty"
    with Store.open(empty, create=True) as store:
        with pytest.raises(StoreError, match="no cells yet"):
            refresh_index(store)
    with Store.open(atlas["uri"]) as store:
        with pytest.raises(QueryError, match=r"must be \(n, 32\)"):
            knn(store.cells, np.ones((2, 8)), 5)
        with pytest.raises(QueryError, match="NaN"):
            knn(store.cells, np.zeros((1, DIM)), 5)
        with pytest.raises(QueryError, match="cannot filter"):
            knn(store.cells, np.ones(DIM), 5, where="no_such_column = 1")
        with pytest.raises(QueryError, match="no column 'organ'"):
            knn(store.cells, np.ones(DIM), 5, columns=["organ"])
        with pytest.raises(QueryError, match="holds only 2100 cells"):
            index_stats(atlas["uri"], k=5000)  # a URI or a Store, like every search call


def test_cli_index_and_similar(atlas, tmp_path):
    result = runner.invoke(
        app, ["index", "--store", atlas["uri"], "--stats", "--k", "10", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "flat" and data["recall"]["recall_mean"] == 1.0

    result = runner.invoke(app, ["index", "--store", atlas["uri"]])
    assert result.exit_code == 0 and "exact search, no index" in result.output

    result = runner.invoke(
        app, ["similar", "--cell-id", "lung/c0", "--k", "5", "--store", atlas["uri"], "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["neighbours"]
    assert len(rows) == 5 and "lung/c0" not in {r["cell_id"] for r in rows}
    assert all(r["cell_type"] == "type0" for r in rows)

    result = runner.invoke(
        app, ["similar", "--cell-id", "lung/c0", "--k", "3", "--store", atlas["uri"]]
    )
    assert result.exit_code == 0 and "most similar to lung/c0" in result.output

    result = runner.invoke(app, ["index", "--store", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no store" in result.output


@pytest.mark.parametrize(
    "preset, one_core", [(None, False), ("1", False), (None, True)], ids=["all", "set", "pinned"]
)
def test_lance_computes_on_every_core_unless_told_otherwise(preset, one_core):
    env = {k: v for k, v in os.environ.items() if k != "LANCE_CPU_THREADS"}
    if preset:
        env["LANCE_CPU_THREADS"] = preset
    pin = "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " if one_core else ""
    code = f"import os; {pin}import uceindex; print(os.environ['LANCE_CPU_THREADS'])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    cores = 1 if one_core else len(os.sched_getaffinity(0))
    assert out.stdout.strip() == (preset or str(cores))
