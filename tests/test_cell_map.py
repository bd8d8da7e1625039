"""cell_map: query cells among a seeded, bounded sample of the reference, laid out by UMAP."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_service import _clusters, _h5ad
from uceindex import cell_map
from uceindex.errors import QueryError
from uceindex.ingestion import ingest


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("map")
    ingest(
        _h5ad(tmp / "ref.h5ad", 200, seed=0),
        species="human",
        store=str(tmp / "atlas"),
        embedding_key="emb",
    )
    return str(tmp / "atlas")


def test_query_cells_land_among_a_bounded_seeded_reference_sample(store):
    obs, emb = _clusters(30, seed=5)
    emb[3] = np.nan  # a cell that could not be embedded is not mapped
    names = [f"q{i}" for i in range(30)]
    frame = cell_map(store, emb, names, reference=60, seed=1)
    assert list(frame.columns) == ["cell", "source", "x", "y", "cell_type"]
    query, ref = frame[frame.source == "query"], frame[frame.source == "reference"]
    assert len(query) == 29 and "q3" not in set(query.cell) and len(ref) == 60
    assert ref.cell.str.startswith("ref/").all() and query.cell_type.isna().all()
    assert set(ref.cell_type) == {"T cell", "B cell"}
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()
    # a query B cell lies nearer the reference B cells than the T cells
    centre = {
        t: ref.loc[ref.cell_type == t, ["x", "y"]].mean().to_numpy() for t in ("T cell", "B cell")
    }
    for name, truth in zip(names, obs.cell_type):
        if name == "q3":
            continue
        at = query.loc[query.cell == name, ["x", "y"]].to_numpy()[0]
        other = "T cell" if truth == "B cell" else "B cell"
        assert np.linalg.norm(at - centre[truth]) < np.linalg.norm(at - centre[other])
    again = cell_map(store, emb, names, reference=60, seed=1)
    assert list(again.cell) == list(frame.cell)  # the same seed draws the same cells
    capped = cell_map(store, emb, names, reference=10, max_query=8, seed=1)
    assert (capped.source == "query").sum() == 8 and (capped.source == "reference").sum() == 10


def test_vectors_of_another_width_or_too_few_cells_are_refused(store):
    with pytest.raises(QueryError, match="8-d"):
        cell_map(store, np.ones((5, 3), dtype=np.float32), list("abcde"))
    with pytest.raises(QueryError, match="a map needs"):
        cell_map(store, np.ones((1, 8), dtype=np.float32), ["a"], reference=2)
    with pytest.raises(QueryError, match="label column"):
        cell_map(store, np.ones((5, 8), dtype=np.float32), list("abcde"), label="nope")
