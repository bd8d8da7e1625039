"""`qc`: the quality report of an atlas, computed on a bounded, seeded sample of its cells.

Why: a neighbour vote is only as good as the space it votes in. Embeddings that collapse
onto one direction (UCE issue 64), data sets that sit apart instead of mixing (UCE issue 23)
and labels whose cells are not each other's neighbours all make a vote confident and wrong;
the report shows them, with the ingest record of each data set beside them.

The sample is balanced over data sets (`metrics.quotas`) and its k-NN graph is exact, among
the sampled cells only; docs/qc.md gives every formula and its limits.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from uceindex.errors import QueryError
from uceindex.quality import metrics as M
from uceindex.search import cells_table
from uceindex.search.neighbours import ID, take_cells
from uceindex.search.query import LABEL, check_label
from uceindex.store import Store

DEFAULT_SAMPLE = 5_000  # cells of the report's sample
MAX_SAMPLE = 20_000  # its bound: the exact k-NN graph costs sample^2 * D
DEFAULT_K = 15  # neighbours per sampled cell
MAX_K = 200
COLLAPSE_COSINE = 0.85  # mean pairwise cosine at or above it: collapsed (issue 64: 0.87-0.999)
POOR_MIXING = 0.5  # mixing score below it: the data set keeps to itself
ONTOLOGY_TERM = "cell_type_ontology_term_id"  # CELLxGENE's Cell Ontology column
PAIRS = 5_000  # random pairs per data set for the cosine quantiles and histogram
COSINE_BINS = np.linspace(-1.0, 1.0, 41)
TOP_CONFUSIONS = 10  # label pairs overall; half of it per data set
SCAN_ROWS = 65_536  # rows per batch of the pass over dataset_id

Progress = Callable[[int, int, str], None]  # (done, total, step)


def qc(
    store: Store | str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    sample: int = DEFAULT_SAMPLE,
    k: int = DEFAULT_K,
    label: str | None = None,
    seed: int = 0,
    storage_options: dict | None = None,
    progress: Progress | None = None,
) -> dict:
    """The quality report of a store: per data set and overall, the pairwise cosine (collapse
    alarm), the mixing of data sets among each other's neighbours, label coherence and the
    labels most confused, the rejects by reason, genes matched, model and seed; `flags` lists
    what crossed a threshold. `dataset` keeps the report to one data set (its numbers are the
    same as in the full report: the sample is). `label`: the label column (default cell_type,
    when the store has it); the Cell Ontology term column is read as well when present."""
    _check_bounds(sample, k)
    with Store.using(store, storage_options=storage_options) as store:
        table = cells_table(store)
        if label is not None:
            check_label(store, label)
        elif LABEL in table.schema.names:
            label = LABEL
        columns = [c for c in dict.fromkeys([label, ONTOLOGY_TERM]) if c in table.schema.names]
        rows = _sample_rows(table, sample, seed)
        if dataset is not None and dataset not in rows:
            known = ", ".join(sorted(rows)[:10]) + (" ..." if len(rows) > 10 else "")
            raise QueryError(
                f"no data set {dataset!r} in the store at {store.uri}: it has {known} "
                "(uceindex datasets lists them)"
            )
        step = progress or (lambda done, total, what: None)
        step(0, 3, "qc: reading the sample")
        got, x = take_cells(
            table, np.concatenate(list(rows.values())), [ID, "dataset_id", *columns]
        )
        frame = got.to_pandas()
        step(1, 3, "qc: neighbours")
        neighbours = M.knn_within(x, k)
        step(2, 3, "qc: metrics")
        report = _report(store, frame, x, neighbours, label, columns, dataset, seed)
        report["sample"] = {
            "requested": sample,
            "cells": len(frame),
            "seed": seed,
            "k": int(neighbours.shape[1]),
            "per_dataset": {d: len(r) for d, r in rows.items()},
            "neighbours": "exact, among the sampled cells",
        }
        step(3, 3, "qc: metrics")
        return report


def _check_bounds(sample: int, k: int) -> None:
    if not 2 <= sample <= MAX_SAMPLE:
        raise QueryError(f"the sample must be between 2 and {MAX_SAMPLE:,} cells, got {sample:,}")
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}, got {k}")


def _sample_rows(table, sample: int, seed: int) -> dict[str, np.ndarray]:
    """{dataset_id: sampled Lance row ids}, balanced over data sets (`metrics.quotas`), drawn
    with `seed` from one pass over the dataset_id column."""
    codes, row_ids, names = [], [], {}
    scan = table.search().with_row_id(True).select(["dataset_id"]).limit(None)
    for batch in scan.to_batches(SCAN_ROWS):
        seen, inverse = np.unique(
            batch.column("dataset_id").to_numpy(zero_copy_only=False), return_inverse=True
        )
        known = np.array([names.setdefault(d, len(names)) for d in seen], dtype=np.int64)
        codes.append(known[inverse.ravel()])
        row_ids.append(batch.column("_rowid").to_numpy())
    code, row_id = np.concatenate(codes), np.concatenate(row_ids)
    order = np.argsort(code, kind="stable")
    by_dataset = np.split(row_id[order], np.cumsum(np.bincount(code, minlength=len(names)))[:-1])
    take = M.quotas(np.array([len(r) for r in by_dataset]), sample)
    rng = np.random.default_rng(seed)
    return {
        d: np.sort(rng.choice(by_dataset[c], size=int(take[c]), replace=False))
        for d, c in sorted(names.items())
    }


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a label column (-1 where missing or empty) and the labels."""
    values = values.astype(object).where(values.notna() & (values.astype(str) != ""), None)
    code, names = pd.factorize(values, sort=True)
    return code.astype(np.int64), np.asarray(names, dtype=object)


