"""The store's history: versions over all tables, tags, reading as of one, kept through `index`."""

from __future__ import annotations

import datetime as dt
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from uceindex import SqlSession, annotate, list_versions, match, similar, tag_version
from uceindex.errors import InputDataError, StoreError
from uceindex.ingestion import ingest_embeddings
from uceindex.search import refresh_index
from uceindex.store import Store, export_dataset
from uceindex.store import history as H

DIM = 8
runner = CliRunner()
COUNTS = "SELECT dataset_id, cell_type, count(*) AS n FROM cells GROUP BY ALL ORDER BY ALL"


def _clusters(n: int, seed: int, labels=("T cell", "B cell")) -> tuple[pd.DataFrame, np.ndarray]:
    """Cells around two centres, the first labelled labels[0], the second labels[1]."""
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)
    emb = np.eye(DIM, dtype=np.float32)[side] * 3 + rng.normal(scale=0.4, size=(n, DIM))
    obs = pd.DataFrame({"cell_type": np.asarray(labels)[side]}, index=[f"c{i}" for i in range(n)])
    return obs, emb.astype(np.float32)


def _put(store, dataset_id, obs, emb, **kw):
    return ingest_embeddings(store, dataset_id, obs, emb, "human", "model-a", "fp", **kw)


def _queries() -> np.ndarray:
    return _clusters(30, seed=99)[1]


def _mouse() -> ad.AnnData:
    obs, emb = _clusters(30, seed=98, labels=("T", "B"))
    adata = ad.AnnData(obs=obs)
    adata.obsm["emb"] = emb
    return adata


def _answers(store) -> dict:
    """What a user reads from the store: an annotation, neighbours of a cell, a
    cross-species match, SQL."""
    with SqlSession(store) as sql:
        counts = sql.execute(COUNTS).rows()
    matched = match(store, _mouse(), species="mouse", against="human", embedding_key="emb", k=10)
    return {
        "annotation": annotate(store, _queries(), k=10),
        "similar": similar(store, "a/c0", 10),
        "match": matched.table,
        "sql": counts,
    }


def _same(got: dict, want: dict) -> None:
    for name in ("annotation", "similar", "match"):
        pd.testing.assert_frame_equal(got[name], want[name])
    assert got["sql"] == want["sql"]


@pytest.fixture
def grown(tmp_path):
    """A store where `a` was ingested and tagged `v1`, then `b` added and `a` replaced
    (labels swapped); returns (uri, the answers read before b)."""
    uri = str(tmp_path / "atlas")
    _put(uri, "a", *_clusters(200, seed=0))
    before = _answers(uri)
    tag_version(uri, "v1")
    _put(uri, "b", *_clusters(150, seed=1, labels=("NK cell", "NK cell")))
    _put(uri, "a", *_clusters(200, seed=2, labels=("B cell", "T cell")), replace=True)
    return uri, before


def test_as_of_a_tag_or_number_reads_every_table_as_it_was(grown):
    uri, before = grown
    now = _answers(uri)
    assert now["sql"] != before["sql"]
    assert not now["match"].equals(before["match"])
    assert not now["annotation"]["predicted"].equals(before["annotation"]["predicted"])
    with Store.open(uri, as_of="v1") as past:
        then = _answers(past)
        _same(then, before)
        assert then["annotation"].attrs["as_of"] == "2"  # the version read, kept with the result
        assert past.complete_dataset_ids() == ["a"] and past.count() == 200
        assert past.as_of.number == 2 and past.as_of.tags == ("v1",)
        past.refresh()  # a past store stays in the past
        assert past.count() == 200
    with Store.open(uri, as_of=2) as past:
        _same(_answers(past), before)
    with Store.open(uri, as_of="3") as past:  # b added, a not yet replaced
        assert past.complete_dataset_ids() == ["a", "b"] and past.count() == 350
        exported = export_dataset(past, "a")
    assert exported.n_obs == 200
    assert list(exported.obs["cell_type"]) == list(_clusters(200, seed=0)[0]["cell_type"])


