"""A data set of the store back as AnnData: its obs columns and obsm["X_uce"]."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from uceindex.atomic import written_whole
from uceindex.errors import StoreError
from uceindex.io.paths import check_output
from uceindex.store import schema as S
from uceindex.store.store import Store, sql_string

EXPORT_KEY = "X_uce"  # obsm key of the exported embeddings


def export_dataset(
    store: Store | str | os.PathLike | None, dataset_id: str, storage_options: dict | None = None
):
    """AnnData (X empty: n_cells x 0) of the embedded cells of one data set, in file order.

    obs has the data set's own obs columns under their original names (nulls as NaN/None);
    obsm["X_uce"] the embeddings; uns["uce"] the `datasets` row (`provenance`). Rejected cells are not in
    `cells` and so not exported (they are listed in the store's `rejects`). storage_options:
    as `Store.open` takes them."""
    with Store.using(store, storage_options=storage_options) as store:
        return _as_anndata(store, dataset_id)


def _as_anndata(store: Store, dataset_id: str):
    import anndata

    row = store.dataset(dataset_id)
    if row is None:
        known = ", ".join(store.datasets()["dataset_id"]) or "none"
        raise StoreError(f"no data set {dataset_id!r} in {store.uri} (it holds: {known})")
    if row["status"] != "complete":
        raise StoreError(
            f"data set {dataset_id!r} is {row['status']}, not complete: run its ingest again "
            "to finish it, then export"
        )
    settings = json.loads(row["settings"] or "{}")
    columns = dict(settings.get("obs_columns", []))  # source name -> store name, file order
    cells = store.cells
    if cells is None:
        raise StoreError(f"the store at {store.uri} holds no cells yet")
    present = set(cells.schema.names)
    wanted = [c for c in columns.values() if c in present]
    table = (
        cells.search()
        .where(f"dataset_id = {sql_string(dataset_id)}")
        .select(["cell_id", S.CHUNK, *wanted, S.EMBEDDING])
        .limit(None)
        .to_arrow()
    )
    # Rows come back in commit order; a stable sort on the chunk keeps file order after compaction.
    order = np.argsort(table.column(S.CHUNK).to_numpy(), kind="stable")
    table = table.take(order)
    prefix = len(dataset_id) + 1
    names = [c[prefix:] for c in table.column("cell_id").to_pylist()]
    emb = table.column(S.EMBEDDING).combine_chunks()
    dim = emb.type.list_size
    embeddings = emb.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    back = {store_name: source for source, store_name in columns.items()}
    obs = (
        table.select(wanted).to_pandas().rename(columns=back)
        if wanted
        else pd.DataFrame(index=range(len(names)))
    )
    obs.index = pd.Index(names, dtype=object)
    for column in obs.columns:  # strings with few distinct values back to categoricals
        if obs[column].dtype == object and obs[column].nunique() < max(len(obs) // 2, 1):
            obs[column] = obs[column].astype("category")
    adata = anndata.AnnData(obs=obs, obsm={EXPORT_KEY: embeddings})
    adata.uns["uce"] = provenance(row)
    return adata


# `datasets` columns under the names `uceindex embed` gives them in uns["uce"]
EMBED_KEYS = {
    "model_name": "model",
    "model_fingerprint": "fingerprint",
    "n_cells": "cells",
    "n_embedded": "embedded",
    "n_rejected": "rejected",
}
EMBED_SETTINGS = ("mode", "gene_filter", "precision", "counts_from")  # from `settings`


def provenance(row: dict) -> dict:
    """A `datasets` row as uns["uce"]: the keys `uceindex embed` writes where they mean the
    same (model, fingerprint, seed, cells, embedded, gene_filter...), the others under their
    column names; numbers stay numbers, times are ISO text, unset values are left out (.h5ad
    cannot hold None)."""
    settings = json.loads(row.get("settings") or "{}")
    out = {EMBED_KEYS.get(k, k): v for k, v in row.items()}
    out.update({k: settings[k] for k in EMBED_SETTINGS if k in settings})
    return {
        k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in out.items() if v is not None
    }


def export(
    store: Store | str | os.PathLike | None,
    dataset_id: str,
    out: str | os.PathLike,
    storage_options: dict | None = None,
) -> dict:
    """Write one data set as .h5ad (`export_dataset`'s AnnData), whole or not at all; returns
    what `uceindex export` reports."""
    check_output(out, (".h5ad",), "OUTPUT")  # before the rows are read
    adata = export_dataset(store, dataset_id, storage_options)
    with written_whole(out) as scratch:
        adata.write_h5ad(scratch)
    return {
        "dataset_id": dataset_id,
        "output": str(out),
        "cells": int(adata.n_obs),
        "obs_columns": list(adata.obs.columns),
        "obsm": EXPORT_KEY,
        "embedding_dim": int(adata.obsm[EXPORT_KEY].shape[1]),
    }