def _cosine(x: np.ndarray, rng: np.random.Generator) -> dict:
    mean, std = M.cosine_summary(x)
    pairs = M.cosine_pairs(x, PAIRS, rng)
    if len(pairs) == 0:
        return {"mean": None, "std": None, "p05": None, "p50": None, "p95": None, "histogram": []}
    p05, p50, p95 = np.quantile(pairs, [0.05, 0.5, 0.95])
    return {
        "mean": mean,
        "std": std,
        "p05": float(p05),
        "p50": float(p50),
        "p95": float(p95),
        "histogram": np.histogram(pairs, COSINE_BINS)[0].tolist(),
    }


def _mixing(observed, plain, conditional, group, names, rows) -> dict:
    """Mixing of the cells `rows`: against random mixing overall, and within each label
    (`conditional`) when there are labels; `score` is the label-conditional one then."""
    out = {
        "other_share": _mean(observed[rows]),
        "expected": _mean(plain[rows]),
        "score_all_cells": M.mixing_score(observed[rows], plain[rows]),
    }
    if conditional is None:
        out["score"] = out["score_all_cells"]
        return out
    out["score"] = M.mixing_score(observed[rows], conditional[rows])
    out["by_label"] = []
    for g in np.unique(group[rows & (group >= 0)]):
        in_label = rows & (group == g)
        out["by_label"].append(
            {
                "label": str(names[g]),
                "cells": int(in_label.sum()),
                "other_share": _mean(observed[in_label]),
                "expected": _mean(conditional[in_label]),
                "score": M.mixing_score(observed[in_label], conditional[in_label]),
            }
        )
    return out


