"""SQL over a store at million-cell scale: DuckDB over Lance against pandas.

Writes a synthetic store (1,000,000 cells, 21 metadata columns, 1280-d float32 unit vectors:
about 5 GB; 100,000 cells with --quick) once into --store-dir, with the indexes an ingest
leaves (`refresh_index`: IVF_FLAT on the vectors, BITMAP/BTREE on filter columns), in a child
process so that its memory does not count. Then times three target queries through
`uceindex.sql.SqlSession` (GROUP BY count, filtered aggregate, COUNT DISTINCT; target < 1 s
each) and a few more, the peak RSS after the targets (target < 2 GB) and after the vector
queries, and the same three queries in pandas after loading the metadata (every column but
the vectors).

    flock /tmp/uceindex-bench.lock python bench/sql.py [--quick] [--json PATH]
"""

from __future__ import annotations

import multiprocessing
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # uceindex without an install
from _common import (  # noqa: E402
    base_parser,
    best_of,
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

CELLS, QUICK_CELLS = 1_000_000, 100_000
DIM = 1280  # the official models' width: the honest test of "metadata queries skip vectors"
BATCH = 16_384  # rows per append while writing the store: one Lance fragment, as ingest's chunk
REPEATS = 3  # timed runs per query after the first; the best is reported
SEED = 0

QUERIES = {  # name -> (SQL, the same in pandas on the metadata frame `m`)
    "group_by_count": (
        "SELECT tissue, cell_type, count(*) AS n FROM cells GROUP BY ALL ORDER BY n DESC",
        lambda m: m.groupby(["tissue", "cell_type"]).size().sort_values(ascending=False),
    ),
    "filtered_aggregate": (
        "SELECT dataset_id, count(*) AS n, avg(n_genes) AS genes, avg(pct_mito) AS mito "
        "FROM cells WHERE tissue = 'lung' AND disease = 'normal' AND n_genes > 1000 GROUP BY 1",
        lambda m: (
            m[(m.tissue == "lung") & (m.disease == "normal") & (m.n_genes > 1000)]
            .groupby("dataset_id")
            .agg(n=("n_genes", "size"), genes=("n_genes", "mean"), mito=("pct_mito", "mean"))
        ),
    ),
    "count_distinct": (
        "SELECT cell_type, count(DISTINCT donor_id) AS donors FROM cells GROUP BY 1",
        lambda m: m.groupby("cell_type").donor_id.nunique(),
    ),
}
EXTRA = {  # timed in SQL only, after the targets (the vector queries read the embeddings)
    "count_star": "SELECT count(*) FROM cells",
    "lookup_one_cell": "SELECT * FROM cells WHERE cell_id = 'ds7/cell_000123'",
    "first_40_rows": "SELECT * FROM cells LIMIT 40",
    "similar_k50": "SELECT * FROM similar('ds7/cell_000123', 50)",
    "exact_top50_in_duckdb": (
        "SELECT cell_id, array_cosine_similarity(embedding, (SELECT embedding FROM cells "
        "WHERE cell_id = 'ds7/cell_000123')) AS s FROM cells ORDER BY s DESC LIMIT 50"
    ),
}
ONE_RUN = ("exact_top50_in_duckdb",)  # too slow to repeat


CATEGORIES = {  # column -> its values (drawn uniformly)
    "cell_type": [f"cell type {i}" for i in range(200)],
    "tissue": ["lung", "blood", "liver", "kidney", "brain", "heart"],
    "assay": [f"10x v{i}" for i in range(10)],
    "disease": ["normal"] * 5 + [f"disease {i}" for i in range(15)],
    "sex": ["female", "male", "unknown"],
    "development_stage": [f"stage {i}" for i in range(50)],
    "self_reported_ethnicity": [f"ethnicity {i}" for i in range(10)],
    "suspension_type": ["cell", "nucleus"],
}
ONTOLOGY = ("cell_type", "tissue")  # these also get a `<name>_ontology_term_id` column


def _batch(rng, start: int, n: int, per_dataset: int) -> pa.RecordBatch:
    """Rows start..start+n: CELLxGENE-like metadata (21 columns) and random unit vectors."""
    index = np.arange(start, start + n)
    dataset, obs = index // per_dataset, index % per_dataset
    cols = {
        "cell_id": [f"ds{d}/cell_{o:06d}" for d, o in zip(dataset, obs)],
        "dataset_id": [f"ds{d}" for d in dataset],
        "species": np.where(dataset % 5 == 4, "mouse", "human").astype(object),
        "ingest_chunk": (obs // 4096).astype(np.int32),
    }
    for name, values in CATEGORIES.items():
        pick = rng.integers(0, len(values), n)
        cols[name] = np.array(values, dtype=object)[pick]
        if name in ONTOLOGY:
            cols[f"{name}_ontology_term_id"] = np.array(
                [f"ONTO:{i:07d}" for i in range(len(values))], dtype=object
            )[pick]
    cols["donor_id"] = [f"donor {d}-{k}" for d, k in zip(dataset, rng.integers(0, 40, n))]
    cols["is_primary_data"] = rng.random(n) > 0.2
    cols["n_genes"] = rng.integers(200, 8000, n)
    cols["n_counts"] = rng.gamma(2.0, 3000.0, n)
    cols["pct_mito"] = rng.beta(2, 30, n)
    cols["leiden"] = rng.integers(0, 60, n)
    emb = rng.standard_normal((n, DIM), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    arrays = {k: pa.array(v) for k, v in cols.items()}
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM)
    return pa.RecordBatch.from_pydict(arrays)


def build_store(path: str, n: int) -> None:
    """A store in the contract's layout, written straight with lancedb (in a child process)."""
    import lancedb

    from uceindex.search.index import refresh_index
    from uceindex.store import Store
    from uceindex.store import schema as S

    rng = np.random.default_rng(SEED)
    per_dataset = n // (50 if n >= 500_000 else 10)
    db = lancedb.connect(path)
    db.create_table(S.DATASETS, schema=S.schema(S.DATASETS))
    db.create_table(S.REJECTS, schema=S.schema(S.REJECTS))
    cells = db.create_table(S.CELLS, _batch(rng, 0, min(BATCH, n), per_dataset))
    for start in range(BATCH, n, BATCH):
        cells.add(_batch(rng, start, min(BATCH, n - start), per_dataset))
    with Store.open(path) as store:  # as after an ingest: the vector and filter indexes
        report = refresh_index(store)
    print(f"  index: {report.action} {report.state.kind} in {report.seconds:.0f} s", flush=True)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--store-dir", default="/tmp/uceindex-bench", help="where stores live")
    parser.add_argument("--fresh", action="store_true", help="rewrite the store")
    args = parser.parse_args()
    n = QUICK_CELLS if args.quick else CELLS
    store = Path(args.store_dir) / f"sql-{n}-{DIM}"
    built_s = None
    if args.fresh or not (store / "cells.lance").exists():
        shutil.rmtree(store, ignore_errors=True)
        with timer() as t:
            child = multiprocessing.get_context("spawn").Process(
                target=build_store, args=(str(store), n)
            )
            child.start()
            child.join()
        if child.exitcode:
            raise SystemExit(f"writing the store failed (exit {child.exitcode})")
        built_s = round(t.seconds, 1)
    disk_gb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e9
    print(f"store {store}: {n:,} cells, {DIM}-d, {disk_gb:.2f} GB on disk", flush=True)

    from uceindex.sql import SqlSession

    results = {}
    rss_before = rss_mb()
    with timer() as t:
        session = SqlSession(str(store))
    open_s = t.seconds
    with session:
        columns = [c for c, _ in session.schema("cells")]
        for name, sql in {**{k: q for k, (q, _) in QUERIES.items()}, **EXTRA}.items():
            if name == next(iter(EXTRA)):
                sql_peak = peak_rss_mb()  # the three target queries
            with timer() as first:
                rows = session.execute(sql).num_rows
            best = first.seconds
            if name not in ONE_RUN:
                best = min(best, best_of(lambda sql=sql: session.execute(sql), REPEATS))
            results[name] = {"first_s": first.seconds, "best_s": best, "rows": rows}
            print(f"  sql {name}: first {first.seconds:.3f} s, best {best:.3f} s", flush=True)
    vector_peak = peak_rss_mb()

    import lance

    meta = [c for c in columns if c != "embedding"]
    with timer() as load:
        frame = lance.dataset(str(store / "cells.lance")).to_table(columns=meta).to_pandas()
    pandas_rss = rss_mb()
    for name, (_, fn) in QUERIES.items():
        best = best_of(lambda fn=fn: fn(frame), REPEATS)
        results[name]["pandas_s"] = best
        results[name]["ratio"] = best / results[name]["best_s"]
        print(f"  pandas {name}: {best:.3f} s", flush=True)

    m = machine()
    rows = [
        [
            name,
            f"{r['first_s']:.3f}",
            f"{r['best_s']:.3f}",
            f"{r['pandas_s']:.3f}" if "pandas_s" in r else "-",
            f"{r['ratio']:.1f}x" if "ratio" in r else "-",
        ]
        for name, r in results.items()
    ]
    print_table(
        f"SQL over {n:,} cells ({DIM}-d), {machine_line(m)}",
        ["query", "sql first s", "sql best s", "pandas best s", "pandas / sql"],
        rows,
    )
    summary = {
        "store_open_s": round(open_s, 3),
        "sql_peak_rss_mb": round(sql_peak),
        "sql_peak_rss_with_vector_queries_mb": round(vector_peak),
        "rss_before_sql_mb": round(rss_before),
        "pandas_load_s": round(load.seconds, 2),
        "pandas_rss_mb": round(pandas_rss),
        "pandas_frame_mb": round(frame.memory_usage(deep=True).sum() / 2**20),
        "store_written_s": built_s,
        "store_disk_gb": round(disk_gb, 2),
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    targets = all(results[q]["best_s"] < 1.0 for q in QUERIES) and sql_peak < 2048
    print(f"targets (3 queries < 1 s, peak RSS < 2 GB): {'met' if targets else 'NOT met'}")
    write_json(
        args.json,
        {
            "bench": "sql",
            "command": command_line(),
            "date": utc_now(),
            "machine": m,
            "cells": n,
            "dim": DIM,
            "metadata_columns": len(meta),
            "queries": {k: q for k, (q, _) in QUERIES.items()} | EXTRA,
            "results": results,
            **summary,
            "targets_met": targets,
        },
    )


if __name__ == "__main__":
    main()
