"""`uceindex qc` on a pre-embedded store of 200,000 cells (20,000 with --quick).

Writes the store once into --store-dir through `ingest_embeddings` (20 data sets of 1280-d
unit vectors: 12 cell types around random centres, every fourth data set shifted as a batch
effect would, one data set collapsed onto one vector), then times the command as a user
runs it, in a fresh process each (imports included): the default sample (5,000 cells), the
largest (20,000) and `--dataset` of one data set; peak RSS of each child.

    flock /tmp/uceindex-bench.lock python bench/qc.py [--quick] [--json PATH] [--store-dir DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import (
    ROOT,
    base_parser,
    command_line,
    machine,
    machine_line,
    print_table,
    utc_now,
    write_json,
)

CELLS, QUICK_CELLS = 200_000, 20_000
DATASETS = 20
DIM = 1280  # the official models' width
TYPES = 12
SEED = 0


def build_store(uri: str, n: int) -> float:
    """The synthetic atlas; returns the seconds it took to write."""
    from uceindex.ingestion import ingest_embeddings

    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((TYPES, DIM)).astype(np.float32)
    per = n // DATASETS
    started = time.perf_counter()
    for d in range(DATASETS):
        kind = rng.integers(0, TYPES, per)
        emb = centres[kind] + rng.standard_normal((per, DIM)).astype(np.float32) * 0.8
        if d % 4 == 3:  # a batch effect: the whole data set moved
            emb += rng.standard_normal(DIM).astype(np.float32) * 1.5
        if d == DATASETS - 1:  # collapsed: every cell near one vector
            emb = centres[0] * 10 + emb * 0.05
        obs = pd.DataFrame(
            {"cell_type": [f"type {k}" for k in kind]}, index=[f"c{i}" for i in range(per)]
        )
        ingest_embeddings(uri, f"ds{d:02d}", obs, emb, "human", "synthetic", "synthetic-1280")
    return time.perf_counter() - started


def run_qc(uri: str, *args: str) -> dict:
    """`uceindex qc --json` in a fresh process: wall seconds, peak RSS (polled), the flags."""
    import psutil

    with tempfile.TemporaryFile("w+") as out:  # not a pipe: a full one would block the child
        started = time.perf_counter()
        child = psutil.Popen(
            [sys.executable, "-m", "cli.main", "qc", "--store", uri, "--json", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        peak, cpu = 0, 0.0
        while child.poll() is None:
            try:
                peak = max(peak, child.memory_info().rss)
                times = child.cpu_times()
                cpu = times.user + times.system  # the child's own CPU: what load does not inflate
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if child.returncode:
            raise SystemExit(f"uceindex qc {' '.join(args)} failed ({child.returncode})")
        out.seek(0)
        report = json.load(out)
    return {
        "args": " ".join(args) or "(defaults)",
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 1),
        "peak_rss_mib": round(peak / 2**20),
        "sampled": report["sample"]["cells"],
        "flags": sorted({f"{f['dataset_id']}:{f['flag']}" for f in report["flags"]}),
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--store-dir", default="/tmp/uceindex-bench-qc", help="where the store is")
    args = parser.parse_args()
    n = QUICK_CELLS if args.quick else CELLS
    uri = str(Path(args.store_dir) / f"atlas_{n}")
    info = machine()
    print(f"{utc_now()}  {machine_line(info)}, load {info['load_avg_1m']}")
    wrote = None
    if not Path(uri).exists():
        wrote = build_store(uri, n)
        print(f"  wrote {n:,} cells in {wrote:.0f} s")
    runs = [run_qc(uri), run_qc(uri, "--sample", "20000"), run_qc(uri, "--dataset", "ds03")]
    print_table(
        f"uceindex qc on {n:,} cells ({DATASETS} data sets, {DIM}-d)",
        ["options", "wall s", "CPU s", "peak RSS MiB", "sampled", "flags"],
        [
            [r["args"], r["seconds"], r["cpu_s"], r["peak_rss_mib"], r["sampled"], len(r["flags"])]
            for r in runs
        ],
    )
    end_load = round(os.getloadavg()[0], 2)
    print(f"load at the end {end_load}; flags: {runs[0]['flags']}")
    write_json(
        args.json,
        {
            "command": command_line(),
            "date": utc_now(),
            "machine": info,
            "load_avg_1m_end": end_load,
            "cells": n,
            "store_write_s": wrote,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
