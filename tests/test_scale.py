"""Ingest on Ray: the same rows as one process, exactly once across worker and driver kills."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import lance
import numpy as np
import pandas as pd
import pytest
import ray
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import Killed, cli_killed_at, kill_at
from uceindex.ingestion import IngestInterrupted, ingest
from uceindex.scale import RAY_KILL_ENV, ingest_on_ray
from uceindex.store import Store
from uceindex.store.schema import EMBEDDING

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (start-up is ~10 s): the library uses a Ray it finds."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


def _obsm_file(tmp_path, n=100, dim=8, name="pre") -> Path:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb[[3, 41, 42, 77]] = np.nan  # rejects in chunks 0, 2, 3 (of 20 cells)
    obs = pd.DataFrame(
        {"group": pd.Categorical(rng.choice(["a", "b"], n)), "v": rng.normal(size=n)},
        index=[f"cell{i}" for i in range(n)],
    )
    path = tmp_path / f"{name}.h5ad"
    ad.AnnData(X=sp.csr_matrix((n, 3), dtype=np.float32), obs=obs, obsm={"E": emb}).write_h5ad(path)
    return path


def _state(uri) -> dict:
    """Everything a user could see in a store, bit for bit (embeddings included)."""
    with Store.open(uri) as store:
        frame = store.datasets().drop(columns=["created_at", "updated_at", "source_path"])
        return {
            "datasets": frame.astype(object).where(frame.notna(), None).to_dict("records"),
            "cells": store.cells.to_arrow().sort_by("cell_id").to_pylist(),
            "rejects": store.rejects.to_arrow().sort_by("cell_id").to_pylist(),
            "schema": store.cells.schema,
        }


@contextmanager
def _one_torch_thread():
    """Torch's CPU kernels round by their thread count; a Ray task of one CPU has one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


OBSM = dict(species="human", embedding_key="E", chunk_cells=20)


@pytest.fixture
def clean(tmp_path):
    """A pre-embedded file and its single-process ingest."""
    path = _obsm_file(tmp_path)
    ingest(path, store=tmp_path / "clean", **OBSM)
    return path, _state(tmp_path / "clean")


def test_embedding_key_on_ray_equals_one_process_bit_for_bit(clean, tmp_path):
    path, expected = clean
    uri = tmp_path / "ray"
    report = ingest_on_ray(path, store=uri, workers=2, **OBSM)
    (result,) = report.datasets
    assert (result.action, result.n_embedded, result.n_rejected) == ("ingested", 96, 4)
    assert _state(uri) == expected
    # One Append per step of two chunks, stamped; readers never saw a step in part.
    txns = lance.dataset(str(uri / "cells.lance")).get_transactions(10)
    stamps = [t.transaction_properties.get("uceindex.chunks") for t in txns if t]
    assert {"0-1", "2-3", "4-4"} <= set(stamps)
    again = ingest_on_ray(path, store=uri, workers=2, **OBSM)
    assert again.datasets[0].action == "skipped"


def test_model_path_on_ray_equals_one_process(small_pbmc, tiny_model, tmp_path):
    a = small_pbmc.copy()
    x = a.X.tolil()
    x[[5, 21, 47], :] = 0  # three rejects
    a.X = sp.csr_matrix(x)
    paths = [tmp_path / "one.h5ad", tmp_path / "two.h5ad"]
    a[:36].copy().write_h5ad(paths[0])
    a[36:].copy().write_h5ad(paths[1])
    opts = dict(species="human", model=tiny_model, chunk_cells=16)
    report = ingest_on_ray(paths, store=tmp_path / "ray", workers=2, **opts)
    assert [d.n_rejected for d in report.datasets] == [2, 1]
    ray_state = _state(tmp_path / "ray")
    ingest(paths, store=tmp_path / "clean", **opts)  # torch on every core here: rounding differs
    clean = _state(tmp_path / "clean")
    got, want = (np.array([r.pop(EMBEDDING) for r in s["cells"]]) for s in (ray_state, clean))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert ray_state == clean  # everything but the embeddings' last bits
    # Same seed, same model, same chunks and one torch thread, as a Ray task has: bit for bit.
    with _one_torch_thread():
        ingest(paths, store=tmp_path / "one", **opts)
    assert _state(tmp_path / "ray") == _state(tmp_path / "one")


def test_a_dead_worker_commits_nothing_of_its_step_then_the_rerun_resumes(clean, tmp_path):
    path, expected = clean
    uri = tmp_path / "ray"
    os.environ[RAY_KILL_ENV] = "2"  # the task of chunk 2 writes its fragments, then dies
    try:
        with pytest.raises(IngestInterrupted) as info:
            ingest_on_ray(path, store=uri, workers=2, **OBSM)
    finally:
        del os.environ[RAY_KILL_ENV]
    message = str(info.value)
    assert "chunk 2 (rows 40-60)" in message and "run the same command again" in message
    assert "\n" not in message
    with Store.open(uri) as store:
        assert store.dataset("pre")["status"] == "running"
        assert store.count("pre") + store.count_rejects("pre") == 40  # step 0: chunks 0, 1
    data = list((uri / "cells.lance" / "data").iterdir())
    assert len(data) > len(lance.dataset(str(uri / "cells.lance")).get_fragments())  # orphans
    report = ingest_on_ray(path, store=uri, workers=2, **OBSM)
    assert report.datasets[0].action == "resumed"
    assert _state(uri) == expected


@pytest.mark.parametrize("point", ["begin:0", "rejects:1", "cells:1", "rejects:3", "finish:0"])
def test_driver_killed_at_any_point_then_resumed(point, clean, tmp_path, monkeypatch):
    path, expected = clean

    kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        ingest_on_ray(path, store=tmp_path / "ray", workers=2, **OBSM)
    monkeypatch.undo()
    report = ingest_on_ray(path, store=tmp_path / "ray", workers=2, **OBSM)
    assert report.datasets[0].action in ("resumed", "ingested")
    assert _state(tmp_path / "ray") == expected


def test_cli_sigkill_of_the_driver_then_the_same_command_resumes(clean, small_pbmc, tmp_path):
    path, expected = clean
    uri = tmp_path / "atlas"
    args = ["ingest", str(path), "--species", "human", "--embedding-key", "E"]
    args += ["--chunk-cells", "20", "--workers", "2", "--json", "--store", str(uri)]
    killed = cli_killed_at(args, "cells:3", timeout=180)  # after the commit of chunks 2-3
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    with Store.open(uri) as store:
        assert store.dataset("pre")["status"] == "running"
        assert store.count("pre") + store.count_rejects("pre") == 80  # chunks 0-3
    resumed = runner.invoke(app, args)  # in this process: uses the module's Ray
    assert resumed.exit_code == 0, resumed.output
    assert '"action": "resumed"' in resumed.stdout
    assert _state(uri) == expected
    listed = runner.invoke(app, ["datasets", "--store", str(uri), "--json"])
    assert '"status": "complete"' in listed.stdout


def test_a_ray_address_that_does_not_answer_fails_in_seconds(tmp_path):
    path = _obsm_file(tmp_path)
    started = time.perf_counter()
    result = runner.invoke(
        app,
        ["ingest", str(path), "--species", "human", "--embedding-key", "E"]
        + ["--store", str(tmp_path / "atlas"), "--ray", "127.0.0.1:1"],
    )
    assert time.perf_counter() - started < 10
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output and "ray start --head" in result.output
    assert not (tmp_path / "atlas").exists()
    both = runner.invoke(app, ["ingest", str(path), "--workers", "2", "--ray", "127.0.0.1:1"])
    assert both.exit_code == 1 and "either --workers" in both.output
