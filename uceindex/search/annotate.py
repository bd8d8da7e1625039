"""Annotate query cells from a store: k-NN label vote, novelty, similar cells, cross-species match.

Query cells are embedded on the fly with the store's own model (refused when the model
or the embedding width differs from the store's), or taken from an obsm key. Each is
searched against the labelled cells of the store (optionally narrowed by a SQL `where`),
all queries in batched searches (`neighbours.knn`); `vote.weighted_vote` turns the
neighbours into a label, its confidence and the runner-up.

Novelty (`novel` column): a query cell is novel when its mean similarity to its k
neighbours is below what 99% of the reference's own cells have to theirs. The threshold
is calibrated on the store (NOVELTY_SAMPLE reference cells searched with the same k,
filter and search settings, each cell's own hit dropped; `vote.novelty_threshold`) and
cached per (store, table version, k, reference filter, search settings) in memory and in
$XDG_CACHE_HOME/uceindex/novelty.json, so a new ingest or index build recalibrates.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uceindex.errors import QueryError, StoreError
from uceindex.search.index import SearchParams, cells_table, describe_index, search_params
from uceindex.search.match import match_matrix, match_table, plot_match
from uceindex.search.neighbours import (
    both,
    cell_vector,
    count_cells,
    knn,
    sample_cells,
    sql_name,
)
from uceindex.search.vote import NOVELTY_QUANTILE, is_novel, novelty_threshold, weighted_vote
from uceindex.store.store import Store, sql_string

LABEL = "cell_type"  # default label column
K = 50  # default neighbours per query cell
SIMILAR_K = 20
NOVELTY_SAMPLE = 1000  # reference cells searched to calibrate the novelty threshold
CACHE_FILE = "novelty.json"  # under uceindex.model.files.cache_dir()
CACHE_ENTRIES = 500  # thresholds kept on disk, newest first
NEIGHBOUR_SEP = ";"  # joins neighbour ids in the `neighbours` column
SIMILAR_COLUMNS = ("dataset_id", "species", "cell_type", "tissue")  # shown when present
COLUMNS = [
    "predicted",
    "confidence",
    "runner_up",
    "runner_up_share",
    "mean_similarity",
    "n_neighbours",
    "novel",
]
OUT_SUFFIXES = (".csv", ".parquet", ".h5ad")

Progress = Callable[..., None]  # progress(done, total, label)


# -- opening ------------------------------------------------------------------------------------


class _Opened:
    """A Store passed in is used as is; a URI is opened here and closed on exit."""

    def __init__(self, store):
        self.own = not isinstance(store, Store)
        self.store = Store.open(store) if self.own else store

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc) -> None:
        if self.own:
            self.store.close()


def _check_label(store: Store, label: str) -> None:
    if label not in store.cells.schema.names:
        have = store.obs_columns()
        raise QueryError(
            f"the store has no label column {label!r}; its cells have: "
            f"{', '.join(have) or 'no obs columns'} (choose one with --label)"
        )


# -- query vectors -------------------------------------------------------------------------------


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
        vectors, names = _embed(store, info, query, species, model_dir, model, device, progress)
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


def _embed(store, info, adata, species, model_dir, model, device, progress):
    if not _known_model(info):
        raise QueryError(
            f"the store's embeddings came from {info['model_fingerprint']} (no known model), "
            "so query cells cannot be embedded to match them: pass --embedding-key"
        )
    if species is None:
        raise QueryError("embedding the query needs its species (--species human, mouse, ...)")
    import uceindex
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
    vectors = uceindex.embed(adata, species, model=model, device=device, progress=step)
    return vectors, adata.obs_names


def _searchable(vectors: np.ndarray) -> np.ndarray:
    """Rows that can be searched: finite and not all zero (rejected cells are NaN rows)."""
    finite = np.isfinite(vectors).all(axis=1)
    return finite & (np.abs(np.where(finite[:, None], vectors, 0)).sum(axis=1) > 0)


# -- novelty calibration -------------------------------------------------------------------------

_THRESHOLDS: dict[str, float] = {}


def _cache_path() -> Path:
    from uceindex.model.files import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, threshold: float) -> None:
    """Best effort (a read-only home just recalibrates next time); atomic replace."""
    entries = _read_cache()
    entries[key] = {"threshold": threshold, "at": time.time()}
    newest = sorted(entries.items(), key=lambda kv: -kv[1].get("at", 0))[:CACHE_ENTRIES]
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(dict(newest), indent=1))
        os.replace(partial, path)
    except OSError:
        pass


def novelty_threshold_for(
    store: Store,
    *,
    k: int,
    reference: str | None,
    params: SearchParams,
    sample: int = NOVELTY_SAMPLE,
    seed: int = 0,
) -> float:
    """The novelty threshold of queries searched with k, `reference` and `params` (see the
    module docstring); cached per table version, so it is computed once per store state."""
    table = cells_table(store)
    key = json.dumps(
        [store.uri, table.version, k, reference, params.as_dict(), sample, seed, NOVELTY_QUANTILE]
    )
    if key in _THRESHOLDS:
        return _THRESHOLDS[key]
    cached = _read_cache().get(key)
    if cached is not None:
        _THRESHOLDS[key] = float(cached["threshold"])
        return _THRESHOLDS[key]
    ids, emb = sample_cells(table, sample, where=reference, seed=seed)
    if len(ids) < 2:
        raise QueryError(
            "novelty needs at least two labelled reference cells to calibrate on; "
            "widen --where (or turn novelty off)"
        )
    found = knn(table, emb, k + 1, where=reference, params=params)
    others = found.valid & (found.cell_id != ids[:, None])  # drop the cell itself, not column 0
    keep = others & (np.cumsum(others, axis=1) <= k)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    sims = np.take_along_axis(np.where(keep, found.similarity, np.nan), order, axis=1)
    valid = np.take_along_axis(keep, order, axis=1)
    threshold = novelty_threshold(sims, valid=valid)
    _THRESHOLDS[key] = threshold
    _write_cache(key, threshold)
    return threshold


# -- annotate ------------------------------------------------------------------------------------


def annotate(
    store,
    query,
    *,
    label: str = LABEL,
    k: int = K,
    where: str | None = None,
    species: str | None = None,
    embedding_key: str | None = None,
    model_dir=None,
    model=None,
    neighbour_ids: bool = False,
    novelty: bool = True,
    exact: bool = False,
    nprobes: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Predict `label` for each query cell from its k most similar labelled stored cells.

    store: a Store or a URI. query: AnnData (embedded with the store's model unless
    embedding_key names an obsm entry) or an (n, D) array. where: SQL over `cells` columns
    narrowing the reference (e.g. "tissue = 'lung'"); cells without a label never vote.
    exact / nprobes: force exact search or the partitions an IVF search probes.

    Returns one row per query cell (index: obs names): predicted, confidence (its
    similarity-weighted vote share), runner_up, runner_up_share, mean_similarity,
    n_neighbours, novel (nullable bool), and with neighbour_ids a `neighbours` column of
    ';'-joined cell ids. Cells that could not be embedded get no prediction (novel NA).
    frame.attrs has label, k, where, novelty_threshold and the search settings.
    """
    with _Opened(store) as st:
        cells = cells_table(st)
        _check_label(st, label)
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        vectors, names = query_vectors(
            st,
            query,
            species=species,
            embedding_key=embedding_key,
            model_dir=model_dir,
            model=model,
            device=device,
            progress=progress,
        )
        reference = both(where, _labelled(cells, label))
        n_ref = count_cells(cells, reference)
        if n_ref == 0:
            raise QueryError(
                f"no stored cell has a {label!r} label"
                + (f" where {where}" if where else "")
                + ": check --label and --where"
            )
        if k > n_ref:
            raise QueryError(
                f"k = {k} but the reference holds only {n_ref} labelled cells"
                + (f" where {where}" if where else "")
                + f": lower --k to {n_ref} or less"
            )
        params = search_params(
            describe_index(cells),
            k,
            n_reference=n_ref if reference else None,
            exact=exact,
            nprobes=nprobes,
        )
        ok = _searchable(vectors)
        step = (lambda done, total: progress(done, total, "searching")) if progress else None
        found = knn(
            cells, vectors[ok], k, where=reference, columns=[label], params=params, progress=step
        )
        vote = weighted_vote(found.columns[label], found.similarity, found.valid)
        frame = _frame(names, ok, vote)
        threshold = None
        if novelty:
            threshold = novelty_threshold_for(st, k=k, reference=reference, params=params)
            novel = pd.array(np.full(len(names), pd.NA), dtype="boolean")
            novel[ok] = is_novel(vote.mean_similarity, threshold)
            frame["novel"] = novel
        else:
            frame = frame.drop(columns="novel")
        if neighbour_ids:
            joined = np.full(len(names), None, dtype=object)
            joined[ok] = [NEIGHBOUR_SEP.join(r[r != None]) for r in found.cell_id]  # noqa: E711
            frame["neighbours"] = joined
        frame.attrs.update(
            label=label,
            k=k,
            where=where,
            reference_cells=n_ref,
            novelty_threshold=threshold,
            search=params.as_dict(),
            store=st.uri,
        )
        return frame


