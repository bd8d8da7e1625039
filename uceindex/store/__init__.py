"""The LanceDB cell store: tables `cells`, `datasets`, `rejects` (schemas in `schemas/`).

Public API (docs/store.md has the full contract):

    from uceindex.store import Store
    with Store.open("./atlas") as store:           # Store.open(uri, create=False)
        store.uri, store.cells, store.datasets_table, store.rejects   # lancedb tables or None
        store.model_info()   # {"model_name", "model_fingerprint", "embedding_dim"} or None
        store.datasets()     # pandas DataFrame, one row per data set
        store.count()        # rows in cells (store.count(dataset_id) for one data set)
        store.complete_dataset_ids(); store.refresh(); store.versions()

Writing (see uceindex.ingestion):

    ingest(paths, species=..., store=..., model_dir=..., embedding_key=None, ...) -> IngestReport
    ingest_embeddings(store, dataset_id, obs, embeddings, species, model_name,
                      model_fingerprint, *, replace=False, reasons=None) -> dict

`ingest_embeddings` writes precomputed embeddings (n, D) with their obs DataFrame (index =
obs names) without any file; `store` is a Store or a URI (created if missing).
Export: `export_dataset(store, dataset_id) -> AnnData` (obs + obsm["X_uce"]).
"""

from uceindex.store.export import export_dataset
from uceindex.store.store import DEFAULT_STORE, STORE_ENV, Store, default_store_uri

__all__ = ["Store", "default_store_uri", "STORE_ENV", "DEFAULT_STORE", "export_dataset"]
