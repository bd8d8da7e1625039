"""Query cells as vectors in the store's space, and the label column they are annotated with.

Query cells are embedded on the fly with the store's own model (refused when the model or
the embedding width differs from the store's), or taken from an obsm key, or given as an
array: vectors from another model live in another space, so a search would be meaningless.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from uceindex.errors import QueryError, StoreError
from uceindex.store.store import Store

LABEL = "cell_type"  # default label column

Progress = Callable[..., None]  # progress(done, total, label)


def check_label(store: Store, label: str) -> None:
    """QueryError naming the store's obs columns when `label` is not one of them."""
    if label not in store.cells.schema.names:
        have = store.obs_columns()
        raise QueryError(
            f"the store has no label column {label!r}; its cells have: "
            f"{', '.join(have) or 'no obs columns'} (choose one with --label)"
        )


def query_vectors(
    store: Store,
    query,
    *,
    species: str | None = None,
    embedding_key: str | None = None,
    model_dir=None,
    model=None,
    device: str | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, pd.Index]:
    """Query cells -> (vectors (n, D) float32, NaN rows for cells that cannot be searched;
    their names). `query` is an AnnData or an (n, D) array. An AnnData without
    embedding_key is embedded here with the store's model (writes its obsm["X_uce"]); the
    model must be the store's (fingerprint), and the width must be the store's either way."""
    info = store.model_info()
    if info is None:
        raise StoreError(f"the store at {store.uri} has no cells yet: ingest a data set first")
    if isinstance(query, np.ndarray):
        vectors = np.atleast_2d(query)
        names = pd.Index([str(i) for i in range(len(vectors))])
    elif embedding_key is not None:
        if embedding_key not in query.obsm:
            raise QueryError(
                f"the query has no obsm[{embedding_key!r}]; it has: "
                f"{', '.join(query.obsm.keys()) or 'none'}"
            )
        if embedding_key == "X_uce":  # `uceindex embed` recorded which model made it
            made_by = dict(query.uns.get("uce", {})).get("fingerprint")
            if made_by and _known_model(info) and made_by != info["model_fingerprint"]:
                raise QueryError(
                    f"obsm['X_uce'] was made by model fingerprint {made_by}, the store holds "
                    f"{info['model_name']} (fingerprint {info['model_fingerprint']}): embed the "
                    "query with the store's model (--model-dir) or use another store"
                )
        vectors, names = np.asarray(query.obsm[embedding_key]), query.obs_names
    else:
        vectors, names = _embed(info, query, species, model_dir, model, device, progress)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != info["embedding_dim"]:
        width = f"{vectors.shape[1]}-d" if vectors.ndim == 2 else f"of shape {vectors.shape}"
        raise QueryError(
            f"the query embeddings are {width} but the store holds {info['embedding_dim']}-d "
            f"embeddings of {info['model_name']}: use the store's model or the obsm key of "
            "its embeddings"
        )
    return vectors, pd.Index(names.astype(str))


def _known_model(info: dict) -> bool:
    """False for a store of embeddings ingested from obsm without a known model."""
    return bool(info["model_fingerprint"]) and not str(info["model_fingerprint"]).startswith(
        "obsm:"
    )


def _embed(info, adata, species, model_dir, model, device, progress):
    if not _known_model(info):
        raise QueryError(
            f"the store's embeddings came from {info['model_fingerprint']} (no known model), "
            "so query cells cannot be embedded to match them: pass --embedding-key"
        )
    if species is None:
        raise QueryError("embedding the query needs its species (--species human, mouse, ...)")
    # torch only when a query is embedded: a search of stored or given vectors never needs it
    from uceindex.embedding import embed
    from uceindex.model.load import UCEModel

    model = model or UCEModel(model_dir)
    if model.fingerprint != info["model_fingerprint"] or (
        model.config.output_dim != info["embedding_dim"]
    ):
        raise QueryError(
            f"the store holds {info['embedding_dim']}-d embeddings of {info['model_name']} "
            f"(fingerprint {info['model_fingerprint']}) but the model given is {model.name} "
            f"({model.config.output_dim}-d, fingerprint {model.fingerprint}): pass the store's "
            "model directory with --model-dir"
        )
    step = (lambda done, total: progress(done, total, "embedding")) if progress else None
    vectors = embed(adata, species, model=model, device=device, progress=step)
    return vectors, adata.obs_names
