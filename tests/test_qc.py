"""`uceindex qc` over real stores: a healthy one (the PBMC PCA split in two data sets) raises
no flag; a collapsed data set and a batch-separated one each raise theirs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import read_pbmc
from uceindex import qc
from uceindex.errors import QueryError, StoreError
from uceindex.ingestion import ingest, ingest_embeddings
from uceindex.quality.report import MAX_SAMPLE
from uceindex.store import Store

runner = CliRunner()
TERMS = {"CD4+/CD25 T Reg": "CL:0000624", "CD4+/CD45RO+ Memory": "CL:0000624"}  # CD4 T: one term


def _pbmc():
    pbmc = read_pbmc()
    obs = pbmc.obs[["cell_type"]].astype(str)
    obs["cell_type_ontology_term_id"] = [TERMS.get(c, f"CL:{c}") for c in obs["cell_type"]]
    return obs, pbmc.obsm["X_pca"].astype(np.float64)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    """The PBMC PCA split at random into two data sets: the same cells, mixed by design."""
    obs, x = _pbmc()
    half = np.random.default_rng(0).random(len(obs)) < 0.5
    uri = str(tmp_path_factory.mktemp("healthy") / "atlas")
    ingest_embeddings(uri, "left", obs[half], x[half], "human", "pca", "pca-50")
    ingest_embeddings(uri, "right", obs[~half], x[~half], "human", "pca", "pca-50")
    return uri


@pytest.fixture(scope="module")
def flawed(tmp_path_factory):
    """100-d: `base` (half the PBMCs in dims 0-49, three cells rejected), `apart` (the other
    half in dims 50-99: no neighbour in common) and `collapsed` (200 cells near one vector)."""
    obs, x = _pbmc()
    rng = np.random.default_rng(1)
    half = rng.random(len(obs)) < 0.5
    wide = np.zeros((len(obs), 100))
    wide[half, :50], wide[~half, 50:] = x[half], x[~half]
    uri = str(tmp_path_factory.mktemp("flawed") / "atlas")
    reasons = np.full(half.sum(), None, dtype=object)
    reasons[:3] = "fewer than 25 genes"
    ingest_embeddings(
        uri, "base", obs[half], wide[half], "human", "pca", "pca-100", reasons=reasons
    )
    ingest_embeddings(uri, "apart", obs[~half], wide[~half], "human", "pca", "pca-100")
    one = rng.normal(size=100)
    near = one + rng.normal(scale=0.02, size=(200, 100))
    collapsed = pd.DataFrame(
        {"cell_type": rng.choice(["T cell", "B cell"], 200)}, index=[f"c{i}" for i in range(200)]
    )
    ingest_embeddings(uri, "collapsed", collapsed, near, "human", "pca", "pca-100")
    return uri


def _flags(report) -> set[tuple]:
    return {(f["dataset_id"], f["flag"]) for f in report["flags"]}


def test_a_healthy_atlas_raises_no_flag(healthy):
    report = qc(healthy, k=10)
    assert report["flags"] == []
    assert report["sample"]["cells"] == 700 and report["sample"]["per_dataset"].keys() == {
        "left",
        "right",
    }
    for d in report["datasets"]:
        assert abs(d["cosine"]["mean"]) < 0.1
        assert 0.8 < d["mixing"]["score"] < 1.2 and 0.8 < d["mixing"]["score_all_cells"] < 1.2
        coherence = d["coherence"]["cell_type"]
        assert coherence["share"] > 2 * coherence["chance"]
    # the CL term merges two CD4 labels: at least as coherent, and their pair is no confusion
    overall = report["overall"]
    by_term = overall["coherence"]["cell_type_ontology_term_id"]["share"]
    assert by_term >= overall["coherence"]["cell_type"]["share"]
    assert ["CL:0000624", "CL:0000624"] not in [
        c["labels"] for c in overall["confusions"]["cell_type_ontology_term_id"]
    ]
    assert {"CD4+/CD25 T Reg", "CD4+/CD45RO+ Memory"} in [
        set(c["labels"]) for c in overall["confusions"]["cell_type"]
    ]


def test_collapse_and_poor_mixing_are_flagged_where_they_are(flawed):
    report = qc(flawed, k=10)
    flags = _flags(report)
    assert ("collapsed", "collapse") in flags and ("apart", "poor_mixing") in flags
    assert ("base", "collapse") not in flags and ("apart", "collapse") not in flags
    assert (None, "collapse") not in flags  # the atlas as a whole is not collapsed
    by_id = {d["dataset_id"]: d for d in report["datasets"]}
    assert by_id["collapsed"]["cosine"]["mean"] > 0.99
    assert by_id["apart"]["mixing"]["score"] < 0.1
    assert by_id["base"]["rejects"] == {"fewer than 25 genes": 3}
    assert by_id["base"]["n_rejected"] == 3 and by_id["base"]["model_fingerprint"] == "pca-100"
    assert all(len(f["message"].splitlines()) == 1 for f in report["flags"])


def test_the_sample_is_bounded_balanced_and_seeded(flawed):
    report = qc(flawed, sample=150, k=5, seed=3)
    assert report["sample"]["per_dataset"] == {"apart": 50, "base": 50, "collapsed": 50}
    assert report["sample"]["cells"] == 150 and report["sample"]["requested"] == 150
    assert qc(flawed, sample=150, k=5, seed=3) == report
    assert qc(flawed, sample=150, k=5, seed=4) != report
    with pytest.raises(QueryError, match=f"between 2 and {MAX_SAMPLE:,}"):
        qc(flawed, sample=MAX_SAMPLE + 1)


def test_one_dataset_is_its_row_of_the_full_report(flawed):
    full = qc(flawed, k=8)
    one = qc(flawed, k=8, dataset="apart")
    assert [d["dataset_id"] for d in one["datasets"]] == ["apart"]
    assert one["datasets"][0] == next(d for d in full["datasets"] if d["dataset_id"] == "apart")
    assert _flags(one) == {("apart", "poor_mixing")}


def test_unknown_dataset_empty_store_and_unknown_label_are_one_line(flawed, tmp_path):
    with pytest.raises(QueryError, match="no data set 'nope' .* it has apart, base, collapsed"):
        qc(flawed, dataset="nope")
    with pytest.raises(QueryError, match="no label column 'tissue'"):
        qc(flawed, label="tissue")
    Store.open(tmp_path / "empty", create=True).close()
    with pytest.raises(StoreError, match="has no cells yet"):
        qc(tmp_path / "empty")
    for args in (["--dataset", "nope", "--store", flawed], ["--store", str(tmp_path / "empty")]):
        result = runner.invoke(app, ["qc", *args])
        assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1


def test_the_ingest_record_of_an_embedded_file(small_pbmc, tiny_model, tmp_path):
    path = tmp_path / "pbmc30.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small_pbmc[:30].copy().write_h5ad(path)
    uri = tmp_path / "atlas"
    ingest(path, species="human", store=uri, model=tiny_model, seed=7)
    (d,) = qc(uri)["datasets"]
    assert d["genes_matched"] == 700 and d["n_genes"] == 765 and d["seed"] == 7
    assert d["model_fingerprint"] == tiny_model.fingerprint and d["embedding_source"] == "uce"


def test_cli_table_json_and_plot(flawed, tmp_path):
    out = tmp_path / "qc.png"
    result = runner.invoke(app, ["qc", "--store", flawed, "--k", "8", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "flag: collapsed: mean pairwise cosine" in result.stderr
    assert "flag: apart: mixing score" in result.stderr
    assert "base: rejected 3: fewer than 25 genes" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(app, ["qc", "--store", flawed, "--json", "--sample", "300"])
    data = json.loads(result.stdout)
    assert data["sample"]["cells"] == 300 and {"collapsed", "apart"} <= {
        f["dataset_id"] for f in data["flags"]
    }
    bad = runner.invoke(app, ["qc", "--store", flawed, "--sample", "1"])
    assert bad.exit_code == 2
