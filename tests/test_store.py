"""The store: opening, schemas as data, model binding, snapshots, union of obs columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import uceindex
from uceindex.errors import StoreError
from uceindex.ingestion import ingest_embeddings
from uceindex.store import Store, export_dataset
from uceindex.store import schema as S

DIM = 8


def _cells(n: int, seed: int = 0, prefix: str = "c", **columns) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(columns or {"n": np.arange(n)}, index=[f"{prefix}{i}" for i in range(n)])
    return obs, rng.normal(size=(n, DIM)).astype(np.float32)


def _put(store, dataset_id, obs, emb, fingerprint="fp1", **kw):
    return ingest_embeddings(store, dataset_id, obs, emb, "human", "model-a", fingerprint, **kw)


def _state(uri) -> dict:
    """Everything a user could see in a store, for 'left as it was' checks."""
    with Store.open(uri) as store:
        frame = store.datasets().drop(columns=["created_at", "updated_at"]).astype(object)
        frame = frame.where(frame.notna(), None)
        cells = store.cells
        return {
            "datasets": frame.to_dict(orient="records"),
            "cells": sorted(cells.to_arrow().column("cell_id").to_pylist()) if cells else [],
            "rejects": sorted(store.rejects.to_arrow().column("cell_id").to_pylist()),
            "schema": str(cells.schema.remove_metadata()) if cells else None,
            "model": store.model_info(),
        }


def test_schemas_in_files_are_the_tables(tmp_path):
    uri = tmp_path / "atlas"
    obs, emb = _cells(5)
    _put(uri, "one", obs, emb)
    with Store.open(uri) as store:
        assert store.datasets_table.schema == S.schema(S.DATASETS)
        assert store.rejects.schema == S.schema(S.REJECTS)
        cells = store.cells.schema
        for field in S.schema(S.CELLS, DIM):
            assert cells.field(field.name) == field
        row = store.dataset("one")
        assert set(row) == set(S.core_names(S.DATASETS))
        for entry in S.spec(S.DATASETS)["fields"]:
            if not entry["nullable"]:
                assert row[entry["name"]] is not None, entry["name"]
        meta = {k.decode() for k in cells.metadata}
        assert meta == set(S.spec(S.CELLS)["metadata"])


def test_open_missing_store_is_one_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        Store.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a uceindex store"):
        Store.open(tmp_path / "empty")
    assert not (tmp_path / "nothing").exists()


def test_life_cycle(tmp_path):
    store = Store.open(tmp_path / "atlas", create=True)
    assert store.cells is None and store.model_info() is None
    assert store.count() == 0 and list(store.datasets().columns) == S.core_names(S.DATASETS)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.count()
    with Store.open(tmp_path / "atlas") as again:
        assert again.datasets_table is not None


def test_default_uri_from_environment(tmp_path, monkeypatch):
    from uceindex.store import default_store_uri

    monkeypatch.setenv("UCEINDEX_STORE", str(tmp_path / "env_atlas"))
    assert default_store_uri() == str(tmp_path / "env_atlas")
    with Store.open(create=True) as store:
        assert store.uri == str(tmp_path / "env_atlas")


def test_write_read_and_binding(tmp_path):
    uri = tmp_path / "atlas"
    obs, emb = _cells(30)
    emb[3] = np.nan
    emb[4] = 0
    result = _put(uri, "one", obs, emb)
    assert (result["n_embedded"], result["n_rejected"]) == (28, 2)
    with Store.open(uri) as store:
        assert store.model_info() == {
            "model_name": "model-a",
            "model_fingerprint": "fp1",
            "embedding_dim": DIM,
        }
        assert store.count() == 28 and store.count("one") == 28
        vectors = np.stack(
            store.cells.to_arrow().column(S.EMBEDDING).to_numpy(zero_copy_only=False)
        )
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
        reasons = dict(
            zip(*store.rejects.to_arrow().select(["obs_name", "reason"]).to_pydict().values())
        )
        assert reasons == {
            "c3": "non-finite values in embeddings",
            "c4": "zero vector in embeddings",
        }
        assert store.datasets()["status"].tolist() == ["complete"]
    before = _state(uri)
    other, emb2 = _cells(5, prefix="x")
    with pytest.raises(StoreError, match="fingerprint fp1.*fingerprint fp2"):
        _put(uri, "two", other, emb2, fingerprint="fp2")
    with pytest.raises(StoreError, match="8-d"):
        ingest_embeddings(uri, "two", other, emb2[:, :4], "human", "model-a", "fp1")
    assert _state(uri) == before


def test_same_content_is_a_no_op_unless_replace(tmp_path):
    uri = tmp_path / "atlas"
    obs, emb = _cells(10)
    _put(uri, "one", obs, emb)
    assert _put(uri, "one", obs, emb)["action"] == "skipped"
    assert _put(uri, "again", obs, emb)["action"] == "skipped"  # same bytes under another id
    with pytest.raises(StoreError, match="other content"):
        _put(uri, "one", obs.iloc[:5], emb[:5])
    assert _put(uri, "one", obs.iloc[:5], emb[:5], replace=True)["action"] == "replaced"
    with Store.open(uri) as store:
        assert store.count() == 5 and len(store.datasets()) == 1


def test_readers_see_a_snapshot_until_refresh(tmp_path):
    uri = tmp_path / "atlas"
    obs, emb = _cells(10)
    _put(uri, "one", obs, emb)
    with Store.open(uri) as reader:
        versions = reader.versions()
        other, emb2 = _cells(7, seed=1, prefix="y")
        _put(uri, "two", other, emb2)
        assert reader.count() == 10 and len(reader.datasets()) == 1
        assert reader.versions() == versions
        reader.refresh()
        assert reader.count() == 17 and reader.complete_dataset_ids() == ["one", "two"]


def test_columns_are_the_union_and_clashes_become_text(tmp_path):
    uri = tmp_path / "atlas"
    obs1, emb1 = _cells(4, batch=[1, 2, 3, 4], score=[1, 2, 3, 4], only1=["a"] * 4)
    _put(uri, "one", obs1, emb1)
    obs2, emb2 = _cells(3, seed=2, prefix="d", batch=["x", "y", "z"], score=[0.5, 1.5, 2.5])
    obs2["percent.mito"] = [0.1, 0.2, 0.3]
    result = _put(uri, "two", obs2, emb2)
    assert any("batch" in w and "string" in w for w in result["warnings"])
    assert any("percent_mito" in w for w in result["warnings"])
    with Store.open(uri) as store:
        schema = store.cells.schema
        assert schema.field("batch").type == pa.string()
        assert schema.field("score").type == pa.float64()
        rows = {r["cell_id"]: r for r in store.cells.to_arrow().drop([S.EMBEDDING]).to_pylist()}
        assert rows["one/c0"]["batch"] == "1" and rows["one/c0"]["score"] == 1.0
        assert rows["two/d0"]["only1"] is None and rows["two/d2"]["percent_mito"] == 0.3
        one = export_dataset(store, "one")
        two = export_dataset(store, "two")
    assert list(one.obs.columns) == ["batch", "score", "only1"]
    assert list(two.obs.columns) == ["batch", "score", "percent.mito"]  # original names back
    assert json.loads(store_settings(uri, "two"))["renamed_columns"] == {
        "percent.mito": "percent_mito"
    }


def store_settings(uri, dataset_id):
    with Store.open(uri) as store:
        return store.dataset(dataset_id)["settings"]


def test_mixed_python_types_are_stored_as_text(tmp_path):
    obs, emb = _cells(4, mixed=pd.Series([1, "a", 2.5, None], dtype=object).to_numpy())
    result = _put(tmp_path / "atlas", "one", obs, emb)
    assert any("mixed" in w for w in result["warnings"])
    with Store.open(tmp_path / "atlas") as store:
        values = dict(
            zip(*store.cells.to_arrow().select(["cell_id", "mixed"]).to_pydict().values())
        )
    assert values == {"one/c0": "1", "one/c1": "a", "one/c2": "2.5", "one/c3": None}


def test_refused_python_input_leaves_an_empty_store_unbound(tmp_path):
    uri = tmp_path / "atlas"
    obs, emb = _cells(3)
    emb[:] = np.nan  # nothing can be stored
    with pytest.raises(Exception, match="none of the 3 cells"):
        _put(uri, "one", obs, emb)
    with Store.open(uri) as store:
        assert store.cells is None and store.model_info() is None and store.datasets().empty


def test_list_and_export_take_a_path_or_a_store(tmp_path):
    uri = tmp_path / "atlas"
    obs, emb = _cells(6)
    _put(uri, "one", obs, emb)
    listed = uceindex.list_datasets(uri)
    assert listed["cells"] == 6 and [d["dataset_id"] for d in listed["datasets"]] == ["one"]
    with Store.open(uri) as store:
        assert uceindex.list_datasets(store) == listed
        from_store = uceindex.export_dataset(store, "one")
    from_path = uceindex.export_dataset(uri, "one")
    np.testing.assert_array_equal(from_path.obsm["X_uce"], from_store.obsm["X_uce"])
    summary = uceindex.export(uri, "one", tmp_path / "one.h5ad")
    assert summary["cells"] == 6 and summary["embedding_dim"] == DIM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas", "one.h5ad"]  # no scratch
