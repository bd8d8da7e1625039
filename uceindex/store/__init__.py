"""The LanceDB cell store: tables `cells`, `datasets`, `rejects` (schemas in `schemas/`).

Public API (docs/store.md has the full contract):

    from uceindex.store import Store
    with Store.open("./atlas") as store:           # Store.open(uri, create=False, storage_options=None)
        store.uri, store.cells, store.datasets_table, store.rejects   # lancedb tables or None
        store.model_info()   # {"model_name", "model_fingerprint", "embedding_dim"} or None
        store.datasets()     # pandas DataFrame, one row per data set
        store.count()        # rows in cells (store.count(dataset_id) for one data set)
        store.complete_dataset_ids(); store.refresh(); store.versions()

Reads that take a Store or a URI: `list_datasets(store)` (what `uceindex datasets` shows),
`export_dataset(store, dataset_id) -> AnnData` (obs + obsm["X_uce"]) and
`uceindex.store.export.export(store, dataset_id, out)`, which writes it as .h5ad.

Every open checks the store cheaply (`integrity`: files present, rows as `datasets` recorded)
and refuses a damaged one (StoreDamagedError); `check.check_store(uri, repair=False)` examines
it whole and restores its newest consistent version; `lock.ingest_lock` lets one ingest of a
data set run at a time.

Writing is `uceindex.ingestion` (`ingest`, `ingest_embeddings`), over the exactly-once
protocol of `uceindex.store.writer`.
"""

from uceindex.store.export import export_dataset
from uceindex.store.store import DEFAULT_STORE, STORE_ENV, Store, default_store_uri, list_datasets

__all__ = [
    "Store",
    "default_store_uri",
    "STORE_ENV",
    "DEFAULT_STORE",
    "export_dataset",
    "list_datasets",
]