def _labelled(table, label: str) -> str | None:
    """The filter that keeps unlabelled cells out of the vote; None when every cell has a
    label (a filter costs: Lance must apply it to every search)."""
    missing = f"{sql_name(label)} IS NULL"
    return f"{sql_name(label)} IS NOT NULL" if count_cells(table, missing) else None


def _frame(names: pd.Index, ok: np.ndarray, vote) -> pd.DataFrame:
    """The vote of the searchable rows spread over all query cells (others empty)."""
    n = len(names)
    out = {}
    for col, empty, dtype in (
        ("predicted", None, object),
        ("confidence", np.nan, np.float64),
        ("runner_up", None, object),
        ("runner_up_share", np.nan, np.float64),
        ("mean_similarity", np.nan, np.float64),
        ("n_neighbours", 0, np.int64),
    ):
        values = np.full(n, empty, dtype=dtype)
        field = "label" if col == "predicted" else col
        values[ok] = getattr(vote, field)
        out[col] = values
    frame = pd.DataFrame(out, index=names)
    frame["novel"] = pd.array(np.full(n, pd.NA), dtype="boolean")
    return frame


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
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise QueryError(f"the output must end in {', '.join(OUT_SUFFIXES)}; got {path.name}")
    if suffix == ".h5ad" and adata is None:
        raise QueryError("an .h5ad output needs the query AnnData (pass adata=)")
    partial = path.with_name(path.name + ".partial")
    if suffix == ".csv":
        frame.to_csv(partial, index_label="cell")
    elif suffix == ".parquet":
        frame.rename_axis("cell").to_parquet(partial)
    else:
        add_to_obs(adata, frame, label).write_h5ad(partial)
    os.replace(partial, path)
    return path


