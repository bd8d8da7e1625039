"""Cell Ontology terms at ingest and `uceindex labels`: real labels, CELLxGENE ids, label maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import read_pbmc
from uceindex.ingestion import ingest_embeddings
from uceindex.ontology import MAPPING, TERM, TERM_LABEL
from uceindex.sql import SqlSession

runner = CliRunner()


def _labels(uri, *args) -> dict:
    result = runner.invoke(app, ["labels", "--store", str(uri), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def pbmc_store(tmp_path_factory):
    uri = tmp_path_factory.mktemp("labels") / "atlas"
    a = read_pbmc()
    report = ingest_embeddings(uri, "pbmc", a.obs, a.obsm["X_pca"], "human", "pca", "pca")
    return uri, report


def test_ingest_maps_every_pbmc700_label(pbmc_store):
    uri, report = pbmc_store
    assert report["labels"]["mapped_cells"] == 700 and report["labels"]["unmapped"] == []
    assert report["labels"]["cell_ontology"].startswith("CL v")
    with SqlSession(uri) as sql:
        rows = sql.execute(
            f"SELECT {TERM}, {TERM_LABEL}, count(*) AS n FROM cells GROUP BY 1, 2 ORDER BY n DESC"
        ).table.to_pylist()
    assert rows[1] == {TERM: "CL:0001054", TERM_LABEL: "CD14-positive monocyte", "n": 129}


def test_labels_command_lists_labels_terms_counts(pbmc_store):
    data = _labels(pbmc_store[0])
    assert (data["cells"], data["mapped_cells"], data["terms"]) == (700, 700, 10)
    cd8 = next(r for r in data["labels"] if r["label"] == "CD8+ Cytotoxic T")
    assert cd8 == {
        "label": "CD8+ Cytotoxic T",
        "term_id": "CL:0000794",
        "term_label": "CD8-positive, alpha-beta cytotoxic T cell",
        "mapping": "alias",
        "cells": 54,
    }
    text = runner.invoke(app, ["labels", "--store", str(pbmc_store[0])], env={"COLUMNS": "200"})
    assert text.exit_code == 0 and "CL:0000794" in text.stdout and "CL v" in text.stdout


def _cellxgene_file(path):
    """A CELLxGENE-style file: CL labels in cell_type, ids beside them, one obsolete id, one
    unknown id, and a cell with no id but a free-text label."""
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {
            "cell_type": ["classical monocyte", "B cell", "native cell", "B cell", "Dendritic"],
            "cell_type_ontology_term_id": pd.Categorical(
                ["CL:0000860", "CL:0000236", "CL:0000003", "CL:1234567", None]
            ),
        },
        index=[f"c{i}" for i in range(5)],
    )
    import anndata as ad

    a = ad.AnnData(np.zeros((5, 3), dtype=np.float32), obs=obs)
    a.obsm["X_pca"] = rng.standard_normal((5, 8)).astype(np.float32)
    a.write_h5ad(path)
    return path


def test_cellxgene_ids_kept_checked_and_reported(tmp_path):
    uri = tmp_path / "atlas"
    path = _cellxgene_file(tmp_path / "cxg.h5ad")
    args = ["ingest", str(path), "--species", "human", "--embedding-key", "X_pca"]
    result = runner.invoke(app, [*args, "--store", str(uri), "--json"])
    assert result.exit_code == 0, result.output
    with SqlSession(uri) as sql:
        rows = sql.execute(f"SELECT cell_id, {TERM}, {MAPPING} FROM cells ORDER BY cell_id").table
    got = {r["cell_id"].split("/")[1]: (r[TERM], r[MAPPING]) for r in rows.to_pylist()}
    assert got["c0"] == ("CL:0000860", "obs")
    assert got["c2"] == ("CL:0000000", "obs (obsolete CL:0000003 replaced by CL:0000000)")
    assert got["c3"] == (None, "unknown CL id CL:1234567 in obs")
    assert got["c4"] == ("CL:0000451", "alias")  # no id: its label
    report = json.loads(result.stdout)["datasets"][0]
    assert report["labels"]["unmapped"] == [
        {"label": "B cell", "reason": "unknown CL id CL:1234567 in obs", "cells": 1}
    ]
    assert any("1 cells have no Cell Ontology term" in w for w in report["warnings"])


def test_unmapped_labels_listed_then_mapped_with_a_label_map(tmp_path):
    uri = tmp_path / "atlas"
    obs = pd.DataFrame(
        {"cell_type": ["Cluster 7"] * 3 + ["CD14+ Monocyte"] * 2 + [None]},
        index=[f"c{i}" for i in range(6)],
    )
    x = np.random.default_rng(1).standard_normal((6, 8))
    ingest_embeddings(uri, "ds", obs, x, "human", "pca", "pca")
    data = _labels(uri)
    assert data["unmapped"] == [
        {"label": "Cluster 7", "reason": "no CL term for this label", "cells": 3},
        {"label": None, "reason": "no label", "cells": 1},
    ]
    label_map = tmp_path / "labels.csv"
    label_map.write_text("label,term_id\nCluster 7,CL:0000576\n")
    preview = _labels(uri, "--label-map", str(label_map))
    assert preview["unmapped_cells"] == 1 and preview["mapped_cells"] == 5
    # and stored by ingest --label-map
    report = ingest_embeddings(
        uri, "ds", obs, x, "human", "pca", "pca", replace=True, label_map=label_map
    )
    assert report["labels"]["unmapped_cells"] == 1
    assert _labels(uri, "--dataset", "ds")["labels"][0]["mapping"] == "label map"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "label,term_id\nA,CL:9999999\n",
            "labels.csv line 2: CL:9999999 is not a Cell Ontology id",
        ),
        ("label,term_id\nA,CL:0000576\nA,CL:0000236\n", "label 'A' is mapped twice"),
        ("name,term_id\nA,CL:0000576\n", "has no label column"),
    ],
)
def test_label_map_errors_are_one_line(pbmc_store, tmp_path, text, message):
    label_map = tmp_path / "labels.csv"
    label_map.write_text(text)
    result = runner.invoke(
        app, ["labels", "--store", str(pbmc_store[0]), "--label-map", str(label_map)]
    )
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_labels_of_a_store_without_labels(tmp_path):
    uri = tmp_path / "atlas"
    obs = pd.DataFrame({"tissue": ["lung"] * 4}, index=[f"c{i}" for i in range(4)])
    ingest_embeddings(uri, "ds", obs, np.eye(4, 8), "human", "pca", "pca")
    result = runner.invoke(app, ["labels", "--store", str(uri)])
    assert result.exit_code == 1 and "has no cell_type labels" in result.output


def test_labels_of_an_unknown_data_set(pbmc_store):
    result = runner.invoke(app, ["labels", "--store", str(pbmc_store[0]), "--dataset", "nope"])
    assert (
        result.exit_code == 1 and "no data set 'nope' in the store (it has: pbmc)" in result.output
    )
