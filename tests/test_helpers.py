"""Small shared helpers: whole-file writes, usable embedding rows, Store.using."""

from __future__ import annotations

import os

import numpy as np
import pytest

from uceindex.atomic import written_whole
from uceindex.errors import StoreError
from uceindex.store import Store
from uceindex.vectors import unit_rows, usable_rows


def test_written_whole_replaces_on_success(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with written_whole(out) as partial:
        partial.write_text("new")
        assert out.read_text() == "old"  # nothing visible until the block ends
    assert out.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_written_whole_leaves_the_old_file_on_error(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), written_whole(out) as partial:
        partial.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_usable_and_unit_rows_against_the_obvious_loop():
    rows = np.array([[3, 4], [0, 0], [np.nan, 1], [np.inf, 0], [1e-20, 0], [-2, 0]], np.float32)
    expected = [bool(np.all(np.isfinite(r)) and np.linalg.norm(r) > 0) for r in rows]
    assert usable_rows(rows).tolist() == expected
    unit, ok = unit_rows(rows)
    assert ok.tolist() == expected
    for r, u, good in zip(rows, unit, ok):
        want = r / np.linalg.norm(r) if good else np.zeros(2)
        np.testing.assert_allclose(u, want, rtol=1e-6)


def test_store_using_opens_a_uri_and_keeps_a_store(tmp_path):
    with Store.using(tmp_path / "s", create=True) as opened:
        assert opened.count() == 0
    with pytest.raises(StoreError, match="closed"):  # opened here, closed here
        opened.count()
    with Store.open(tmp_path / "s") as mine:
        with Store.using(mine) as same:
            assert same is mine
        assert mine.count() == 0  # the caller's store stays open