# -- similar cells -------------------------------------------------------------------------------


def similar(
    store,
    cell_id: str,
    k: int = SIMILAR_K,
    *,
    where: str | None = None,
    columns: list[str] | None = None,
    exact: bool = False,
    nprobes: int | None = None,
) -> pd.DataFrame:
    """The k stored cells most similar to the stored cell `cell_id` (itself left out), best
    first: rank, cell_id, similarity and `columns` (default: those of SIMILAR_COLUMNS the
    store has). where narrows the cells searched."""
    with _Opened(store) as st:
        cells = cells_table(st)
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        vector = cell_vector(cells, cell_id)
        names = cells.schema.names
        columns = list(columns) if columns else [c for c in SIMILAR_COLUMNS if c in names]
        n_where = count_cells(cells, where)
        others = n_where - count_cells(cells, both(where, f"cell_id = {sql_string(cell_id)}"))
        if k > others:
            raise QueryError(
                f"k = {k} but only {others} other cells"
                + (f" match {where}" if where else " are in the store")
                + f": lower --k to {others} or less"
            )
        params = search_params(
            describe_index(cells),
            k + 1,
            n_reference=n_where if where else None,
            exact=exact,
            nprobes=nprobes,
        )
        found = knn(cells, vector, k + 1, where=where, columns=columns, params=params)
        keep = found.valid[0] & (found.cell_id[0] != cell_id)
        idx = np.flatnonzero(keep)[:k]
        frame = pd.DataFrame(
            {
                "rank": np.arange(1, len(idx) + 1),
                "cell_id": found.cell_id[0][idx],
                "similarity": found.similarity[0][idx],
                **{c: found.columns[c][0][idx] for c in columns},
            }
        )
        frame.attrs.update(cell_id=cell_id, k=k, where=where, search=params.as_dict())
        return frame


