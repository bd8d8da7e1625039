"""The novelty threshold of a store, calibrated on its own cells and cached per store state.

A query cell is novel when its mean similarity to its k neighbours is below what 99% of
the reference's own cells have to theirs. The threshold is calibrated on the store
(NOVELTY_SAMPLE reference cells searched with the same k, filter and search settings, each
cell's own hit dropped; `vote.novelty_threshold`) and cached per (store, table version, k,
reference filter, search settings) in memory and in $XDG_CACHE_HOME/uceindex/novelty.json,
so a new ingest or index build recalibrates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from uceindex.atomic import written_whole
from uceindex.errors import QueryError
from uceindex.model.files import cache_dir
from uceindex.search.index import SearchParams, cells_table
from uceindex.search.neighbours import knn, sample_cells
from uceindex.search.vote import NOVELTY_QUANTILE, novelty_threshold
from uceindex.store.store import Store

NOVELTY_SAMPLE = 1000  # reference cells searched to calibrate the novelty threshold
CACHE_FILE = "novelty.json"  # under uceindex.model.files.cache_dir()
CACHE_ENTRIES = 500  # thresholds kept on disk, newest first

_THRESHOLDS: dict[str, float] = {}


def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, threshold: float) -> None:
    """Best effort (a read-only home just recalibrates next time); written whole."""
    entries = _read_cache()
    entries[key] = {"threshold": threshold, "at": time.time()}
    newest = sorted(entries.items(), key=lambda kv: -kv[1].get("at", 0))[:CACHE_ENTRIES]
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(path) as partial:
            partial.write_text(json.dumps(dict(newest), indent=1))
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
