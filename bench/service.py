"""HTTP service under load: POST /search (k=50) from a second process, at 1, 8 and 32
concurrent clients, beside the same searches through the Python API in one process.

    python bench/service.py --quick          # 50,000 cells, a minute or two
    python bench/service.py --json out.json  # 1,000,000 cells (about 5 GB on disk)

The load is bounded (REQUESTS per level, at most SECONDS) and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from _common import (
    base_parser,
    command_line,
    machine,
    machine_line,
    print_table,
    timer,
    utc_now,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 1280
K = 50
CONCURRENCY = (1, 8, 32)
CLUSTERS = 100
CHUNK = 100_000  # cells written per data set


def synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Unit vectors in overlapping clusters, with a cell_type label per cluster."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(CLUSTERS, DIM)).astype(np.float32)
    which = rng.integers(0, CLUSTERS, n)
    emb = centres[which] + rng.normal(scale=1.0, size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    obs = pd.DataFrame(
        {"cell_type": [f"type{c}" for c in which]}, index=[f"c{seed}_{i}" for i in range(n)]
    )
    return obs, emb


def build_store(path: Path, n: int) -> float:
    from uceindex.ingestion import ingest_embeddings
    from uceindex.search.index import refresh_index
    from uceindex.store import Store

    with timer() as t:
        for part, start in enumerate(range(0, n, CHUNK)):
            obs, emb = synthetic(min(CHUNK, n - start), seed=part + 1)
            ingest_embeddings(str(path), f"part{part}", obs, emb, "human", "bench", "bench-fp")
        with Store.open(str(path)) as store:
            refresh_index(store)
    return t.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`uceindex serve` on the store, on a free port, with more `options` (e.g. --max-queries)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            *options,
        ],  # fmt: skip
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not start")


def load(url: str, queries: np.ndarray, clients: int, requests: int, seconds: float) -> dict:
    """`clients` threads, each with its own connection, share `requests` searches."""
    latencies: list[float] = []
    errors = [0]
    next_query = iter(range(requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(next_query, None)
                if i is None:
                    return
                body = {"vectors": [queries[i % len(queries)].tolist()], "k": K}
                start = time.perf_counter()
                status = http.post("/search", json=body).status_code
                with lock:
                    latencies.append(time.perf_counter() - start)
                    errors[0] += status != 200

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    with timer() as t:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors[0],
        "requests_per_s": round(len(lat) / t.seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def in_process(store: Path, queries: np.ndarray, requests: int) -> dict:
    from uceindex.search.neighbours import knn
    from uceindex.store import Store

    with Store.open(str(store)) as st:
        knn(st.cells, queries[:1], K)  # warm up (index and caches)
        lat = []
        for i in range(requests):
            start = time.perf_counter()
            knn(st.cells, queries[i % len(queries)][None, :], K)
            lat.append(time.perf_counter() - start)
    lat = np.array(lat) * 1000
    return {
        "requests": len(lat),
        "requests_per_s": round(len(lat) / (lat.sum() / 1000), 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def main() -> None:
    args = base_parser(__doc__).parse_args()
    n = 50_000 if args.quick else 1_000_000
    requests = 100 if args.quick else 400
    seconds = 60 if args.quick else 120
    _, queries = synthetic(1000, seed=999)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        store = Path(tmp) / "atlas"
        build_s = build_store(store, n)
        proc, url = start_server(store)
        try:
            load(url, queries, 1, 5, 30)  # warm up the service
            levels = [load(url, queries, c, requests, seconds) for c in CONCURRENCY]
        finally:
            proc.terminate()
            proc.wait(30)
        api = in_process(store, queries, min(requests, 200))
    m = machine()
    rows = [
        [
            lv["clients"],
            lv["requests"],
            lv["errors"],
            lv["requests_per_s"],
            lv["p50_ms"],
            lv["p99_ms"],
            round(lv["requests_per_s"] / api["requests_per_s"], 2),
        ]
        for lv in levels
    ]
    rows.append(
        [
            "Python API, 1 process",
            api["requests"],
            0,
            api["requests_per_s"],
            api["p50_ms"],
            api["p99_ms"],
            1.0,
        ]
    )
    print(
        f"{command_line()}\n{machine_line(m)}\n{utc_now()}\n{n:,} cells x {DIM}-d, store + index built in {build_s:.0f} s"
    )
    print_table(
        f"POST /search, k={K}, {n:,} cells",
        [
            "clients",
            "requests",
            "errors",
            "requests/s",
            "p50 ms",
            "p99 ms",
            "vs Python API (req/s)",
        ],
        rows,
    )
    write_json(
        args.json,
        {
            "command": command_line(),
            "machine": m,
            "date": utc_now(),
            "cells": n,
            "build_s": build_s,
            "levels": levels,
            "python_api": api,
        },
    )


if __name__ == "__main__":
    main()
