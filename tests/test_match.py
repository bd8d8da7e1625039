"""match_table, match_matrix and plot_match: the cross-species matching table and heatmap."""

import math

import numpy as np
import pandas as pd
import pytest

from uceindex.errors import QueryError
from uceindex.search.matching import (
    MATCH_COLUMNS,
    MISSING_LABEL,
    match_matrix,
    match_table,
    plot_match,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _table_loop(query, predicted, similarity):
    """Count and average pair by pair with dicts; sort with sorted()."""
    cells, sims, per_query = {}, {}, {}
    for q, r, s in zip(query, predicted, similarity, strict=True):
        cells[q, r] = cells.get((q, r), 0) + 1
        if not math.isnan(s):
            sims.setdefault((q, r), []).append(s)
        per_query[q] = per_query.get(q, 0) + 1
    rows = [
        (
            q,
            r,
            n,
            n / per_query[q],
            sum(sims[q, r]) / len(sims[q, r]) if (q, r) in sims else math.nan,
        )
        for (q, r), n in cells.items()
    ]

    def missing_last(label):
        return (label is None, "" if label is None else label)

    rows.sort(key=lambda row: (missing_last(row[0]), -row[3], missing_last(row[1])))
    return rows


def _random_cells(rng, n):
    query = rng.choice(np.array(["q0", "q1", "q2", "q3", None], dtype=object), size=n)
    predicted = rng.choice(np.array(["r0", "r1", "r2", None], dtype=object), size=n)
    similarity = rng.uniform(-0.2, 1.0, size=n)
    similarity[predicted == None] = np.nan  # noqa: E711 (elementwise)
    similarity[rng.random(n) < 0.05] = np.nan
    return query, predicted, similarity


@pytest.mark.parametrize("seed", range(4))
def test_random_cells_match_loop(seed):
    rng = np.random.default_rng(seed)
    query, predicted, similarity = _random_cells(rng, 500)
    table = match_table(query, predicted, similarity)
    want = _table_loop(query, predicted, similarity)
    assert list(table.columns) == MATCH_COLUMNS
    assert table["query_label"].tolist() == [w[0] for w in want]
    assert table["reference_label"].tolist() == [w[1] for w in want]
    assert table["n_cells"].tolist() == [w[2] for w in want]
    np.testing.assert_allclose(table["share"], [w[3] for w in want], rtol=1e-12)
    np.testing.assert_allclose(table["mean_similarity"], [w[4] for w in want], rtol=1e-12)
    assert table["n_cells"].sum() == len(query)
    assert table["n_cells"].dtype == np.int64


def test_shares_sum_to_one_per_query_label():
    rng = np.random.default_rng(5)
    table = match_table(*_random_cells(rng, 1000))
    sums = table.groupby("query_label", dropna=False)["share"].sum()
    np.testing.assert_allclose(sums, 1.0)


def test_hand_made_table_and_matrix():
    query = ["mouse B", "mouse B", "mouse B", "mouse T", "mouse T"]
    predicted = ["human B", "human B", "human T", "human T", None]
    similarity = [0.9, 0.7, 0.5, 0.8, np.nan]
    novel = pd.array([False, True, True, False, pd.NA], dtype="boolean")  # the last: no search
    table = match_table(
        np.array(query), np.array(predicted, dtype=object), np.array(similarity), novel
    )
    assert table.to_dict("list") == {
        "query_label": ["mouse B", "mouse B", "mouse T", "mouse T"],
        "reference_label": ["human B", "human T", "human T", None],
        "n_cells": [2, 1, 1, 1],
        "share": [pytest.approx(2 / 3), pytest.approx(1 / 3), 0.5, 0.5],
        "mean_similarity": [pytest.approx(0.8), 0.5, 0.8, pytest.approx(np.nan, nan_ok=True)],
        "novel_share": [pytest.approx(2 / 3), pytest.approx(2 / 3), 0.0, 0.0],
    }
    matrix = match_matrix(table)
    assert matrix.index.tolist() == ["mouse B", "mouse T"]
    assert matrix.columns.tolist() == ["human B", "human T", MISSING_LABEL]
    np.testing.assert_allclose(matrix.to_numpy(), [[2 / 3, 1 / 3, 0.0], [0.0, 0.5, 0.5]])


def test_ties_in_share_sort_by_reference_label():
    table = match_table(np.array(["q"] * 4), np.array(["z", "a", "z", "a"]), np.ones(4))
    assert table["reference_label"].tolist() == ["a", "z"]


def test_one_label_everywhere():
    table = match_table(np.array(["q"] * 3), np.array(["r"] * 3), np.array([0.2, 0.4, 0.6]))
    assert table.to_dict("list") == {
        "query_label": ["q"],
        "reference_label": ["r"],
        "n_cells": [3],
        "share": [1.0],
        "mean_similarity": [pytest.approx(0.4)],
        "novel_share": [pytest.approx(np.nan, nan_ok=True)],  # novelty not given
    }
    assert match_matrix(table).to_numpy().tolist() == [[1.0]]


def test_empty_input_gives_empty_table():
    table = match_table(np.array([]), np.array([]), np.array([]))
    assert list(table.columns) == MATCH_COLUMNS and len(table) == 0


def test_matrix_rows_sum_to_one_and_columns_follow_best_match():
    rng = np.random.default_rng(6)
    table = match_table(*_random_cells(rng, 800))
    matrix = match_matrix(table)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert (matrix.to_numpy() >= 0).all()
    assert set(matrix.columns) == {"r0", "r1", "r2", MISSING_LABEL}
    best = [matrix.columns[i] for i in matrix.to_numpy().argmax(axis=1)]
    assert matrix.columns.tolist()[: len(set(best))] == list(dict.fromkeys(best))
    # every pair in the table is in the matrix with its share
    for row in table.itertuples():
        q = MISSING_LABEL if row.query_label is None else row.query_label
        r = MISSING_LABEL if row.reference_label is None else row.reference_label
        assert matrix.loc[q, r] == pytest.approx(row.share)


def test_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(7)
    matrix = match_matrix(match_table(*_random_cells(rng, 300)))
    path = plot_match(matrix, tmp_path / "match.png", title="mouse vs human")
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.array(["a", "b"]), np.array(["x"]), np.array([0.1, 0.2])), "1-D"),
        ((np.array([["a"]]), np.array([["x"]]), np.array([[0.1]])), "1-D"),
        ((np.array(["a", 1], dtype=object), np.array(["x", "y"]), np.ones(2)), "mix types"),
    ],
)
def test_bad_table_input_is_a_query_error(args, message):
    with pytest.raises(QueryError, match=message):
        match_table(*args)


def test_matrix_and_plot_refuse_bad_input(tmp_path):
    with pytest.raises(QueryError, match="not a match table"):
        match_matrix(pd.DataFrame({"query_label": ["a"]}))
    with pytest.raises(QueryError, match="nothing to plot"):
        plot_match(pd.DataFrame(), tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
