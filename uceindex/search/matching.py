"""Cross-species matching: which reference labels the cells of each query label land on.

Input is one row per query cell (its own label, the label predicted from the other
species' reference, the mean neighbour similarity), as `weighted_vote` gives. Output is a
long table, a query x reference matrix of shares, and a heatmap PNG. No store access here.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from uceindex.errors import QueryError

MISSING_LABEL = "(none)"  # stands for a missing label in the matrix and the plot
MATCH_COLUMNS = [
    "query_label",
    "reference_label",
    "n_cells",
    "share",
    "mean_similarity",
    "novel_share",
]
ANNOTATE_MAX_CELLS = 400  # write the share in each heatmap square up to this many squares
MAX_FIGURE_INCHES = 40  # a huge label set still gives a PNG a viewer can open


def _check_orderable(labels: pd.Series, name: str) -> None:
    """pandas sorts mixed str/int labels without complaint but in no useful order: refuse."""
    try:
        sorted(labels.dropna().unique().tolist())
    except TypeError:
        raise QueryError(
            f"{name} values mix types (for example strings and numbers); "
            "convert the label column to one type"
        ) from None


def match_table(
    query_labels: np.ndarray,
    predicted_labels: np.ndarray,
    mean_similarity: np.ndarray,
    novel: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (query label, reference label) pair that occurs, with n_cells, share
    (of that query label's cells), the mean of their mean neighbour similarity, and
    novel_share: the share of the query label's cells (all its pairs, so the same on each
    of its rows) that are novel, far from every stored cell; NaN where `novel` is not
    given or unknown for all of them.

    All inputs are (n,) per query cell; `novel` is bool, NA where a cell was not searched
    (left out of its share). Cells without a prediction (no neighbour,
    predicted label None) are kept with reference_label None, so each query label's shares
    sum to 1 and no cell is dropped silently; a missing query label is kept the same way.
    NaN similarities are skipped in the mean. Sorted by query_label, then share descending,
    then reference_label; missing labels sort last.
    """
    q = np.asarray(query_labels, dtype=object)
    r = np.asarray(predicted_labels, dtype=object)
    sim = np.asarray(mean_similarity, dtype=np.float64)
    if q.ndim != 1 or r.shape != q.shape or sim.shape != q.shape:
        raise QueryError(
            f"query labels {q.shape}, predicted labels {r.shape} and mean similarities "
            f"{sim.shape} must be 1-D arrays with one entry per query cell"
        )
    flags = pd.array(np.full(len(q), pd.NA) if novel is None else novel, dtype="boolean")
    if len(flags) != len(q):
        raise QueryError(f"novel {flags.shape} must have one entry per query cell ({len(q)})")
    cells = pd.DataFrame({"query_label": q, "reference_label": r, "similarity": sim})
    table = (
        cells.groupby(["query_label", "reference_label"], dropna=False, sort=False)
        .agg(n_cells=("similarity", "size"), mean_similarity=("similarity", "mean"))
        .reset_index()
    )
    per_query = table.groupby("query_label", dropna=False)["n_cells"].transform("sum")
    table["n_cells"] = table["n_cells"].astype(np.int64)
    table["share"] = table["n_cells"] / per_query
    novel_share = pd.Series(flags, dtype="Float64").groupby(q, dropna=False).mean()
    table["novel_share"] = (
        table["query_label"].map(novel_share.astype("float64").to_dict()).astype(np.float64)
    )
    for col in ("query_label", "reference_label"):
        table[col] = table[col].astype(object).where(table[col].notna(), None)
        _check_orderable(table[col], col)
    table = table.sort_values(
        ["query_label", "share", "reference_label"],
        ascending=[True, False, True],
        na_position="last",
        kind="mergesort",
    )
    return table[MATCH_COLUMNS].reset_index(drop=True)


def best_matches(table: pd.DataFrame) -> pd.DataFrame:
    """`match_table` output -> one row per query label, in the table's order: its best
    reference label (the highest share), that share and mean similarity, and in n_cells all
    the cells of the query label."""
    totals = table.groupby("query_label", dropna=False, sort=False)["n_cells"].transform("sum")
    return table.assign(n_cells=totals).drop_duplicates("query_label").reset_index(drop=True)


def match_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """`match_table` output -> query labels (rows) x reference labels (columns) of share,
    0 where a pair never occurs, missing labels shown as MISSING_LABEL. Rows keep the
    table's order; columns follow each row's best match in row order (a near-diagonal when
    the species agree), then the unmatched labels sorted, so the heatmap is readable."""
    missing = [c for c in ("query_label", "reference_label", "share") if c not in table]
    if missing:
        raise QueryError(f"not a match table: columns {missing} are missing")
    t = table[["query_label", "reference_label", "share"]].copy()
    for col in ("query_label", "reference_label"):
        t[col] = t[col].astype(object).where(t[col].notna(), MISSING_LABEL)
    rows = list(dict.fromkeys(t["query_label"]))
    best = t.sort_values("share", ascending=False, kind="mergesort").drop_duplicates("query_label")
    best_of = dict(zip(best["query_label"], best["reference_label"], strict=True))
    cols = list(dict.fromkeys(best_of[q] for q in rows))
    cols += sorted(set(t["reference_label"]) - set(cols), key=str)
    matrix = t.pivot(index="query_label", columns="reference_label", values="share")
    matrix = matrix.reindex(index=rows, columns=cols).fillna(0.0)
    matrix.index.name, matrix.columns.name = "query_label", "reference_label"
    return matrix


def plot_match(
    matrix: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "Cross-species match: share of each query label's cells per reference label",
    xlabel: str = "reference label",
    ylabel: str = "query label",
) -> Path:
    """Draw `match_matrix` output as a heatmap PNG at `path` (parent folder must exist);
    returns the path. Uses the Agg canvas directly, never pyplot, so it needs no display
    and touches no global matplotlib state (safe inside the service)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # a dependency; loaded when used
    from matplotlib.figure import Figure

    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise QueryError("the match matrix is empty: there is nothing to plot")
    values = matrix.to_numpy(dtype=np.float64)
    n_rows, n_cols = values.shape
    width = min(MAX_FIGURE_INCHES, max(6.0, 3.5 + 0.4 * n_cols))
    height = min(MAX_FIGURE_INCHES, max(4.0, 2.5 + 0.35 * n_rows))
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(
        values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(
        np.arange(n_cols),
        [str(c) for c in matrix.columns],
        rotation=45,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
    )
    ax.set_yticks(np.arange(n_rows), [str(i) for i in matrix.index], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, width=int(8 * width)), fontsize=10)
    if n_rows * n_cols <= ANNOTATE_MAX_CELLS:
        for i, j in zip(*np.nonzero(values), strict=True):
            ax.text(
                j,
                i,
                f"{values[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="black" if values[i, j] > 0.6 else "white",
            )
    fig.colorbar(image, ax=ax, label="share of the query label's cells")
    path = Path(path)
    fig.savefig(path, format="png", dpi=120)
    return path
