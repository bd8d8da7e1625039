"""Shared fixtures: a tiny model in the official formats and the shipped PBMC data."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from uceindex.model.tiny import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PBMC = ROOT / "data" / "pbmc700.h5ad"
MOUSE_GENES = [f"Gm{i}" for i in range(400)]


def cli_killed_at(args: list[str], point: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`uceindex ARGS` in a subprocess that SIGKILLs itself at the writer's `point` (KILL_ENV,
    e.g. "cells:2"): what a kill -9 mid-ingest leaves behind."""
    from uceindex.store import writer

    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, writer.KILL_ENV: point},
        capture_output=True,
        timeout=timeout,
    )


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing in uceindex catches a BaseException."""


def kill_at(monkeypatch, point: str) -> None:
    """The writer's test hook (KILL_ENV) kills the process at `point` ("cells:2"); in-process,
    the kill raises Killed instead of ending pytest. Only the writer's kill is replaced."""
    from uceindex.store import writer

    def kill() -> None:
        raise Killed

    monkeypatch.setenv(writer.KILL_ENV, point)
    monkeypatch.setattr(writer, "sigkill_self", kill)


class Payload:
    """What a crafted pickle carries: unpickling it runs a function (creates `marker`)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def read_pbmc() -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(PBMC)


@pytest.fixture(scope="session")
def pbmc_genes() -> list[str]:
    return list(read_pbmc().var_names)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, pbmc_genes) -> Path:
    """Human: the PBMC genes but the last 65 (so some stay unmatched); mouse: made-up genes."""
    root = tmp_path_factory.mktemp("tiny_model")
    return write_tiny_model(root, {"human": pbmc_genes[:700], "mouse": MOUSE_GENES})


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from uceindex.model.load import UCEModel

    return UCEModel(tiny_model_dir)


@pytest.fixture
def pbmc() -> ad.AnnData:
    return read_pbmc()


@pytest.fixture
def small_pbmc() -> ad.AnnData:
    """60 cells: enough to exercise every path quickly."""
    a = read_pbmc()
    return a[np.r_[0:60]].copy()
