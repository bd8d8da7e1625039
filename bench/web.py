"""The web page: time from upload to table, and the page's first-load size.

    python bench/web.py --quick                                # the demo file only
    python bench/web.py                                        # and 20,000 cells on 1,000,000
    python bench/web.py --cells 5000 --store-cells 100000      # a size a shared machine allows

"Upload to table" is what the page does: POST /jobs/annotate with the .h5ad, poll
GET /jobs/{id} every 0.5 s (the page's POLL_MS) until done, GET /jobs/{id}/result; the clock
runs from the first byte sent to the last byte of the result. The demo file is the 175-cell
query of `make demo` (every 4th shipped PBMC, obsm X_pca) against the other 525; the large
upload is synthetic 1280-d cells (obsm X_emb) against a synthetic store (bench/service.py's).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
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
from service import build_store, start_server, synthetic

POLL_S = 0.5
REPEATS = 3


def upload_to_table(url: str, path: Path, fields: dict) -> tuple[float, int]:
    """Seconds from upload to the result, the way the page polls; and the predictions."""
    with httpx.Client(base_url=url, timeout=600) as http:
        start = time.perf_counter()
        with open(path, "rb") as f:
            job = http.post("/jobs/annotate", files={"file": (path.name, f)}, data=fields)
        job.raise_for_status()
        job_id = job.json()["id"]
        while (state := http.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
            time.sleep(POLL_S)
        if state["state"] != "done":
            raise RuntimeError(f"job {state['state']}: {state['error']}")
        result = http.get(f"/jobs/{job_id}/result").json()
        return time.perf_counter() - start, len(result["predictions"])


def first_load_kb(url: str) -> dict:
    """Bytes the page's first load fetches (index.html and what it links), and plotly.js,
    which only the charting pages fetch."""
    html = httpx.get(url + "/").text
    assets = re.findall(r'(?:href|src)="(web/[^"]+)"', html)
    page = len(html.encode()) + sum(len(httpx.get(f"{url}/{a}").content) for a in assets)
    plotly = len(httpx.get(url + "/web/lib/plotly.min.js").content)
    return {
        "assets": ["index.html", *assets],
        "page_kb": round(page / 1024, 1),
        "plotly_kb": round(plotly / 1024, 1),
        "with_plotly_kb": round((page + plotly) / 1024, 1),
    }


def demo_store(tmp: Path) -> tuple[Path, Path]:
    import anndata as ad

    from uceindex.ingestion import ingest

    pbmc = ad.read_h5ad(ROOT / "data" / "pbmc700.h5ad")
    query = pbmc.obs_names[::4]
    pbmc[query].copy().write_h5ad(tmp / "query.h5ad")
    pbmc[~pbmc.obs_names.isin(query)].copy().write_h5ad(tmp / "reference.h5ad")
    ingest(tmp / "reference.h5ad", species="human", store=str(tmp / "demo"), embedding_key="X_pca")
    return tmp / "demo", tmp / "query.h5ad"


def synthetic_query(path: Path, n: int) -> Path:
    import anndata as ad

    obs, emb = synthetic(n, seed=4242)
    adata = ad.AnnData(obs=obs)
    adata.obsm["X_emb"] = emb
    adata.write_h5ad(path)
    return path


def timed(url: str, path: Path, fields: dict, repeats: int) -> dict:
    times, n = [], 0
    for _ in range(repeats):
        seconds, n = upload_to_table(url, path, fields)
        times.append(seconds)
    return {
        "cells": n,
        "upload_mb": round(path.stat().st_size / 2**20, 1),
        "best_s": round(min(times), 2),
        "median_s": round(float(np.median(times)), 2),
        "runs": len(times),
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--cells", type=int, default=20_000, help="cells of the large upload")
    parser.add_argument(
        "--store-cells", type=int, default=1_000_000, help="cells of the store it goes to"
    )
    args = parser.parse_args()
    figures: dict = {}
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        store, query = demo_store(tmp)
        proc, url = start_server(store)
        try:
            figures["first_load"] = first_load_kb(url)
            upload_to_table(url, query, {"k": "15", "embedding_key": "X_pca"})  # warm up
            demo = timed(url, query, {"k": "15", "embedding_key": "X_pca"}, REPEATS)
        finally:
            proc.terminate()
            proc.wait(30)
        figures["demo"] = demo
        rows.append(["demo query (make demo)", demo["cells"], 525, demo["upload_mb"]])
        rows[-1] += [demo["best_s"], demo["median_s"]]
        if not args.quick:
            big = tmp / "big"
            build_s = build_store(big, args.store_cells)
            path = synthetic_query(tmp / "upload.h5ad", args.cells)
            # serve's default --max-queries (10,000) would refuse the 20,000-cell upload
            proc, url = start_server(big, "--max-queries", str(args.cells))
            try:
                large = timed(url, path, {"k": "50", "embedding_key": "X_emb"}, 1)
            finally:
                proc.terminate()
                proc.wait(30)
            figures["large"] = {**large, "store_cells": args.store_cells, "build_s": build_s}
            rows.append(
                [
                    "synthetic 1280-d",
                    large["cells"],
                    args.store_cells,
                    large["upload_mb"],
                    large["best_s"],
                    large["median_s"],
                ]
            )
    m = machine()
    print(f"{command_line()}\n{machine_line(m)}\n{utc_now()}, load {m['load_avg_1m']}")
    print_table(
        "upload to table (POST /jobs/annotate, poll, GET result)",
        ["upload", "cells", "store cells", "MiB", "best s", "median s"],
        rows,
    )
    fl = figures["first_load"]
    print_table(
        "first load of the page",
        ["what", "KB"],
        [
            [" + ".join(fl["assets"]), fl["page_kb"]],
            ["plotly.min.js (Look page only)", fl["plotly_kb"]],
            ["with plotly.js", fl["with_plotly_kb"]],
        ],
    )
    if args.json:
        write_json(args.json, {"machine": m, "command": command_line(), **figures})


if __name__ == "__main__":
    main()
