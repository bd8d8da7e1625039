"""Query cells as vectors in the store's space, and the label column they are annotated with.

Query cells are embedded on the fly with the store's own model (refused when the model or
the embedding width differs from the store's), or taken from an obsm key, or given as an
array: vectors from another model live in another space, so a search would be meaningless.
Cells embedded with the other gene filter than the store's (io/genes.py) live in the same
space, a little apart: that is a one-line warning, not an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from uceindex.errors import QueryError, StoreError
from uceindex.io.genes import EXTERNAL, GeneFilter, gene_filter_of
from uceindex.io.obs import species_of
from uceindex.store.schema import EMBEDDING
from uceindex.store.store import Store
from uceindex.store.writer import legacy_binding, vocabulary_mismatch

LABEL = "cell_type"  # default label column

Progress = Callable[..., None]  # progress(done, total, label)


def check_label(store: Store, label: str) -> None:
    """QueryError naming the store's obs columns when `label` is not one of them (or is the
    embedding)."""
    if label not in store.cells.schema.names or label == EMBEDDING:
        have = store.obs_columns()
        raise QueryError(
            f"the store has no label column {label!r}; its cells have: "
            f"{', '.join(have) or 'no obs columns'} (choose one with --label)"
        )


def gene_filters(store: Store) -> dict[str, list[str]]:
    """The data sets of the store by the gene filter their cells were embedded with: the
    recorded one, else per cell for the model's own (the only mode before the option) and
    "external" for pre-embedded ones."""
    out: dict[str, list[str]] = {}
    for row in store.datasets().to_dict("records"):
        settings = json.loads(row.get("settings") or "{}")
        default = GeneFilter.PER_CELL.value if row.get("embedding_source") == "uce" else EXTERNAL
        out.setdefault(settings.get("gene_filter", default), []).append(str(row["dataset_id"]))
    return out


def gene_filter_warning(store: Store, used: str | None) -> str | None:
    """One line when query cells embedded with gene filter `used` meet stored cells the model
    embedded with the other one; None when they agree (or either is unknown)."""
    if used not in {f.value for f in GeneFilter}:
        return None
    other = {mode: ids for mode, ids in gene_filters(store).items() if mode not in (used, EXTERNAL)}
    if not other:
        return None
    mode, ids = next(iter(other.items()))
    names = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return (
        f"the query cells were embedded with --gene-filter {used} but the store's data sets "
        f"{names} with --gene-filter {mode}: their embeddings differ a little (docs/embed.md); "
        f"embed the query with --gene-filter {mode} to compare like with like"
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
    gene_filter: str | GeneFilter = GeneFilter.PER_CELL,
    progress: Progress | None = None,
) -> tuple[np.ndarray, pd.Index, list[str]]:
    """Query cells -> (vectors (n, D) float32, NaN rows for cells that cannot be searched;
    their names; warnings). `query` is an AnnData or an (n, D) array. An AnnData without
    embedding_key is embedded here with the store's model and `gene_filter` (writes its
    obsm["X_uce"]); the model must be the store's (fingerprint), and the width must be the
    store's either way. A gene filter other than the stored cells' is a warning."""
    gene_filter = gene_filter_of(gene_filter)
    used = None  # the gene filter the query's vectors were made with, when known
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
            used = dict(query.uns.get("uce", {})).get("gene_filter", GeneFilter.PER_CELL.value)
            if made_by and known_model(info) and made_by != info["model_fingerprint"]:
                raise QueryError(
                    f"obsm['X_uce'] was made by model fingerprint {made_by}, the store holds "
                    f"{info['model_name']} (fingerprint {info['model_fingerprint']}): embed the "
                    "query with the store's model (--model-dir) or use another store"
                )
            uce = dict(query.uns.get("uce", {}))
            mismatch = vocabulary_mismatch(store, str(uce.get("species")), uce.get("vocabulary"))
            if mismatch is not None:
                raise QueryError(mismatch)
        vectors, names = np.asarray(query.obsm[embedding_key]), query.obs_names
    else:
        vectors, names = _embed(
            store, info, query, species, model_dir, model, device, gene_filter, progress
        )
        used = gene_filter.value
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != info["embedding_dim"]:
        width = f"{vectors.shape[1]}-d" if vectors.ndim == 2 else f"of shape {vectors.shape}"
        raise QueryError(
            f"the query embeddings are {width} but the store holds {info['embedding_dim']}-d "
            f"embeddings of {info['model_name']}: use the store's model or the obsm key of "
            "its embeddings"
        )
    warning = gene_filter_warning(store, used)
    return vectors, pd.Index(names.astype(str)), [warning] if warning else []


def known_model(info: dict) -> bool:
    """False for a store of embeddings ingested from obsm without a known model."""
    return bool(info["model_fingerprint"]) and not str(info["model_fingerprint"]).startswith(
        "obsm:"
    )


def _embed(store, info, adata, species, model_dir, model, device, gene_filter, progress):
    if not known_model(info):
        raise QueryError(
            f"the store's embeddings came from {info['model_fingerprint']} (no known model), "
            "so query cells cannot be embedded to match them: pass --embedding-key"
        )
    organism = adata.obs["organism"] if "organism" in adata.obs else None
    species = species or species_of(dict(adata.uns.get("uce", {})), organism)
    if species is None:
        raise QueryError(
            "embedding the query needs its species: pass --species (human, mouse, ...) or give "
            'the cells an obs["organism"] (e.g. Homo sapiens)'
        )
    # torch only when a query is embedded: a search of stored or given vectors never needs it
    from uceindex.embedding import embed
    from uceindex.model.load import UCEModel

    remembered = None
    if model is None and model_dir is None and store.model_dir():
        remembered = store.model_dir()  # where the store's model was when it was made
        if not Path(remembered).is_dir():
            raise QueryError(
                f"the store's model directory {remembered} is gone: pass the directory of its "
                f"model {info['model_name']} with --model-dir"
            )
    model = model or UCEModel(model_dir or remembered)
    old = legacy_binding(store, model.fingerprint, model.legacy_fingerprint)
    if old is not None:
        raise QueryError(old)
    if model.fingerprint != info["model_fingerprint"] or (
        model.config.output_dim != info["embedding_dim"]
    ):
        given = (
            f"the store's model directory {remembered} now holds"
            if remembered
            else ("the model given is")
        )
        raise QueryError(
            f"the store holds {info['embedding_dim']}-d embeddings of {info['model_name']} "
            f"(fingerprint {info['model_fingerprint']}) but {given} {model.name} "
            f"({model.config.output_dim}-d, fingerprint {model.fingerprint}): pass the store's "
            "model directory with --model-dir"
        )
    mismatch = vocabulary_mismatch(store, species, model.vocabulary_fingerprint(species))
    if mismatch is not None:
        raise QueryError(mismatch)
    step = (lambda done, total: progress(done, total, "embedding")) if progress else None
    vectors = embed(
        adata, species, model=model, device=device, gene_filter=gene_filter, progress=step
    )
    return vectors, adata.obs_names
