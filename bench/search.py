"""Search benchmark: uceindex's k-NN search and annotation beside FAISS and hnswlib.

    python bench/search.py [--quick] [--json out.json] [--sizes 200000,1000000]
                           [--hnsw-max 200000] [--lance-hnsw]

Per size, in one run, on the same stored cells and held-out query cells:
- uceindex: cells written by `ingest_embeddings`, the index chosen by `refresh_index`
  (IVF_FLAT above index.FLAT_MAX_ROWS), searched with the nprobes rule, plus a sweep of
  nprobes; `annotate` for the batch figure (search + label fetch + vote + novelty; the
  novelty calibration is timed apart, it runs once per store version);
- FAISS IVF-Flat (nlist = sqrt(n), nprobe swept), FAISS HNSW and hnswlib (M=32,
  efConstruction=200, ef swept): HNSW builds take minutes on 2 cores, so they run only at
  sizes <= --hnsw-max; --lance-hnsw adds Lance's IVF_HNSW_SQ there too.
A peer is reported at the cheapest setting of its sweep with recall@50 >= 0.95 (its
"equal recall" point). Batch throughput = query cells/s of search + similarity-weighted
vote over all queries in one call; single-query p50 = one query per call (FAISS with one
OpenMP thread, docs/lance.md §5). Recall@50 is against exact inner product.

Data: unit vectors in 1280-d, 100 overlapping clusters (a shared direction plus Gaussian
noise), labels = cluster ids.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import (
    base_parser,
    best_of,
    command_line,
    machine,
    machine_line,
    peak_rss_mb,
    print_table,
    timer,
    utc_now,
    write_json,
)

from uceindex.ingestion import ingest_embeddings
from uceindex.search import annotate
from uceindex.search import index as uindex
from uceindex.search.neighbours import knn
from uceindex.search.vote import weighted_vote
from uceindex.store import Store

# -- settings --------------------------------------------------------------------------------
DIM = 1280
CLUSTERS = 100
SHARED = 3.0  # weight of the direction all clusters share (clusters overlap)
NOISE = 1.0  # norm of the Gaussian noise around a cluster centre (unit-norm centre)
K = 50
TARGET_RECALL = 0.95
SIZES = (200_000, 1_000_000)
QUICK_SIZES = (25_000,)
QUERIES = 1000  # held-out query cells per size (quick: 300)
SINGLE = 100  # single-query calls for the p50 (quick: 30)
HNSW_MAX = 200_000  # HNSW peers only up to this size (10-40 min each at 1M on 2 cores)
HNSW_M, HNSW_EFC = 32, 200
HNSW_EF = (64, 128, 256)
IVF_NPROBE = (4, 8, 16, 32, 64)
LANCE_NPROBES = (0.5, 1, 2, 4)  # uceindex sweep: multiples of the nprobes its rule picks
THREADS = 2
SEED = 0
DATASET_CELLS = 200_000  # cells per ingested data set


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, DIM) float32 unit rows and their cluster labels; same centres for every seed."""
    g = np.random.default_rng(SEED)
    shared = g.standard_normal(DIM).astype(np.float32)
    centres = g.standard_normal((CLUSTERS, DIM)).astype(np.float32) + SHARED * shared
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLUSTERS, n)
    x = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 50_000):
        lab = labels[s : s + 50_000]
        noise = rng.standard_normal((len(lab), DIM), dtype=np.float32) * (NOISE / np.sqrt(DIM))
        block = centres[lab] + noise
        x[s : s + len(lab)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, labels


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top k by inner product, (nq, k), in row blocks."""
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    for s in range(0, len(x), 65_536):
        sims = q @ x[s : s + 65_536].T
        cand_s = np.concatenate([best_s, sims], axis=1)
        cand_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(s, s + sims.shape[1]), sims.shape)], axis=1
        )
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    return best_i


def row_of(cell_ids: np.ndarray) -> np.ndarray:
    """Stored cell ids "synthetic<j>/cell<i>" -> row i of the generated matrix (-1: none)."""
    return np.vectorize(lambda s: -1 if s is None else int(s.rsplit("/cell", 1)[1]))(cell_ids)


def timed(fn, repeats: int = 2):
    """(result of the first call, fastest of `repeats` calls in seconds)."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, min(seconds, best_of(fn, repeats - 1)) if repeats > 1 else seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def vote_rate(search, q: np.ndarray, names: np.ndarray) -> float:
    """Query cells/s of search(q) -> (sims, idx) plus the same weighted vote as annotate."""

    def run():
        sims, idx = search(q)
        weighted_vote(names[idx], sims)

    return len(q) / best_of(run, 2)


def p50_ms(search, q: np.ndarray) -> float:
    times = []
    for row in q:
        start = time.perf_counter()
        search(row[None, :])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def table_bytes(table) -> int:
    """The cells table on disk: its data files and the indexes it uses now (a replaced
    index stays on disk until Lance's cleanup, a week later by default: not counted)."""
    data = Path(table._dataset_uri) / "data"
    files = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    return files + sum(c.size_bytes or 0 for c in table.list_indices())


def cheapest(sweep: list[dict]) -> dict:
    """The first setting (sweeps go from cheap to costly) that reaches TARGET_RECALL, else the best."""
    for row in sweep:
        if row["recall"] >= TARGET_RECALL:
            return row
    return max(sweep, key=lambda r: r["recall"])


# -- engines ---------------------------------------------------------------------------------


def write_cells(x, labels, workdir: Path) -> float:
    """The cells into a new store with `ingest_embeddings`; returns the seconds taken."""
    n = len(x)
    uri = workdir / f"atlas_{n}"
    shutil.rmtree(uri, ignore_errors=True)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"c{v:03d}" for v in range(CLUSTERS)])[labels]},
        index=pd.Index([f"cell{i}" for i in range(n)]),
    )
    with timer() as t_write:  # data sets of <= DATASET_CELLS, as separate files would be
        for j, s in enumerate(range(0, n, DATASET_CELLS)):
            part = slice(s, s + DATASET_CELLS)
            ingest_embeddings(uri, f"synthetic{j}", obs[part], x[part], "human", "synthetic", "v1")
    return t_write.seconds


