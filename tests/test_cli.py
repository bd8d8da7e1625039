"""The command line: embed and models as a user runs them, and what every command shares:\nclosed choices checked before any work, a --help without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import PBMC

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_embed_writes_obsm_and_prints_a_summary(tmp_path, tiny_model_dir, small_pbmc):
    src = tmp_path / "in.h5ad"
    small_pbmc.write_h5ad(src)
    out = tmp_path / "out.h5ad"
    result = runner.invoke(
        app, ["embed", str(src), str(out), "--species", "human", "--model-dir", str(tiny_model_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "cells embedded" in result.output and "60 of 60" in result.output
    written = ad.read_h5ad(out)
    assert written.obsm["X_uce"].shape == (60, 16)
    assert np.allclose(np.linalg.norm(written.obsm["X_uce"], axis=1), 1, atol=1e-5)


def test_embed_json(tmp_path, tiny_model_dir, small_pbmc):
    src = tmp_path / "in.h5ad"
    small_pbmc.write_h5ad(src)
    out = tmp_path / "out.h5ad"
    result = runner.invoke(
        app, ["embed", str(src), str(out), "--model-dir", str(tiny_model_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 60 and summary["output"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.h5ad"]  # no scratch


def test_errors_are_one_line_and_nothing_is_written(tmp_path, tiny_model_dir):
    out = tmp_path / "out.h5ad"
    result = runner.invoke(
        app,
        ["embed", str(PBMC), str(out), "--species", "axolotl", "--model-dir", str(tiny_model_dir)],
    )
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown species 'axolotl'")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_corrupt_file(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(PBMC.read_bytes()[:5000])
    result = runner.invoke(
        app, ["embed", str(bad), str(tmp_path / "o.h5ad"), "--model-dir", str(tiny_model_dir)]
    )
    assert (
        result.exit_code == 1
        and "cannot read" in result.stderr
        and "Traceback" not in result.output
    )


def test_missing_model_dir(tmp_path):
    result = runner.invoke(
        app, ["embed", str(PBMC), str(tmp_path / "o.h5ad"), "--model-dir", str(tmp_path / "none")]
    )
    assert result.exit_code == 1 and "uceindex models download 4layer" in result.stderr


def _same_output(got, want):
    assert np.array_equal(got.obsm["X_uce"], want.obsm["X_uce"], equal_nan=True)
    assert got.obs.equals(want.obs) and got.var.equals(want.var)
    assert (got.X != want.X).nnz == 0
    assert json.dumps(dict(got.uns["uce"]), default=str, sort_keys=True) == json.dumps(
        dict(want.uns["uce"]), default=str, sort_keys=True
    )


def test_embed_streams_the_file_and_maps_ensembl_ids_as_ingest_does(
    tmp_path, tiny_model_dir, tiny_model, small_pbmc, monkeypatch
):
    """One reading path: the file is streamed (never read whole), its genes matched as ingest
    matches them; for a file of symbols the output is what the in-memory embed writes."""
    import gzip

    import uceindex
    from uceindex.io import ensembl

    src = tmp_path / "in.h5ad"
    small_pbmc.write_h5ad(src)
    want = small_pbmc.copy()
    uceindex.embed(want, "human", model=tiny_model)

    def whole(*args, **kwargs):
        raise AssertionError("embed read the whole file")

    monkeypatch.setattr(ad, "read_h5ad", whole)
    args = ["embed", "--species", "human", "--model-dir", str(tiny_model_dir), "--json"]
    result = runner.invoke(app, [args[0], str(src), str(tmp_path / "out.h5ad"), *args[1:]])
    assert result.exit_code == 0, result.output
    monkeypatch.undo()
    _same_output(ad.read_h5ad(tmp_path / "out.h5ad"), want)

    # The same cells with Ensembl ids only: mapped through the GENCODE table, same embeddings.
    ids = [f"ENSG{i:011d}" for i in range(small_pbmc.n_vars)]
    with gzip.open(tmp_path / "genes_homo_sapiens.csv.gz", "wt") as f:
        for i, (gene, symbol) in enumerate(zip(ids, small_pbmc.var_names)):
            f.write(f"{gene},{symbol},{i},1000,protein_coding\n")
    monkeypatch.setattr(ensembl, "tables_dir", lambda: tmp_path)
    by_id = small_pbmc.copy()
    by_id.var_names = ids
    by_id.write_h5ad(tmp_path / "ids.h5ad")
    result = runner.invoke(
        app, [args[0], str(tmp_path / "ids.h5ad"), str(tmp_path / "o2.h5ad"), *args[1:]]
    )
    assert result.exit_code == 0, result.output
    assert "Ensembl ids" in json.loads(result.stdout)["genes"]["symbols_from"]
    got = ad.read_h5ad(tmp_path / "o2.h5ad")
    assert np.array_equal(got.obsm["X_uce"], want.obsm["X_uce"], equal_nan=True)


def test_models_info(tiny_model_dir, tiny_model):
    result = runner.invoke(app, ["models", "info", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["fingerprint"] == tiny_model.fingerprint and info["species"]["human"] == 700
    assert info["sizes"] == "custom"  # not the published 4-layer sizes, whatever the file name
    text = runner.invoke(app, ["models", "info", str(tiny_model_dir)])
    assert "species: mouse" in text.output and "400 genes" in text.output


def test_models_tiny_with_several_species_lets_match_run_offline(tmp_path, small_pbmc):
    src = tmp_path / "pbmc60.h5ad"
    small_pbmc.write_h5ad(src)
    model = tmp_path / "tiny"
    args = ["models", "tiny", str(model), "--genes-from", str(src)]
    made = runner.invoke(app, [*args, "--species", "human", "--species", "mouse"])
    assert made.exit_code == 0 and "for human, mouse" in made.output, made.output
    info = json.loads(runner.invoke(app, ["models", "info", str(model), "--json"]).stdout)
    assert info["species"] == {"human": 765, "mouse": 765}
    store = ["--store", str(tmp_path / "atlas"), "--model-dir", str(model)]
    ingested = runner.invoke(app, ["ingest", str(src), "--species", "human", *store])
    assert ingested.exit_code == 0, ingested.output
    matched = runner.invoke(
        app,
        ["match", str(src), "--species", "mouse", "--against", "human", "--label", "cell_type"]
        + [*store, "--json"],
    )
    assert matched.exit_code == 0, matched.output
    assert json.loads(matched.stdout)["cells"] == 60
    bad = runner.invoke(app, [*args, "--species", "chicken"])
    assert bad.exit_code == 2 and "human" in bad.output  # the training species are offered


# -- closed choices are checked before anything is read -------------------------------------------

UCE = ["auto", "float32", "bfloat16"]
CHOICES = {  # "command option": (arguments with a bad value, the allowed values)
    "embed --precision": (["embed", "{missing}", "{tmp}/o.h5ad", "--precision", "bf17"], UCE),
    "embed --mode": (
        ["embed", "{missing}", "{tmp}/o.h5ad", "--mode", "slow"],
        ["fast", "reference"],
    ),
    "ingest --precision": (
        ["ingest", "{missing}", "--store", "{tmp}/a", "--precision", "fp16"],
        UCE,
    ),
    "species add --precision": (
        ["species", "add", "chicken", "--proteome", "{missing}", "--taxonomy-id", "9031"]
        + ["--model-dir", "{tmp}/model", "--precision", "fp8"],
        ["float32", "float16", "bfloat16"],
    ),
    "models download name": (
        ["models", "download", "5layer", "--dir", "{tmp}/m"],
        ["4layer", "33layer"],
    ),
    "index --kind": (
        ["index", "--store", "{tmp}/atlas", "--kind", "hnsw"],
        ["auto", "flat", "ivf_flat", "ivf_hnsw_sq"],
    ),
    "sql --format": (
        ["sql", "--store", "{tmp}/atlas", "--format", "xml", "SELECT 1"],
        ["table", "csv", "json", "parquet"],
    ),
}


@pytest.mark.parametrize("choice", sorted(CHOICES))
def test_a_bad_choice_is_a_usage_error_before_anything_is_read(tmp_path, choice):
    args, allowed = CHOICES[choice]
    option = choice.split()[-1]
    missing = tmp_path / "missing.h5ad"  # read first, it would be exit 1 "no such file"
    args = [a.format(missing=missing, tmp=tmp_path) for a in args]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [
        line for line in result.stderr.splitlines() if f"Invalid value for '{option}'" in line
    ]
    assert all(f"'{value}'" in line for value in allowed), line
    assert not list(tmp_path.iterdir())  # nothing written


def test_help_loads_neither_torch_nor_lancedb():
    code = (
        "import sys; from typer.testing import CliRunner; from cli.main import app; "
        "assert CliRunner().invoke(app, ['embed', '--help']).exit_code == 0; "
        "print([m for m in ('torch', 'lancedb') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_match_summary_counts_every_cell_of_a_query_label():
    """One row per query label, its best reference label, and all its cells (a missing label
    included: its cells may land on several reference labels)."""
    from uceindex.search.matching import best_matches, match_table

    query = np.array(["a", "a", "a", None, None, None], dtype=object)
    predicted = np.array(["x", "x", "y", "x", "y", "y"], dtype=object)
    best = best_matches(match_table(query, predicted, np.ones(6)))
    assert best[["query_label", "reference_label", "n_cells"]].values.tolist() == [
        ["a", "x", 3],
        [None, "y", 3],
    ]


def test_a_slow_rate_is_not_shown_as_zero():
    from cli.render import per_second

    assert per_second(0.31) == "0.31" and per_second(4.0) == "4" and per_second(1234.4) == "1,234"