def test_versions_say_when_and_what_changed(grown):
    uri, _ = grown
    listed = list_versions(uri)["versions"]
    assert [(v["version"], v["action"], v["dataset_id"]) for v in listed] == [
        (1, "created", None),
        (2, "added", "a"),
        (3, "added", "b"),
        (4, "replaced", "a"),
    ]
    assert [v["tags"] for v in listed] == [[], ["v1"], [], []]
    assert listed[3]["detail"] == "data set a replaced: 200 cells"
    assert listed[0]["tables"]["cells"] is None
    for older, newer in zip(listed, listed[1:]):
        assert newer["time"] >= older["time"]
        assert newer["tables"]["datasets"] > older["tables"]["datasets"]
    refresh_index(uri, kind="ivf_flat", partition_size=64)
    last = list_versions(uri)["versions"][-1]
    assert (last["version"], last["action"]) == (5, "index")
    assert last["detail"].startswith("index built")
    refresh_index(uri)  # nothing to do: no new version
    obs, emb = _clusters(5, seed=4)
    with pytest.raises(InputDataError):  # every cell refused: the data set is rolled back
        _put(uri, "bad", obs, np.full_like(emb, np.nan))
    listed = list_versions(uri)["versions"]
    assert [(v["version"], v["action"], v["dataset_id"]) for v in listed[4:]] == [
        (5, "index", None),
        (6, "rolled back", "bad"),
    ]


def test_a_store_read_as_of_a_version_refuses_every_write(grown):
    uri, _ = grown
    with Store.open(uri, as_of="v1") as past:
        for write in (
            lambda: _put(past, "c", *_clusters(20, seed=3)),
            lambda: refresh_index(past),
            lambda: past.tag("v2"),
        ):
            with pytest.raises(StoreError, match="as of version 2, which is read-only") as info:
                write()
            assert "\n" not in str(info.value)
    assert len(list_versions(uri)["versions"]) == 4


def test_tags_are_checked_kept_apart_and_removable(grown):
    uri, _ = grown
    assert tag_version(uri, "first", 1)["version"] == 1
    with Store.open(uri, as_of="first") as empty:
        assert empty.cells is None and empty.count() == 0
    for name, message in (
        ("v1", "already has a tag 'v1'"),
        ("12", "starting with a letter"),
        ("a/b", "starting with a letter"),
        ("a..b", "single dots"),
        ("a.lock", "not ending in .lock"),
        ("a" * 101, "at most 100"),
    ):
        with pytest.raises(StoreError, match=message):
            tag_version(uri, name)
    with pytest.raises(StoreError, match="has no version 9 \\(its versions are 1 to 4\\)"):
        tag_version(uri, "late", 9)
    assert tag_version(uri, "v1", delete=True)["version"] == 2
    assert [v["tags"] for v in list_versions(uri)["versions"]] == [["first"], [], [], []]
    with pytest.raises(StoreError, match="has no version or tag 'v1'"):
        Store.open(uri, as_of="v1")
    with pytest.raises(StoreError, match="has no tag 'v1'"):
        tag_version(uri, "v1", delete=True)


def test_a_tag_of_a_state_between_versions_records_it(tmp_path):
    """A store changed outside the history (an interrupted ingest, an older uceindex): the
    tag records the state it finds as a version, so what was read can be read again."""
    uri = str(tmp_path / "atlas")
    _put(uri, "a", *_clusters(50, seed=0))
    with Store.open(uri) as store:
        # a change no version recorded (rows as `datasets` says, so not damage)
        store.cells.update(where="cell_id = 'a/c1'", values={"cell_type": "relabelled"})
    tagged = tag_version(uri, "now")
    assert (tagged["version"], tagged["action"]) == (3, H.SNAPSHOT)
    with Store.open(uri, as_of="now") as past:
        got = past.cells.search().where("cell_type = 'relabelled'").to_arrow()
        assert got.column("cell_id").to_pylist() == ["a/c1"]


def test_index_keeps_the_versions_tags_hold(tmp_path, monkeypatch):
    """`index` cleans up old versions (after KEEP_UNTAGGED; 0 here), but never a tagged one:
    Lance's own clean-up inside optimize() would fail on an old tag instead."""
    monkeypatch.setattr(H, "KEEP_UNTAGGED", dt.timedelta(0))
    uri = str(tmp_path / "atlas")
    _put(uri, "a", *_clusters(600, seed=0))
    refresh_index(uri, kind="ivf_flat", partition_size=128)
    before = _answers(uri)
    tag_version(uri, "paper")  # version 3: a indexed
    _put(uri, "b", *_clusters(100, seed=1, labels=("NK cell", "NK cell")))  # version 4
    assert refresh_index(uri).action == "refreshed"  # optimize, then the clean-up
    with Store.open(uri, as_of="paper") as past:
        _same(_answers(past), before)
    with pytest.raises(StoreError, match="version 4 of the store at .* was cleaned up") as info:
        Store.open(uri, as_of=4)
    assert "tag a version to keep it" in str(info.value)
    with pytest.raises(StoreError, match="version 4 of the store at .* was cleaned up"):
        tag_version(uri, "too-late", 4)
    with Store.open(uri) as store:
        assert store.count() == 700


