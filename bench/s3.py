"""Object storage against local disk: the same ingest, index and annotation, as ratios.

    flock /tmp/uceindex-bench.lock python bench/s3.py [--quick] [--no-cold] [--json out.json]

The object store is moto's S3 server on 127.0.0.1 (an in-memory S3 API, no network), so the
ratio measures what going through an S3 API costs (requests, HTTP, signing, no local page
cache), not a cloud's latency: a real bucket adds its round trips on top. Data: synthetic
1280-d unit vectors in 100 overlapping clusters (bench/search.py's), pre-embedded
(`ingest_embeddings`), then `refresh_index`, `annotate` of held-out queries (k = 50) on a
freshly opened store, `prewarm_index` and `annotate` again on the kept-open store; with the
S3 requests of each step and moto's cost of one range GET (it grows with the object).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

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
from search import CLUSTERS, synthetic

from uceindex.ingestion import ingest_embeddings
from uceindex.search import annotate, prewarm_index, refresh_index
from uceindex.store import Store

# -- settings (full, quick) -----------------------------------------------------------------
CELLS = (200_000, 50_000)
QUERIES = (1000, 300)
K = 50
DATASET_CELLS = 50_000  # cells per ingested data set
BUCKET = "uce"


def moto(tmp: Path):
    """moto's S3 on a free loopback port with one bucket; returns (server, storage options)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(
        Bucket=BUCKET
    )
    return server, {"endpoint": endpoint, "region": "us-east-1", **keys}


class Requests(logging.Handler):
    """Counts the requests moto's server answers (werkzeug's access log), by kind."""

    def __init__(self):
        super().__init__()
        self.count = {"all": 0, "index": 0}

    def emit(self, record):
        self.count["all"] += 1
        self.count["index"] += "/_indices/" in record.getMessage()

    def take(self) -> dict:
        """The counts since the last take."""
        got, self.count = self.count, {"all": 0, "index": 0}
        return got


REQUESTS = Requests()


def moto_range_get_ms(endpoint_options: dict, sizes_mb=(1, 256)) -> dict:
    """moto's time for one 64 KiB range GET from objects of these sizes: it grows with the
    object (moto reads the whole object per request), so it calibrates what follows."""
    import boto3

    keys = {k: endpoint_options[k] for k in ("aws_access_key_id", "aws_secret_access_key")}
    client = boto3.client(
        "s3", endpoint_url=endpoint_options["endpoint"], region_name="us-east-1", **keys
    )
    out = {}
    for mb in sizes_mb:
        client.put_object(Bucket=BUCKET, Key=f"calibrate{mb}", Body=b"x" * (mb << 20))
        with timer() as t:
            for _ in range(5):
                client.get_object(Bucket=BUCKET, Key=f"calibrate{mb}", Range="bytes=0-65535")[
                    "Body"
                ].read()
        out[f"{mb}MiB"] = t.seconds / 5 * 1000
        client.delete_object(Bucket=BUCKET, Key=f"calibrate{mb}")
    return out


