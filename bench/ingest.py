"""Ingest at million-cell scale: pre-embedded .h5ad -> store, beside the reference's preparation.

Writes a synthetic .h5ad (1,000,000 cells; 100,000 for the memory comparison; 20,000 and
5,000 with --quick) straight with h5py, in blocks: a 1280-d float32 obsm["X_emb"], four
obs columns and a small sparse count matrix (GENES genes, NNZ counts a cell). Then, each in
a fresh child process so that peak RSS is its own:
  - uceindex: `ingest(path, embedding_key="X_emb")` into a new store (hash, stream, commit);
  - reference: the reference pipeline's preparation of the same file (docs/uce.md §8):
    read X whole, `.toarray()`, write it as a dense int64 memmap (cells x genes x 8 bytes).
Targets (issue 3): 1M cells under 5 minutes and under 3 GB peak RSS on 2 cores; peak RSS at
1M within 20% of that at 100k.

--reader-compare (issue 11): the reads an ingest makes (obs names, obs chunks, matrix rows)
with anndata's reader (uceindex.io.stream) against the hand-written decoder it replaced (the
module at OLD_READER, loaded from git for the run only), on 200,000 pre-embedded cells and
20,000 cells of counts (20,000 genes, 2,000 a cell; embedded by a 1-layer tiny model on one
thread); each read a fresh process, best of REPEATS; and the share of the ingest's time.

--ray (issue 12): the ingest on a local Ray of 1 and 2 workers (uceindex.scale) against the
single-process ingest, on RAY_SIZES pre-embedded cells (1280-d) and on cells of counts embedded
by a 1-layer tiny model (one torch thread everywhere, as a Ray task of one CPU has): cells/s,
the driver's peak RSS and the largest worker's (sampled), the time the driver spent in its
commits, and Ray's start-up and shut-down apart from the ingest.

    flock /tmp/uceindex-bench.lock python bench/ingest.py [--quick] [--reader-compare | --ray] \
        [--json PATH] [--work DIR]
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # uceindex without an install
from _common import (  # noqa: E402
    base_parser,
    command_line,
    machine,
    machine_line,
    peak_rss_mb,
    print_table,
    rss_mb,
    timer,
    utc_now,
    write_json,
)

SIZES, QUICK_SIZES = (100_000, 1_000_000), (5_000, 20_000)
DIM = 1280  # the official models' width
GENES = 200  # columns of the small count matrix (the reference memmap is cells x GENES x 8 B)
NNZ = 16  # stored counts a cell
BLOCK = 50_000  # cells generated and written at a time
TARGET_SECONDS, TARGET_RSS_MB, TARGET_RSS_GROWTH = 300, 3 * 1024, 0.20
SEED = 0
ROOT = Path(__file__).resolve().parents[1]
# --reader-compare: the last commit whose io/stream.py decoded the encodings itself
OLD_READER = "0ef40fc1189c4ceea8dc3d8494b9968d8a3355ca"
COMPARE_SIZES = {"obsm": 200_000, "counts": 20_000}
COMPARE_QUICK_SIZES = {"obsm": 20_000, "counts": 2_000}
COUNTS_GENES, COUNTS_NNZ = 20_000, 2_000  # a counts file shaped like real data
REPEATS = 3
SHARE_LIMIT = 0.10  # the maintained reader stays unless it costs more than this of ingest time
# --ray: the sizes, 1M pre-embedded cells and 50k of counts (about 40 minutes here)
RAY_SIZES = {"obsm": 1_000_000, "counts": 50_000}
RAY_QUICK_SIZES = {"obsm": 20_000, "counts": 2_000}
RAY_WORKERS = (0, 1, 2)  # 0: the single-process ingest


# -- the input file ------------------------------------------------------------------------------
def _attrs(node, kind: str, version: str, **extra) -> None:
    node.attrs["encoding-type"] = kind
    node.attrs["encoding-version"] = version
    for k, v in extra.items():
        node.attrs[k] = v


def _strings(group, name: str, values) -> None:
    import h5py

    ds = group.create_dataset(
        name, data=np.asarray(values, dtype=object), dtype=h5py.string_dtype()
    )
    _attrs(ds, "string-array", "0.2.0")


def write_h5ad(
    path: Path, n: int, *, genes: int = GENES, nnz: int = NNZ, dim: int = DIM, more_obs=False
) -> None:
    """An anndata-readable .h5ad written block by block (memory does not grow with n).

    `dim=0`: no obsm; `more_obs`: also a nullable int, a nullable bool and a string column."""
    import h5py

    rng = np.random.default_rng(SEED)
    block = BLOCK * GENES // genes  # the column draw below holds block x genes floats
    cell_types = np.array([f"type_{i}" for i in range(30)], dtype=object)
    donors = np.array([f"donor_{i}" for i in range(200)], dtype=object)
    with h5py.File(path, "w") as f:
        _attrs(f, "anndata", "0.1.0")
        for name in ("layers", "obsp", "varm", "varp", "uns"):
            _attrs(f.create_group(name), "dict", "0.1.0")
        var = f.create_group("var")
        _attrs(var, "dataframe", "0.2.0", _index="_index", **{"column-order": np.array([], "S")})
        _strings(var, "_index", [f"GENE{i}" for i in range(genes)])
        obs = f.create_group("obs")
        columns = ["cell_type", "donor_id", "n_counts", "batch"]
        columns += ["n_genes", "is_doublet", "barcode"] if more_obs else []
        _attrs(
            obs, "dataframe", "0.2.0", _index="_index", **{"column-order": np.array(columns, "S")}
        )
        names = obs.create_dataset("_index", (n,), dtype=h5py.string_dtype())
        _attrs(names, "string-array", "0.2.0")
        codes = {}
        for col, cats in (("cell_type", cell_types), ("donor_id", donors)):
            g = obs.create_group(col)
            _attrs(g, "categorical", "0.2.0", ordered=False)
            _strings(g, "categories", cats)
            codes[col] = g.create_dataset("codes", (n,), dtype=np.int16)
            _attrs(codes[col], "array", "0.2.0")
        n_counts = obs.create_dataset("n_counts", (n,), dtype=np.float32)
        batch = obs.create_dataset("batch", (n,), dtype=np.int64)
        for ds in (n_counts, batch):
            _attrs(ds, "array", "0.2.0")
        nullable = {}
        if more_obs:
            for col, kind, dtype in (
                ("n_genes", "nullable-integer", np.int64),
                ("is_doublet", "nullable-boolean", bool),
            ):
                g = obs.create_group(col)
                _attrs(g, kind, "0.1.0")
                nullable[col] = [
                    g.create_dataset(k, (n,), dtype=t)
                    for k, t in (("values", dtype), ("mask", bool))
                ]
                for ds in nullable[col]:
                    _attrs(ds, "array", "0.2.0")
            barcodes = obs.create_dataset("barcode", (n,), dtype=h5py.string_dtype())
            _attrs(barcodes, "string-array", "0.2.0")
        x = f.create_group("X")
        _attrs(x, "csr_matrix", "0.1.0", shape=np.array([n, genes]))
        data = x.create_dataset("data", (n * nnz,), dtype=np.float32)
        indices = x.create_dataset("indices", (n * nnz,), dtype=np.int32)
        x.create_dataset("indptr", data=np.arange(n + 1, dtype=np.int64) * nnz)
        obsm = f.create_group("obsm")
        _attrs(obsm, "dict", "0.1.0")
        if dim:
            emb = obsm.create_dataset("X_emb", (n, dim), dtype=np.float32, chunks=(1024, dim))
            _attrs(emb, "array", "0.2.0")
        for a in range(0, n, block):
            b = min(a + block, n)
            m = b - a
            names[a:b] = np.array([f"cell{i}" for i in range(a, b)], dtype=object)
            codes["cell_type"][a:b] = rng.integers(0, len(cell_types), m)
            codes["donor_id"][a:b] = rng.integers(0, len(donors), m)
            counts = rng.integers(1, 20, (m, nnz)).astype(np.float32)
            n_counts[a:b] = counts.sum(1)
            batch[a:b] = rng.integers(0, 8, m)
            cols = np.sort(np.argpartition(rng.random((m, genes)), nnz, axis=1)[:, :nnz], axis=1)
            data[a * nnz : b * nnz] = counts.ravel()
            indices[a * nnz : b * nnz] = cols.ravel()
            if dim:
                emb[a:b] = rng.standard_normal((m, dim), dtype=np.float32)
            if more_obs:
                for values, mask in nullable.values():
                    values[a:b] = rng.integers(0, 2 if values.dtype == bool else 5000, m)
                    mask[a:b] = rng.random(m) < 0.05
                barcodes[a:b] = np.array([f"AAC{i:09d}-1" for i in range(a, b)], dtype=object)


# -- the two preparations, each in a fresh process ------------------------------------------------
def uceindex_child(path: str, store: str) -> dict:
    from uceindex.ingestion import ingest

    before = rss_mb()
    with timer() as t:
        report = ingest(path, species="human", store=store, embedding_key="X_emb")
    d = report.datasets[0]
    return {
        "seconds": t.seconds,
        "cells_embedded": d.n_embedded,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "bytes_written": sum(p.stat().st_size for p in Path(store).rglob("*") if p.is_file()),
    }


def reference_child(path: str, out: str) -> dict:
    """UCE's data_proc: the whole matrix, densified, as an int64 memmap."""
    import anndata
    import h5py

    before = rss_mb()
    with timer() as t:
        with h5py.File(path, "r") as f:
            x = anndata.io.read_elem(f["X"])
        fp = np.memmap(out, dtype="int64", mode="w+", shape=x.shape)
        fp[:] = x.toarray()
        fp.flush()
        del fp
    return {
        "seconds": t.seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "bytes_written": Path(out).stat().st_size,
    }


