"""Ingest at million-cell scale: pre-embedded .h5ad -> store, beside the reference's preparation.

Writes a synthetic .h5ad (1,000,000 cells; 100,000 for the memory comparison; 20,000 and
5,000 with --quick) straight with h5py, in blocks: a 1280-d float32 obsm["X_emb"], four
obs columns and a small sparse count matrix (GENES genes, NNZ counts a cell). Then, each in
a fresh child process so that peak RSS is its own:
  - uceindex: `ingest(path, embedding_key="X_emb")` into a new store (hash, stream, commit);
  - reference: the reference pipeline's preparation of the same file (UCE_SPEC section 8):
    read X whole, `.toarray()`, write it as a dense int64 memmap (cells x genes x 8 bytes).
Targets (issue 3): 1M cells under 5 minutes and under 3 GB peak RSS on 2 cores; peak RSS at
1M within 20% of that at 100k.

    flock /tmp/uceindex-bench.lock python bench/ingest.py [--quick] [--json PATH] [--work DIR]
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sys
import tempfile
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


def write_h5ad(path: Path, n: int) -> None:
    """An anndata-readable .h5ad written block by block (memory does not grow with n)."""
    import h5py

    rng = np.random.default_rng(SEED)
    cell_types = np.array([f"type_{i}" for i in range(30)], dtype=object)
    donors = np.array([f"donor_{i}" for i in range(200)], dtype=object)
    with h5py.File(path, "w") as f:
        _attrs(f, "anndata", "0.1.0")
        for name in ("layers", "obsp", "varm", "varp", "uns"):
            _attrs(f.create_group(name), "dict", "0.1.0")
        var = f.create_group("var")
        _attrs(var, "dataframe", "0.2.0", _index="_index", **{"column-order": np.array([], "S")})
        _strings(var, "_index", [f"GENE{i}" for i in range(GENES)])
        obs = f.create_group("obs")
        columns = ["cell_type", "donor_id", "n_counts", "batch"]
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
        x = f.create_group("X")
        _attrs(x, "csr_matrix", "0.1.0", shape=np.array([n, GENES]))
        data = x.create_dataset("data", (n * NNZ,), dtype=np.float32)
        indices = x.create_dataset("indices", (n * NNZ,), dtype=np.int32)
        x.create_dataset("indptr", data=np.arange(n + 1, dtype=np.int64) * NNZ)
        obsm = f.create_group("obsm")
        _attrs(obsm, "dict", "0.1.0")
        emb = obsm.create_dataset("X_emb", (n, DIM), dtype=np.float32, chunks=(1024, DIM))
        _attrs(emb, "array", "0.2.0")
        for a in range(0, n, BLOCK):
            b = min(a + BLOCK, n)
            m = b - a
            names[a:b] = np.array([f"cell{i}" for i in range(a, b)], dtype=object)
            codes["cell_type"][a:b] = rng.integers(0, len(cell_types), m)
            codes["donor_id"][a:b] = rng.integers(0, len(donors), m)
            counts = rng.integers(1, 20, (m, NNZ)).astype(np.float32)
            n_counts[a:b] = counts.sum(1)
            batch[a:b] = rng.integers(0, 8, m)
            cols = np.sort(rng.random((m, GENES)).argsort(axis=1)[:, :NNZ], axis=1)
            data[a * NNZ : b * NNZ] = counts.ravel()
            indices[a * NNZ : b * NNZ] = cols.ravel()
            emb[a:b] = rng.standard_normal((m, DIM), dtype=np.float32)


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


# -- run ------------------------------------------------------------------------------------------
def main():
    parser = base_parser(__doc__)
    parser.add_argument("--work", help="directory for the files (default: a temporary one)")
    opts = parser.parse_args()
    sizes = QUICK_SIZES if opts.quick else SIZES
    result = {"benchmark": "ingest", "command": command_line(), "date": utc_now()}
    result["machine"], result["quick"] = machine(), opts.quick
    result["settings"] = {"dim": DIM, "genes": GENES, "nnz_per_cell": NNZ, "sizes": sizes}
    print(f"{result['date']}  {machine_line(result['machine'])}")
    work = Path(opts.work or tempfile.mkdtemp(prefix="uceindex-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
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
    finally:
        if not opts.work:
            shutil.rmtree(work, ignore_errors=True)
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
    write_json(opts.json, result)


if __name__ == "__main__":
    main()