def bench_uceindex(n, write_s, q, truth, workdir: Path, n_single: int) -> list[dict]:
    uri = workdir / f"atlas_{n}"
    store = Store.open(uri)
    with timer() as t_build:
        report = uindex.refresh_index(store)
    table = store.cells
    state = report.state
    default = uindex.search_params(state, K)
    rows = []

    def lance(params):
        def search(block):
            found = knn(table, block, K, params=params)
            return found.similarity, found.cell_id

        return search

    knn(table, q, K, params=default)  # warm the page cache before anything is timed
    sweep = []
    settings = (
        [None]
        if default.kind == "flat"
        else sorted({max(1, round(f * default.nprobes)) for f in LANCE_NPROBES})
    )
    for nprobes in settings:
        params = uindex.search_params(state, K, nprobes=nprobes)
        found, seconds = timed(lambda p=params: knn(table, q, K, params=p))
        found_rows = row_of(found.cell_id)
        sweep.append(
            {
                "nprobes": nprobes,
                "recall": recall(found_rows, truth),
                "search_qps": len(q) / seconds,
            }
        )
    with timer() as t_cal:  # the first call calibrates novelty (once per store version)
        annotate(store, q[:10], k=K)
    annotate_rate = len(q) / best_of(lambda: annotate(store, q, k=K), 2)
    own = next(r for r in sweep if r["nprobes"] == default.nprobes)
    bytes_per_cell = table_bytes(table) / n
    base = {
        "engine": f"uceindex: Lance {state.kind.upper()}",
        "n": n,
        "build_s": t_build.seconds,
        "write_s": write_s,
        "bytes_per_cell": bytes_per_cell,
        "partitions": state.num_partitions,
        "calibration_s": t_cal.seconds,
    }
    rows.append(
        {
            **base,
            "setting": f"nprobes={default.nprobes} (rule)" if default.nprobes else "exact (rule)",
            "recall": own["recall"],
            "batch_qps": annotate_rate,
            "search_qps": own["search_qps"],
            "p50_ms": p50_ms(lance(default), q[:n_single]),
            "sweep": sweep,
        }
    )
    tuned = cheapest(sweep)
    if tuned["nprobes"] != default.nprobes:
        params = uindex.search_params(state, K, nprobes=tuned["nprobes"])
        rows.append(
            {
                **base,
                "setting": f"nprobes={tuned['nprobes']} (cheapest >= {TARGET_RECALL})",
                "recall": tuned["recall"],
                "batch_qps": len(q)
                / best_of(lambda: annotate(store, q, k=K, nprobes=tuned["nprobes"]), 2),
                "search_qps": tuned["search_qps"],
                "p50_ms": p50_ms(lance(params), q[:n_single]),
            }
        )
    store.close()
    return rows