# -- cross-species match -------------------------------------------------------------------------


@dataclass
class MatchResult:
    """Per query cell predictions (`cells`, with the query's own label in `query_label`),
    the long matching table and the query x reference matrix of shares."""

    cells: pd.DataFrame
    table: pd.DataFrame
    matrix: pd.DataFrame
    species: str
    against: str

    def plot(self, path) -> Path:
        """The matrix as a heatmap PNG (match.plot_match)."""
        return plot_match(
            self.matrix,
            path,
            title=f"{self.species} cells vs {self.against} reference: share of each "
            f"{self.species} label's cells per predicted {self.against} label",
            xlabel=f"{self.against} reference label",
            ylabel=f"{self.species} query label",
        )


def store_species(store: Store) -> list[str]:
    """The species of the store's data sets."""
    frame = store.datasets()
    return sorted({str(s) for s in frame["species"].dropna()}) if len(frame) else []


def match(
    store,
    query,
    *,
    species: str,
    against: str,
    label: str = LABEL,
    query_label: str | None = None,
    k: int = K,
    where: str | None = None,
    embedding_key: str | None = None,
    model_dir=None,
    model=None,
    exact: bool = False,
    nprobes: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
) -> MatchResult:
    """Match query cells of `species` (an AnnData) against the stored cells of species
    `against`: each query cell gets the best `label` of its k most similar reference cells
    (`annotate` with where "species = against"), then `match.match_table` / `match_matrix`
    tabulate the query's own labels (obs[query_label], default `label`) against them."""
    query_label = query_label or label
    if query_label not in query.obs:
        raise QueryError(
            f"the query has no obs column {query_label!r} to match (--query-label); "
            f"it has: {', '.join(map(str, query.obs.columns)) or 'none'}"
        )
    with _Opened(store) as st:
        cells_table(st)
        if not count_cells(st.cells, f"species = {sql_string(against)}"):
            have = ", ".join(store_species(st)) or "none"
            raise QueryError(f"the store has no {against} cells to match against (it has: {have})")
        frame = annotate(
            st,
            query,
            label=label,
            k=k,
            where=both(f"species = {sql_string(against)}", where),
            species=species,
            embedding_key=embedding_key,
            model_dir=model_dir,
            model=model,
            exact=exact,
            nprobes=nprobes,
            device=device,
            progress=progress,
        )
    own = query.obs[query_label].astype(object)
    own = np.asarray(own.where(own.notna(), None), dtype=object)
    frame.insert(0, "query_label", own)
    table = match_table(own, frame["predicted"].to_numpy(), frame["mean_similarity"].to_numpy())
    return MatchResult(frame, table, match_matrix(table), species, against)
