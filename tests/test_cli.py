"""The command line: embed and models, as a user runs them."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import PBMC

runner = CliRunner()


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


def test_models_info(tiny_model_dir, tiny_model):
    result = runner.invoke(app, ["models", "info", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["fingerprint"] == tiny_model.fingerprint and info["species"]["human"] == 700
    assert info["sizes"] == "custom"  # not the published 4-layer sizes, whatever the file name
    text = runner.invoke(app, ["models", "info", str(tiny_model_dir)])
    assert "species: mouse" in text.output and "400 genes" in text.output