def bench_lance_hnsw(n, q, truth, workdir: Path, n_single: int) -> dict:
    """Lance IVF_HNSW_SQ on the same store (the kind uceindex does not choose)."""
    store = Store.open(workdir / f"atlas_{n}")
    with timer() as t_build:
        report = uindex.refresh_index(store, kind="ivf_hnsw_sq")
    table = store.cells
    sweep = []
    for ef in (100, 200, 400):
        params = uindex.search_params(report.state, K, ef=ef)
        found, seconds = timed(lambda p=params: knn(table, q, K, params=p))
        rate = len(q) / seconds
        sweep.append(
            {
                "ef": ef,
                "recall": recall(row_of(found.cell_id), truth),
                "search_qps": rate,
                "params": params,
            }
        )
    best = cheapest(sweep)
    row = {
        "engine": "Lance IVF_HNSW_SQ (not chosen)",
        "n": n,
        "setting": f"ef={best['ef']}",
        "build_s": t_build.seconds,
        "bytes_per_cell": table_bytes(table) / n,
        "recall": best["recall"],
        "batch_qps": best["search_qps"],
        "search_qps": best["search_qps"],
        "p50_ms": p50_ms(lambda b: knn(table, b, K, params=best["params"]), q[:n_single]),
        "sweep": [{k: v for k, v in r.items() if k != "params"} for r in sweep],
    }
    store.close()
    return row


def bench_faiss_ivf(x, names, q, truth, workdir: Path, n_single: int) -> dict:
    import faiss

    n = len(x)
    nlist = int(round(np.sqrt(n)))
    faiss.omp_set_num_threads(THREADS)
    quantizer = faiss.IndexFlatIP(DIM)
    index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    with timer() as t_build:
        train = x[np.random.default_rng(SEED).choice(n, min(n, 256 * nlist), replace=False)]
        index.train(train)
        index.add(x)
    del train
    sweep = []
    for nprobe in IVF_NPROBE:
        index.nprobe = nprobe
        sims, idx = index.search(q, K)
        sweep.append({"nprobe": nprobe, "recall": recall(idx, truth)})
    best = cheapest(sweep)
    index.nprobe = best["nprobe"]
    setting = f"nlist={nlist} nprobe={best['nprobe']}"
    return faiss_figures(
        index, "faiss IVF-Flat", setting, t_build.seconds, best, sweep, names, q, workdir, n_single
    )