def _h5ad(path, obs, emb):
    adata = ad.AnnData(obs=obs)
    adata.obsm["emb"] = emb
    adata.write_h5ad(path)
    return str(path)


def _cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_versions_tag_and_as_of_reproduce_a_published_answer(tmp_path):
    store = tmp_path / "atlas"
    a = _h5ad(tmp_path / "a.h5ad", *_clusters(200, seed=0))
    query = _h5ad(tmp_path / "q.h5ad", *_clusters(30, seed=99))
    assert (
        _cli("ingest", a, "--species", "human", "--embedding-key", "emb", "--store", store)[0] == 0
    )
    published = tmp_path / "published.csv"
    query_args = ("query", query, "--embedding-key", "emb", "--k", 10, "--store", store)
    assert _cli(*query_args, "--out", published)[0] == 0
    sql_before = _cli("sql", COUNTS, "--format", "csv", "--store", store)[1]
    similar_before = _cli("similar", "--cell-id", "a/c0", "--json", "--store", store)[1]
    mouse = tmp_path / "mouse.h5ad"
    _mouse().write_h5ad(mouse)
    match_args = ("match", mouse, "--species", "mouse", "--against", "human", "--k", 10)
    match_args += ("--embedding-key", "emb", "--json", "--store", store)
    match_before = json.loads(_cli(*match_args)[1])["table"]
    code, out, _ = _cli("tag", "published", "--store", store)
    assert code == 0 and "tagged published: version 2" in out

    b = _h5ad(tmp_path / "b.h5ad", *_clusters(150, seed=1, labels=("NK cell", "NK cell")))
    a2 = _h5ad(tmp_path / "a2.h5ad", *_clusters(200, seed=2, labels=("B cell", "T cell")))
    for path, extra in ((b, ()), (a2, ("--dataset-id", "a", "--replace"))):
        args = ("ingest", path, "--species", "human", "--embedding-key", "emb", *extra)
        assert _cli(*args, "--store", store)[0] == 0
    code, out, _ = _cli("versions", "--json", "--store", store)
    assert code == 0
    listed = json.loads(out)["versions"]
    assert [(v["action"], v["tags"]) for v in listed] == [
        ("created", []),
        ("added", ["published"]),
        ("added", []),
        ("replaced", []),
    ]
    assert "data set a replaced" in _cli("versions", "--store", store)[1]

    again, now = tmp_path / "again.csv", tmp_path / "now.csv"
    assert _cli(*query_args, "--out", now)[0] == 0
    assert now.read_bytes() != published.read_bytes()
    for as_of in ("published", "2"):
        assert _cli(*query_args, "--out", again, "--as-of", as_of)[0] == 0
        assert again.read_bytes() == published.read_bytes()
        sql_then = _cli("sql", COUNTS, "--format", "csv", "--store", store, "--as-of", as_of)
        assert sql_then[1] == sql_before
        similar_args = ("similar", "--cell-id", "a/c0", "--json", "--store", store)
        assert _cli(*similar_args, "--as-of", as_of)[1] == similar_before
        assert json.loads(_cli(*match_args, "--as-of", as_of)[1])["table"] == match_before
    assert json.loads(_cli(*match_args)[1])["table"] != match_before
    assert _cli("sql", COUNTS, "--format", "csv", "--store", store)[1] != sql_before
    code, out, _ = _cli("datasets", "--json", "--store", store, "--as-of", "published")
    assert [d["dataset_id"] for d in json.loads(out)["datasets"]] == ["a"]


def test_cli_unknown_version_or_tag_is_one_line(tmp_path):
    store = tmp_path / "atlas"
    _put(str(store), "a", *_clusters(20, seed=0))
    for as_of, message in (("7", "has no version 7"), ("gone", "has no version or tag 'gone'")):
        code, _, err = _cli("sql", "SELECT 1", "--store", store, "--as-of", as_of)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli("tag", "x", "--delete", "--version", 1, "--store", store)
    assert code == 2
