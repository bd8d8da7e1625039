"""`annotate --ontology` and `match --ontology-level` over real stores: CSV, .h5ad, JSON."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import read_pbmc
from uceindex.errors import QueryError
from uceindex.ingestion import ingest_embeddings
from uceindex.search import annotate, match

runner = CliRunner()
DIM = 8


@pytest.fixture(scope="module")
def pbmc_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onto")
    a = read_pbmc()
    ingest_embeddings(tmp / "atlas", "pbmc", a.obs, a.obsm["X_pca"], "human", "pca", "pca")
    query = a[:40].copy()
    query.write_h5ad(tmp / "query.h5ad")
    return tmp / "atlas", tmp / "query.h5ad"


def test_cli_ontology_in_csv_h5ad_and_json(pbmc_store, tmp_path):
    uri, query = pbmc_store
    args = ["annotate", str(query), "--store", str(uri), "--embedding-key", "X_pca", "--k", "10"]
    result = runner.invoke(app, [*args, "--ontology", "--out", str(tmp_path / "p.csv"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cell_ontology"].startswith("CL v") and summary["min_score"] == 0.5
    assert sum(t["cells"] for t in summary["terms"]) == 40
    csv = pd.read_csv(tmp_path / "p.csv", index_col="cell")
    for column in ("predicted_term_id", "predicted_term_label", "term_score", "term_path"):
        assert column in csv.columns
    assert csv["cell_ontology"].iloc[0] == summary["cell_ontology"]
    truth = read_pbmc().obs["cell_type"][:40]
    mono = csv[(truth == "CD14+ Monocyte").to_numpy() & (csv["predicted"] == "CD14+ Monocyte")]
    assert (mono["predicted_term_id"].isin(["CL:0001054", "CL:0000576"])).all() and len(mono)
    assert (csv["term_score"].dropna() >= 0.5).all()
    out = runner.invoke(app, [*args, "--ontology", "--out", str(tmp_path / "p.h5ad")])
    assert out.exit_code == 0, out.output and "Cell Ontology terms" in out.stdout
    back = ad.read_h5ad(tmp_path / "p.h5ad")
    assert "cell_type_predicted_term_id" in back.obs and "cell_type_term_path" in back.obs
    assert back.uns["cell_type_annotation"]["cell_ontology"] == summary["cell_ontology"]
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "plain.csv")])
    assert plain.exit_code == 0 and "predicted_term_id" not in pd.read_csv(tmp_path / "plain.csv")


def _monocyte_store(tmp_path):
    """Classical and non-classical monocytes on top of each other, B cells far away."""
    rng = np.random.default_rng(0)
    centre = np.eye(DIM)[0] * 5
    x = np.vstack(
        [centre + rng.normal(0, 0.1, (20, DIM)), np.eye(DIM)[1] * 5 + rng.normal(0, 0.1, (10, DIM))]
    )
    labels = ["classical monocyte", "CD16+ Monocyte"] * 10 + ["B cell"] * 10
    obs = pd.DataFrame({"cell_type": labels}, index=[f"h{i}" for i in range(30)])
    ingest_embeddings(tmp_path / "atlas", "human", obs, x, "human", "pca", "pca")
    return tmp_path / "atlas", centre


def test_a_split_vote_rolls_up_to_the_common_ancestor(tmp_path):
    uri, centre = _monocyte_store(tmp_path)
    frame = annotate(uri, centre[None, :], k=20, ontology=True, novelty=False, min_score=0.6)
    row = frame.iloc[0]
    assert row["confidence"] == pytest.approx(0.5, abs=0.05)  # the plain vote: a coin toss
    assert (row["predicted_term_id"], row["predicted_term_label"]) == ("CL:0000576", "monocyte")
    assert row["term_score"] == pytest.approx(1.0)
    assert row["term_path"].split(";")[-1] == "CL:0000000"
    assert "CL:0000766" in row["term_path"]  # myeloid leukocyte on the way up
    strict = annotate(uri, centre[None, :], k=20, ontology=True, novelty=False, min_score=1.0)
    assert strict.iloc[0]["predicted_term_id"] == "CL:0000576"


def test_ontology_needs_mapped_labels(tmp_path):
    obs = pd.DataFrame(
        {"cell_type": ["cluster 1", "cluster 2"] * 5}, index=[f"c{i}" for i in range(10)]
    )
    ingest_embeddings(tmp_path / "atlas", "ds", obs, np.eye(10, DIM) + 0.1, "human", "pca", "pca")
    with pytest.raises(QueryError, match="no stored cell has a Cell Ontology term.*--label-map"):
        annotate(tmp_path / "atlas", np.ones((1, DIM)), k=3, ontology=True)
    query = ad.AnnData(obs=pd.DataFrame(index=["q"]))
    query.obsm["X"] = np.ones((1, DIM), dtype=np.float32)
    query.write_h5ad(tmp_path / "q.h5ad")
    args = ["annotate", str(tmp_path / "q.h5ad"), "--store", str(tmp_path / "atlas")]
    result = runner.invoke(app, [*args, "--embedding-key", "X", "--k", "3", "--ontology"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "uceindex labels" in result.output


def test_match_at_an_ontology_level(tmp_path):
    uri, centre = _monocyte_store(tmp_path)
    rng = np.random.default_rng(1)
    xm = np.vstack(
        [centre + rng.normal(0, 0.1, (6, DIM)), np.eye(DIM)[1] * 5 + rng.normal(0, 0.1, (4, DIM))]
    )
    mouse = pd.DataFrame(
        {"cell_type": ["Ly6c mono"] * 6 + ["B"] * 4}, index=[f"m{i}" for i in range(10)]
    )
    ingest_embeddings(uri, "mouse", mouse, xm, "mouse", "pca", "pca")
    query = ad.AnnData(obs=mouse.copy())
    query.obsm["X"] = xm.astype(np.float32)
    levels = ["myeloid cell", "CL:0000542"]  # a label and an id (lymphocyte)
    result = match(
        uri, query, species="mouse", against="human", embedding_key="X", k=10, ontology_level=levels
    )
    best = result.best().set_index("query_label")["reference_label"].to_dict()
    assert best == {"Ly6c mono": "myeloid cell", "B": "lymphocyte"}
    assert result.cells.attrs["ontology_level"] == "CL:0000763;CL:0000542"
    query.write_h5ad(tmp_path / "mouse.h5ad")
    args = ["match", str(tmp_path / "mouse.h5ad"), "--species", "mouse", "--against", "human"]
    args += ["--store", str(uri), "--embedding-key", "X", "--k", "10", "--json"]
    cli = runner.invoke(
        app, [*args, "--ontology-level", "myeloid cell", "--ontology-level", "lymphocyte"]
    )
    assert cli.exit_code == 0, cli.output
    rows = {r["query_label"]: r["reference_label"] for r in json.loads(cli.stdout)["table"]}
    assert rows == {"Ly6c mono": "myeloid cell", "B": "lymphocyte"}
    bad = runner.invoke(app, [*args, "--ontology-level", "myeloid"])
    assert (
        bad.exit_code == 1
        and "ontology level 'myeloid' is not a current Cell Ontology" in bad.output
    )


def test_ontology_with_a_where_that_leaves_no_mapped_cell(tmp_path):
    obs = pd.DataFrame(
        {"cell_type": ["cluster 1", "B cell"] * 5}, index=[f"c{i}" for i in range(10)]
    )
    ingest_embeddings(tmp_path / "atlas", "ds", obs, np.eye(10, DIM) + 0.1, "human", "pca", "pca")
    where = "cell_type = 'cluster 1'"
    with pytest.raises(QueryError, match=f"no stored cell where {where} has a Cell Ontology"):
        annotate(tmp_path / "atlas", np.ones((1, DIM)), k=1, ontology=True, where=where)
    assert annotate(tmp_path / "atlas", np.ones((1, DIM)), k=3, ontology=True).iloc[0][
        "predicted_term_id"
    ] in ("CL:0000236", None)
