"""Predictions written out: a CSV or Parquet file, or obs columns of the query AnnData."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uceindex.atomic import written_whole
from uceindex.errors import QueryError
from uceindex.io.paths import check_output
from uceindex.search.query import LABEL

OUT_SUFFIXES = (".csv", ".parquet", ".h5ad")


def add_to_obs(adata, frame: pd.DataFrame, label: str = LABEL):
    """Write `annotate` output into adata.obs as f"{label}_{column}" (e.g.
    cell_type_predicted, cell_type_novel); rows must be adata's cells in order. In place;
    returns adata."""
    if len(frame) != adata.n_obs or not (frame.index == adata.obs_names.astype(str)).all():
        raise QueryError("the predictions are not for this AnnData's cells, in its order")
    for col in frame.columns:
        values = frame[col].to_numpy()
        if frame[col].dtype == object:  # labels with gaps: categorical writes to .h5ad
            values = pd.Categorical(values)
        adata.obs[f"{label}_{col}"] = values
    adata.uns[f"{label}_annotation"] = {
        k: v for k, v in frame.attrs.items() if v is not None and not isinstance(v, dict)
    } | {f"search_{k}": v for k, v in frame.attrs.get("search", {}).items()}
    return adata


def write_output(frame: pd.DataFrame, path, *, adata=None, label: str = LABEL) -> Path:
    """Write predictions by extension: .csv, .parquet, or .h5ad (the query AnnData with the
    columns added to obs, see `add_to_obs`; needs `adata`). Written whole, then renamed."""
    path = check_output(path, OUT_SUFFIXES, "--out")
    suffix = path.suffix.lower()
    if suffix == ".h5ad" and adata is None:
        raise QueryError("an .h5ad output needs the query AnnData (pass adata=)")
    with written_whole(path) as partial:
        if suffix == ".csv":
            frame.to_csv(partial, index_label="cell")
        elif suffix == ".parquet":
            frame.rename_axis("cell").to_parquet(partial)
        else:
            add_to_obs(adata, frame, label).write_h5ad(partial)
    return path