def in_child(fn, *args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# -- --reader-compare: anndata's reader against the hand-written decoder it replaced -------------
def old_reader_source(work: Path) -> Path:
    """uceindex/io/stream.py as it was at OLD_READER, written into `work` (not the package)."""
    out = work / "old_stream.py"
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{OLD_READER}:uceindex/io/stream.py"],
        check=True,
        capture_output=True,
    )
    out.write_bytes(shown.stdout)
    return out


def _reader(source: str | None):
    """The hand-written reader loaded from `source`, or the package's (None)."""
    if source is None:
        from uceindex.io import stream

        return stream
    spec = importlib.util.spec_from_file_location("old_stream", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def reader_child(source: str | None, path: str, key: str | None, chunk: int) -> dict:
    """The reads of an ingest, in its order: open, obs names checked unique, obs types, the
    counts found (sampled) or the obsm, then each chunk's obs names, obs rows, matrix rows."""
    import anndata.experimental  # noqa: F401  (imported before the clock, for both readers)

    module = _reader(source)
    spent = {"obs": 0.0, "matrix": 0.0}

    def timed(part: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        spent[part] += time.perf_counter() - start
        return out

    with timer() as t:
        with module.H5AD(path) as h5:
            timed("obs", h5.duplicate_obs_names)
            timed("obs", h5.obs_columns, set())
            matrix = timed("matrix", lambda: h5.obsm(key) if key else h5.find_counts().matrix)
            for a in range(0, h5.n_obs, chunk):
                b = min(a + chunk, h5.n_obs)
                timed("obs", h5.obs_names, a, b)
                timed("obs", h5.obs_chunk, a, b)
                timed("matrix", matrix.rows, a, b)
    spent["open"] = t.seconds - spent["obs"] - spent["matrix"]  # the file, its var
    return {**spent, "seconds": t.seconds, "peak_rss_mb": peak_rss_mb()}


def ingest_child(path: str, store: str, key: str | None, model_dir: str | None) -> dict:
    """A whole ingest (hash, reads, embedding or checks, writes) with the package's reader."""
    from uceindex.ingestion import ingest

    if model_dir:
        import torch

        torch.set_num_threads(1)  # as bench/embed.py: a second thread waits on a shared core
    kwargs = {"model_dir": model_dir} if model_dir else {"embedding_key": key}
    with timer() as t:
        ingest(path, species="human", store=store, **kwargs)
    return {"seconds": t.seconds, "peak_rss_mb": peak_rss_mb()}


def ray_child(path: str, store: str, key: str | None, model_dir: str | None, workers: int) -> dict:
    """One ingest: in this process (workers=0) or on a local Ray of `workers` workers."""
    import threading

    import psutil
    import torch

    import uceindex.scale as scale
    from uceindex.ingestion import ingest

    torch.set_num_threads(1)
    kwargs = {"model_dir": model_dir} if model_dir else {"embedding_key": key}
    out = {"workers": workers}
    if workers == 0:
        with timer() as t:
            ingest(path, species="human", store=store, threads=0, **kwargs)
        return {**out, "seconds": t.seconds, "driver_peak_rss_mb": peak_rss_mb()}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with timer() as start:
        scale.connect(workers=workers)
    commits, commit = [], scale._commit

    def timed_commit(*args):
        with timer() as c:
            commit(*args)
        commits.append(c.seconds)

    scale._commit = timed_commit
    worker_peak, stop = {}, threading.Event()

    def sample():  # Ray's worker processes are named ray::<task>
        while not stop.wait(0.2):
            for p in psutil.process_iter(["name", "cmdline"]):
                try:
                    if p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::"):
                        rss = p.memory_info().rss / 2**20
                        worker_peak[p.pid] = max(worker_peak.get(p.pid, 0), rss)
                except (psutil.Error, IndexError):
                    pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with timer() as t:
        scale.ingest_on_ray(path, species="human", store=store, workers=workers, **kwargs)
    stop.set()
    sampler.join()
    with timer() as down:
        import ray

        ray.shutdown()
    return {
        **out,
        "seconds": t.seconds,
        "ray_start_seconds": start.seconds,
        "ray_shutdown_seconds": down.seconds,
        "commit_seconds": sum(commits),
        "commits": len(commits),
        "driver_peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": max(worker_peak.values(), default=None),
    }


def ray_compare(quick: bool, work: Path) -> list[dict]:
    """The single-process ingest against 1 and 2 Ray workers, on both kinds of file."""
    from uceindex.io.stream import file_hash
    from uceindex.model.tiny import write_tiny_model

    runs = []
    for kind, n in (RAY_QUICK_SIZES if quick else RAY_SIZES).items():
        path = work / f"{kind}{n}.h5ad"
        if kind == "obsm":
            write_h5ad(path, n)
            key, model_dir = "X_emb", None
        else:
            write_h5ad(path, n, genes=COUNTS_GENES, nnz=COUNTS_NNZ, dim=0)
            genes = [f"GENE{i}" for i in range(COUNTS_GENES)]
            key = None
            model_dir = str(write_tiny_model(work / "tiny", {"human": genes}, nlayers=1))
        file_hash(path)  # in the page cache for every run
        for workers in RAY_WORKERS:
            store = work / f"store_{kind}_{workers}"
            run = in_child(ray_child, str(path), str(store), key, model_dir, workers)
            shutil.rmtree(store)
            run.update(file=kind, cells=n, cells_per_s=n / run["seconds"])
            runs.append(run)
            print(
                f"  {kind} {n:,} cells, {workers or 'no'} Ray workers: {run['seconds']:.1f} s "
                f"({run['cells_per_s']:,.0f} cells/s)"
            )
        path.unlink()
    return runs


def print_ray(runs: list[dict]) -> None:
    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    print_table(
        "ingest on Ray (local, loopback) against one process",
        [
            "file",
            "cells",
            "Ray workers",
            "seconds",
            "cells/s",
            "driver peak MiB",
            "worker peak MiB",
            "commit s",
            "Ray start s",
        ],
        [
            [
                r["file"],
                f"{r['cells']:,}",
                str(r["workers"] or "none"),
                f"{r['seconds']:.1f}",
                f"{r['cells_per_s']:,.0f}",
                f"{r['driver_peak_rss_mb']:,.0f}",
                num(r.get("worker_peak_rss_mb"), ",.0f"),
                num(r.get("commit_seconds"), ".2f"),
                num(r.get("ray_start_seconds"), ".1f"),
            ]
            for r in runs
        ],
    )


def reader_compare(quick: bool, work: Path) -> list[dict]:
    from uceindex.ingestion import CHUNK_CELLS_OBSM, CHUNK_CELLS_UCE
    from uceindex.io.stream import file_hash
    from uceindex.model.tiny import write_tiny_model

    old = str(old_reader_source(work))
    runs = []
    for kind, n in (COMPARE_QUICK_SIZES if quick else COMPARE_SIZES).items():
        path = work / f"{kind}{n}.h5ad"
        with timer() as t:
            if kind == "obsm":
                write_h5ad(path, n, more_obs=True)
                key, chunk, model_dir = "X_emb", CHUNK_CELLS_OBSM, None
            else:
                write_h5ad(path, n, genes=COUNTS_GENES, nnz=COUNTS_NNZ, dim=0, more_obs=True)
                genes = [f"GENE{i}" for i in range(COUNTS_GENES)]
                key, chunk = None, CHUNK_CELLS_UCE
                model_dir = str(write_tiny_model(work / "tiny", {"human": genes}, nlayers=1))
        print(
            f"{kind}, {n:,} cells: wrote {path.stat().st_size / 2**30:.2f} GiB in {t.seconds:.0f} s"
        )
        file_hash(path)  # in the page cache for every read, as after the ingest's own hash
        reads = {"hand-written": [], "anndata": []}
        for _ in range(REPEATS):  # alternated, so that a busy moment hits both alike
            for name, source in (("hand-written", old), ("anndata", None)):
                reads[name].append(in_child(reader_child, source, str(path), key, chunk))
        whole = in_child(ingest_child, str(path), str(work / f"store_{kind}"), key, model_dir)
        shutil.rmtree(work / f"store_{kind}")
        path.unlink()
        best = {name: min(r, key=lambda m: m["seconds"]) for name, r in reads.items()}
        old_s, new_s, ingest_s = (
            best["hand-written"]["seconds"],
            best["anndata"]["seconds"],
            whole["seconds"],
        )
        runs.append(
            {
                "file": kind,
                "cells": n,
                "chunk_cells": chunk,
                "reads": reads,
                "best": best,
                "ingest": whole,
                "ratio": new_s / old_s,
                # the ingest ran with the anndata reader; with the old one it would take
                # ingest - new + old
                "share_anndata": new_s / ingest_s,
                "share_hand_written": old_s / (ingest_s - new_s + old_s),
                "extra_share": (new_s - old_s) / ingest_s,
            }
        )
        print(f"  ingest {ingest_s:.1f} s; reads {old_s:.2f} s hand-written, {new_s:.2f} anndata")
    return runs


def print_compare(runs: list[dict]) -> None:
    table = []
    for r in runs:
        for name in ("hand-written", "anndata"):
            m = r["best"][name]
            share = r["share_anndata"] if name == "anndata" else r["share_hand_written"]
            table.append(
                [
                    f"{r['file']} {r['cells']:,}",
                    name,
                    f"{m['open']:.2f}",
                    f"{m['obs']:.2f}",
                    f"{m['matrix']:.2f}",
                    f"{m['seconds']:.2f}",
                    f"{m['peak_rss_mb']:,.0f}",
                    f"{share:.1%}",
                ]
            )
    print_table(
        f"reads of an ingest, best of {REPEATS} fresh processes each",
        [
            "file",
            "reader",
            "open s",
            "obs s",
            "matrix s",
            "total s",
            "peak RSS MiB",
            "share of ingest",
        ],
        table,
    )
    for r in runs:
        verdict = "keep anndata's" if r["extra_share"] <= SHARE_LIMIT else "over the limit"
        print(
            f"{r['file']}: anndata/hand-written {r['ratio']:.2f}x, ingest "
            f"{r['ingest']['seconds']:.1f} s, extra {r['extra_share']:+.1%} of it "
            f"(limit {SHARE_LIMIT:.0%}: {verdict})"
        )


# -- run ------------------------------------------------------------------------------------------
def main():
    parser = base_parser(__doc__)
    parser.add_argument("--work", help="directory for the files (default: a temporary one)")
    parser.add_argument(
        "--reader-compare",
        action="store_true",
        help="anndata's reader against the hand-written one it replaced",
    )
    parser.add_argument(
        "--ray", action="store_true", help="1 and 2 Ray workers against one process"
    )
    opts = parser.parse_args()
    result = {"benchmark": "ingest", "command": command_line(), "date": utc_now()}
    result["machine"], result["quick"] = machine(), opts.quick
    print(f"{result['date']}  {machine_line(result['machine'])}")
    work = Path(opts.work or tempfile.mkdtemp(prefix="uceindex-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if opts.reader_compare:
            result["settings"] = {
                "sizes": COMPARE_QUICK_SIZES if opts.quick else COMPARE_SIZES,
                "old_reader": OLD_READER,
                "counts_genes": COUNTS_GENES,
                "counts_nnz_per_cell": COUNTS_NNZ,
                "repeats": REPEATS,
            }
            result["reader_compare"] = reader_compare(opts.quick, work)
            print_compare(result["reader_compare"])
        elif opts.ray:
            result["settings"] = {
                "sizes": RAY_QUICK_SIZES if opts.quick else RAY_SIZES,
                "workers": RAY_WORKERS,
                "counts_genes": COUNTS_GENES,
                "counts_nnz_per_cell": COUNTS_NNZ,
            }
            result["load_avg_1m_start"] = round(os.getloadavg()[0], 2)
            result["ray"] = ray_compare(opts.quick, work)
            print_ray(result["ray"])
        else:
            scale(opts.quick, work, result)
    finally:
        if not opts.work:
            shutil.rmtree(work, ignore_errors=True)
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    write_json(opts.json, result)


def scale(quick: bool, work: Path, result: dict) -> None:
    """uceindex's ingest against the reference's preparation, at two sizes."""
    sizes = QUICK_SIZES if quick else SIZES
    result["settings"] = {"dim": DIM, "genes": GENES, "nnz_per_cell": NNZ, "sizes": sizes}
    rows = []
    for n in sizes:
        path = work / f"cells{n}.h5ad"
        with timer() as t:
            write_h5ad(path, n)
        print(f"{n:,} cells: wrote {path.stat().st_size / 2**30:.2f} GiB in {t.seconds:.0f} s")
        ours = in_child(uceindex_child, str(path), str(work / f"store{n}"))
        shutil.rmtree(work / f"store{n}")
        ref = in_child(reference_child, str(path), str(work / f"counts{n}.int64"))
        (work / f"counts{n}.int64").unlink()
        rows.append(
            {"cells": n, "file_bytes": path.stat().st_size, "uceindex": ours, "reference": ref}
        )
        path.unlink()
        print(f"  uceindex {ours['seconds']:.1f} s, {ours['peak_rss_mb']:.0f} MiB peak")
        print(f"  reference {ref['seconds']:.1f} s, {ref['peak_rss_mb']:.0f} MiB peak")
    small, large = rows[0], rows[-1]
    growth = large["uceindex"]["peak_rss_mb"] / small["uceindex"]["peak_rss_mb"] - 1
    result["runs"] = rows
    result["targets"] = {
        "seconds_at_largest": large["uceindex"]["seconds"],
        "seconds_ok": large["uceindex"]["seconds"] < TARGET_SECONDS,
        "peak_rss_mb_at_largest": large["uceindex"]["peak_rss_mb"],
        "peak_rss_ok": large["uceindex"]["peak_rss_mb"] < TARGET_RSS_MB,
        "peak_rss_growth": round(growth, 3),
        "peak_rss_growth_ok": growth < TARGET_RSS_GROWTH,
    }
    table = []
    for r in rows:
        for name in ("uceindex", "reference"):
            m = r[name]
            table.append(
                [
                    f"{r['cells']:,}",
                    name,
                    f"{m['seconds']:.1f}",
                    f"{r['cells'] / m['seconds']:,.0f}",
                    f"{m['peak_rss_mb']:,.0f}",
                    f"{m['bytes_written'] / 2**30:.2f}",
                ]
            )
    print_table(
        "ingest of a pre-embedded file vs the reference's preparation",
        ["cells", "pipeline", "seconds", "cells/s", "peak RSS MiB", "GiB written"],
        table,
    )
    t = result["targets"]
    print(
        f"targets: {t['seconds_at_largest']:.0f} s (< {TARGET_SECONDS}: {t['seconds_ok']}), "
        f"{t['peak_rss_mb_at_largest']:.0f} MiB (< {TARGET_RSS_MB}: {t['peak_rss_ok']}), "
        f"RSS growth {t['peak_rss_growth']:+.0%} (< {TARGET_RSS_GROWTH:.0%}: {t['peak_rss_growth_ok']})"
    )


if __name__ == "__main__":
    main()