def bench_faiss_hnsw(x, names, q, truth, workdir: Path, n_single: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EFC
    with timer() as t_build:
        index.add(x)
    sweep = []
    for ef in HNSW_EF:
        index.hnsw.efSearch = ef
        _, idx = index.search(q, K)
        sweep.append({"ef": ef, "recall": recall(idx, truth)})
    best = cheapest(sweep)
    index.hnsw.efSearch = best["ef"]
    setting = f"M={HNSW_M} efC={HNSW_EFC} ef={best['ef']}"
    return faiss_figures(
        index, "faiss HNSW", setting, t_build.seconds, best, sweep, names, q, workdir, n_single
    )


def faiss_figures(
    index, engine, setting, build_s, best, sweep, names, q, workdir: Path, n_single
) -> dict:
    """Throughput, single-query latency (one thread) and size on disk of a tuned faiss index."""
    import faiss

    rate = vote_rate(lambda b: index.search(b, K), q, names)
    faiss.omp_set_num_threads(1)
    p50 = p50_ms(lambda b: index.search(b, K), q[:n_single])
    faiss.omp_set_num_threads(THREADS)
    path = workdir / "faiss.index"
    faiss.write_index(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return {
        "engine": engine,
        "n": index.ntotal,
        "setting": setting,
        "build_s": build_s,
        "bytes_per_cell": size / index.ntotal,
        "recall": best["recall"],
        "batch_qps": rate,
        "p50_ms": p50,
        "sweep": sweep,
    }


def bench_hnswlib(x, names, q, truth, workdir: Path, n_single: int) -> dict:
    import hnswlib

    n = len(x)
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=n, ef_construction=HNSW_EFC, M=HNSW_M, random_seed=SEED)
    with timer() as t_build:
        index.add_items(x, np.arange(n), num_threads=THREADS)

    def search(b, threads=THREADS):
        idx, dist = index.knn_query(b, K, num_threads=threads)
        return 1.0 - dist, idx

    sweep = []
    for ef in HNSW_EF:
        index.set_ef(ef)
        sweep.append({"ef": ef, "recall": recall(search(q)[1], truth)})
    best = cheapest(sweep)
    index.set_ef(best["ef"])
    rate = vote_rate(search, q, names)
    p50 = p50_ms(lambda b: search(b, 1), q[:n_single])
    path = workdir / "hnswlib.index"
    index.save_index(str(path))
    size = path.stat().st_size
    path.unlink()
    return {
        "engine": "hnswlib",
        "n": n,
        "setting": f"M={HNSW_M} efC={HNSW_EFC} ef={best['ef']}",
        "build_s": t_build.seconds,
        "bytes_per_cell": size / n,
        "recall": best["recall"],
        "batch_qps": rate,
        "p50_ms": p50,
        "sweep": sweep,
    }


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument(
        "--sizes", help="comma-separated stored-cell counts (default 200000,1000000)"
    )
    parser.add_argument(
        "--hnsw-max", type=int, default=HNSW_MAX, help="largest size for HNSW peers"
    )
    parser.add_argument(
        "--lance-hnsw", action="store_true", help="also Lance IVF_HNSW_SQ (slow build)"
    )
    parser.add_argument("--workdir", help="where the stores go (default: a temporary folder)")
    args = parser.parse_args()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else (QUICK_SIZES if args.quick else SIZES)
    )
    n_queries, n_single = (300, 30) if args.quick else (QUERIES, SINGLE)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="uceindex-bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XDG_CACHE_HOME", str(workdir / "cache"))  # novelty cache stays here
    started = time.perf_counter()
    results = []

    def payload() -> dict:
        for n in sizes:  # batch throughput against the best FAISS / hnswlib figure
            here = [r for r in results if r["n"] == n]
            peers = [r["batch_qps"] for r in here if not r["engine"].startswith(UCE_ENGINES)]
            for r in here:
                r["vs_best_peer"] = r["batch_qps"] / max(peers) if peers else None
        return {
            "command": command_line(),
            "date": utc_now(),
            "machine": machine(),
            "k": K,
            "queries": n_queries,
            "results": results,
            "seconds": time.perf_counter() - started,
            "peak_rss_mb": peak_rss_mb(),
        }

    def add(*rows: dict) -> None:
        """Keep, show and save each figure as it comes: a late failure loses nothing."""
        for r in rows:
            results.append(r)
            print(f"  {time.perf_counter() - started:5.0f} s  {' | '.join(_cells(r))}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(payload(), indent=2, default=str) + "\n")

    try:
        for n in sizes:
            x, labels = synthetic(n, seed=1)
            q, _ = synthetic(n_queries, seed=2)  # held out: never stored
            names = np.array([f"c{v:03d}" for v in range(CLUSTERS)], dtype=object)[labels]
            with timer() as t_truth:
                truth = exact_topk(x, q, K)
            print(f"n={n:,}: exact truth for {n_queries} queries in {t_truth.seconds:.1f} s")
            write_s = write_cells(x, labels, workdir)
            del x  # uceindex reads the cells from Lance's files (page cache), not from RAM
            gc.collect()
            add(*bench_uceindex(n, write_s, q, truth, workdir, n_single))
            x, _ = synthetic(n, seed=1)  # the peers index the matrix in memory
            add(bench_faiss_ivf(x, names, q, truth, workdir, n_single))
            if n <= args.hnsw_max:
                add(bench_faiss_hnsw(x, names, q, truth, workdir, n_single))
                gc.collect()
                add(bench_hnswlib(x, names, q, truth, workdir, n_single))
                if args.lance_hnsw:
                    add(bench_lance_hnsw(n, q, truth, workdir, n_single))
            del x, labels, names
            gc.collect()
            shutil.rmtree(workdir / f"atlas_{n}", ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    data = payload()
    m = data["machine"]
    print(f"\n{command_line()}  |  {utc_now()}  |  {machine_line(m)}  |  load {m['load_avg_1m']}")
    print_table(
        f"k-NN search, k={K}, {n_queries} held-out queries, {DIM}-d, recall against exact",
        COLUMNS,
        [_cells(r) for r in results],
    )
    print(f"total {data['seconds']:.0f} s, peak RSS {data['peak_rss_mb']:,.0f} MiB")
    write_json(args.json, data)


COLUMNS = ["cells", "engine", "setting", "recall@50", "batch cells/s", "vs best peer"]
COLUMNS += ["p50 ms", "build s", "bytes/cell"]
UCE_ENGINES = ("uceindex", "Lance")  # not peers


def _cells(r: dict) -> list[str]:
    vs = r.get("vs_best_peer")
    return [
        f"{r['n']:,}",
        r["engine"],
        r["setting"],
        f"{r['recall']:.3f}",
        f"{r['batch_qps']:,.0f}",
        f"{vs:.2f}x" if vs else "",
        f"{r['p50_ms']:.1f}",
        f"{r['build_s']:.0f}",
        f"{r['bytes_per_cell']:,.0f}",
    ]


if __name__ == "__main__":
    main()