def _coherence(neighbours, code, names, rows, by_label: bool) -> dict:
    share = M.label_coherence(neighbours, code)
    out = {
        "share": _mean(share[rows]),
        "chance": M.chance_coherence(code[rows]),
        "cells": int(np.isfinite(share[rows]).sum()),
    }
    if by_label:
        out["by_label"] = [
            {"label": str(names[g]), "cells": int(n), "share": _mean(share[code == g])}
            for g, n in zip(*np.unique(code[code >= 0], return_counts=True), strict=True)
        ]
    return out


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _report(store, frame, x, neighbours, label, columns, only, seed) -> dict:
    batch, batch_names = _codes(frame["dataset_id"])
    observed = M.other_share(neighbours, batch)
    plain = M.expected_other_share(batch)
    labels = {c: _codes(frame[c]) for c in columns}
    group, group_names = labels[label] if label else (None, None)
    conditional = M.expected_other_share(batch, group) if label else None
    everyone = np.ones(len(frame), dtype=bool)

    def section(rows: np.ndarray, overall: bool) -> dict:
        rng = np.random.default_rng(seed)
        out = {"cosine": _cosine(x[rows], rng)}
        out["mixing"] = _mixing(observed, plain, conditional, group, group_names, rows)
        out["coherence"] = {
            c: _coherence(neighbours, code, names, rows, by_label=overall)
            for c, (code, names) in labels.items()
        }
        top = TOP_CONFUSIONS if overall else TOP_CONFUSIONS // 2
        out["confusions"] = {
            c: M.confusions(neighbours, code, names, top, cells=rows)
            for c, (code, names) in labels.items()
        }
        return out

    records = {r["dataset_id"]: r for r in store.datasets().to_dict("records")}
    rejects = store.reject_reasons(only)
    datasets = []
    for b, dataset_id in enumerate(batch_names):
        if only is not None and dataset_id != only:
            continue
        rows = batch == b
        datasets.append(
            {
                **_ingest_record(records.get(dataset_id, {"dataset_id": dataset_id})),
                "rejects": rejects.get(dataset_id, {}),
                "sampled": int(rows.sum()),
                **section(rows, overall=False),
            }
        )
    overall = {"cells": len(frame), "datasets": len(batch_names), **section(everyone, True)}
    return {
        "store": store.uri,
        "model": store.model_info(),
        "label": label,
        "label_columns": columns,
        "thresholds": {"collapse_mean_cosine": COLLAPSE_COSINE, "poor_mixing": POOR_MIXING},
        "cosine_bins": COSINE_BINS.tolist(),
        "overall": overall,
        "datasets": datasets,
        "flags": _flags(overall, datasets, len(batch_names)),
    }


RECORD = (
    "dataset_id",
    "status",
    "species",
    "n_cells",
    "n_embedded",
    "n_rejected",
    "n_genes",
    "genes_matched",
    "model_name",
    "model_fingerprint",
    "seed",
    "embedding_source",
)


def _ingest_record(row: dict) -> dict:
    """What ingest recorded of a data set, JSON-safe (missing numbers None)."""
    out = {}
    for key in RECORD:
        value = row.get(key)
        out[key] = (
            None if value is None or (isinstance(value, float) and np.isnan(value)) else value
        )
        if isinstance(out[key], np.generic):
            out[key] = out[key].item()
    return out


def _flags(overall: dict, datasets: list[dict], n_datasets: int) -> list[dict]:
    """What crossed a threshold, one line each: collapse (overall and per data set) and poor
    mixing (per data set, when there is another data set to mix with)."""
    flags = []
    for where, part in [(None, overall), *((d["dataset_id"], d) for d in datasets)]:
        mean = part["cosine"]["mean"]
        if mean is not None and mean >= COLLAPSE_COSINE:
            flags.append(
                {
                    "dataset_id": where,
                    "flag": "collapse",
                    "value": mean,
                    "message": f"mean pairwise cosine {mean:.3f} >= {COLLAPSE_COSINE}: "
                    "the embeddings sit near one direction",
                }
            )
    for d in datasets if n_datasets > 1 else []:
        score = d["mixing"]["score"]
        if score is not None and score < POOR_MIXING:
            flags.append(
                {
                    "dataset_id": d["dataset_id"],
                    "flag": "poor_mixing",
                    "value": score,
                    "message": f"mixing score {score:.2f} < {POOR_MIXING}: its cells' neighbours "
                    "come from other data sets far less often than random mixing would give",
                }
            )
    return flags