def run(uri: str, options: dict | None, x, labels, q, cold: bool = True) -> dict:
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"c{v:03d}" for v in range(CLUSTERS)])[labels]},
        index=pd.Index([f"cell{i}" for i in range(len(x))]),
    )
    REQUESTS.take()
    with timer() as t_ingest:
        for j, s in enumerate(range(0, len(x), DATASET_CELLS)):
            part = slice(s, s + DATASET_CELLS)
            ingest_embeddings(
                uri, f"part{j}", obs[part], x[part], "human", "synthetic", "v1",
                storage_options=options,
            )  # fmt: skip
    requests = {"ingest": REQUESTS.take()}
    with timer() as t_index:
        refresh_index(uri, storage_options=options)
    requests["index"] = REQUESTS.take()
    t_cold = None
    if cold:
        with timer() as t_cold:  # a URI: the store is opened for the call, caches start empty
            annotate(uri, q, k=K, novelty=False, storage_options=options)
        requests["annotate_cold"] = REQUESTS.take()
    with Store.open(uri, storage_options=options) as store:  # kept open, as `serve` keeps it
        with timer() as t_prewarm:
            prewarm_index(store)  # `serve --prewarm`
        requests["prewarm"] = REQUESTS.take()
        with timer() as t_annotate:
            frame = annotate(store, q, k=K, novelty=False)
        requests["annotate"] = REQUESTS.take()
    return {
        "requests": requests,
        "annotate_cold_s": t_cold.seconds if t_cold else None,
        "prewarm_s": t_prewarm.seconds,
        "ingest_s": t_ingest.seconds,
        "ingest_cells_s": len(x) / t_ingest.seconds,
        "index_s": t_index.seconds,
        "annotate_s": t_annotate.seconds,
        "annotate_cells_s": len(q) / t_annotate.seconds,
        "predicted": int(frame["predicted"].notna().sum()),
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--no-cold",
        action="store_true",
        help="skip annotate on a freshly opened store (on moto, ~1 s a request at 200k cells)",
    )
    opts = parser.parse_args()
    pick = 1 if opts.quick else 0
    n, n_q = CELLS[pick], QUERIES[pick]
    result = {"benchmark": "s3", "command": command_line(), "date": utc_now(), "machine": machine()}
    print(f"{result['date']}  {machine_line(result['machine'])}, {n:,} cells, {n_q} queries")
    x, labels = synthetic(n, seed=1)
    q, _ = synthetic(n_q, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        server, options = moto(Path(tmp))
        werkzeug = logging.getLogger("werkzeug")
        werkzeug.setLevel(logging.INFO)
        werkzeug.addHandler(REQUESTS)
        werkzeug.propagate = False
        try:
            result["moto_range_get_ms"] = moto_range_get_ms(options)
            cold = not opts.no_cold
            result["local"] = run(str(Path(tmp) / "atlas"), None, x, labels, q, cold)
            shutil.rmtree(Path(tmp) / "atlas")
            result["s3"] = run(f"s3://{BUCKET}/atlas", options, x, labels, q, cold)
        finally:
            server.stop()
    local, s3, cold = result["local"], result["s3"], not opts.no_cold
    print_table(
        f"S3 (moto on 127.0.0.1) against local disk, {n:,} cells",
        ["step", "local", "S3", "S3 / local (time)"],
        [
            ["ingest (pre-embedded)", f"{local['ingest_cells_s']:,.0f} cells/s",
             f"{s3['ingest_cells_s']:,.0f} cells/s", f"{s3['ingest_s'] / local['ingest_s']:.2f}x"],
            ["refresh_index", f"{local['index_s']:.1f} s", f"{s3['index_s']:.1f} s",
             f"{s3['index_s'] / local['index_s']:.2f}x"],
            [f"annotate {n_q} queries, k={K}, store opened per call",
             f"{n_q / local['annotate_cold_s']:,.0f} cells/s", f"{n_q / s3['annotate_cold_s']:,.0f} cells/s",
             f"{s3['annotate_cold_s'] / local['annotate_cold_s']:.2f}x"] if cold else
            [f"annotate {n_q} queries, store opened per call", "not run (--no-cold)", "", ""],
            ["prewarm_index (serve --prewarm)", f"{local['prewarm_s']:.1f} s", f"{s3['prewarm_s']:.1f} s",
             f"{s3['prewarm_s'] / local['prewarm_s']:.2f}x"],
            [f"annotate {n_q} queries, k={K}, kept open, prewarmed", f"{local['annotate_cells_s']:,.0f} cells/s",
             f"{s3['annotate_cells_s']:,.0f} cells/s",
             f"{s3['annotate_s'] / local['annotate_s']:.2f}x"],
        ],
    )  # fmt: skip
    print_table(
        "S3 requests per step (all / to index files)",
        ["step", "requests"],
        [[step, f"{c['all']:,} / {c['index']:,}"] for step, c in s3["requests"].items()],
    )
    cal = result["moto_range_get_ms"]
    print(
        "moto, one 64 KiB range GET: "
        + ", ".join(f"{ms:.0f} ms from a {size} object" for size, ms in cal.items())
    )
    write_json(opts.json, result)


if __name__ == "__main__":
    main()
