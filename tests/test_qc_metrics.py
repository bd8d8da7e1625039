"""The quality report's maths, each against a slow obvious version."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from uceindex.quality import metrics as M
from uceindex.vectors import unit_rows


def _unit(m: int, d: int, seed: int = 0) -> np.ndarray:
    return unit_rows(np.random.default_rng(seed).normal(size=(m, d)))[0].astype(np.float64)


@pytest.mark.parametrize(("m", "d"), [(30, 8), (5, 40), (2, 3)])
def test_cosine_summary_is_the_mean_and_std_over_all_pairs(m, d):
    x = _unit(m, d) + 0.5  # not centred: a mean well away from 0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    dots = [x[i] @ x[j] for i, j in itertools.permutations(range(m), 2)]
    mean, std = M.cosine_summary(x)
    assert mean == pytest.approx(np.mean(dots), abs=1e-6)  # float32 products
    assert std == pytest.approx(np.std(dots), abs=1e-5)


def test_cosine_summary_of_one_row_is_nan():
    assert all(np.isnan(M.cosine_summary(_unit(1, 4))))


def test_cosine_pairs_are_cosines_of_distinct_rows():
    x = _unit(3, 5)
    pairs = M.cosine_pairs(x, 500, np.random.default_rng(0))
    allowed = np.array([x[i] @ x[j] for i, j in itertools.permutations(range(3), 2)])
    assert np.abs(pairs[:, None] - allowed[None, :]).min(axis=1).max() < 1e-6  # never 1.0
    assert len(M.cosine_pairs(x[:1], 10, np.random.default_rng(0))) == 0


def test_knn_within_matches_a_full_sort(monkeypatch):
    monkeypatch.setattr(M, "KNN_BLOCK", 7 * 40)  # several blocks
    x = _unit(40, 6)
    got = M.knn_within(x, 5)
    for i in range(40):
        sims = [(-(x[i] @ x[j]), j) for j in range(40) if j != i]
        assert got[i].tolist() == [j for _, j in sorted(sims)[:5]]
    assert M.knn_within(x[:3], 10).shape == (3, 2)  # at most the other rows


def test_other_share_and_its_expectation():
    neighbours = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    batch = np.array([0, 0, 1, 1])
    assert M.other_share(neighbours, batch).tolist() == [0.5, 0.5, 1.0, 1.0]
    # cell 0: of the 3 other cells, 2 are of batch 1
    assert M.expected_other_share(batch).tolist() == pytest.approx([2 / 3] * 4)


def test_expected_other_share_within_labels_is_the_slow_count():
    rng = np.random.default_rng(1)
    batch, group = rng.integers(0, 3, 50), rng.integers(-1, 4, 50)
    got = M.expected_other_share(batch, group)
    for i in range(50):
        if group[i] < 0:
            assert np.isnan(got[i])
            continue
        others = [j for j in range(50) if j != i and group[j] == group[i]]
        want = np.mean([batch[j] != batch[i] for j in others]) if others else np.nan
        assert got[i] == pytest.approx(want, nan_ok=True)


def test_mixing_score_is_a_ratio_of_sums_over_defined_cells():
    observed = np.array([0.2, 0.4, 1.0, np.nan])
    expected = np.array([0.5, 0.5, np.nan, 0.5])
    assert M.mixing_score(observed, expected) == pytest.approx(0.6)
    assert M.mixing_score(np.array([0.0]), np.array([0.0])) is None  # nobody could mix


def test_label_coherence_and_chance_are_the_slow_counts():
    rng = np.random.default_rng(2)
    label = rng.integers(-1, 3, 30)
    neighbours = np.stack([rng.choice([j for j in range(30) if j != i], 6) for i in range(30)])
    got = M.label_coherence(neighbours, label)
    for i in range(30):
        known = [label[j] for j in neighbours[i] if label[j] >= 0]
        want = np.mean([lab == label[i] for lab in known]) if label[i] >= 0 and known else np.nan
        assert got[i] == pytest.approx(want, nan_ok=True)
    labelled = [i for i in range(30) if label[i] >= 0]
    same = [label[i] == label[j] for i, j in itertools.permutations(labelled, 2)]
    assert M.chance_coherence(label) == pytest.approx(np.mean(same))
    assert M.chance_coherence(np.array([0, -1])) is None


def test_confusions_count_both_directions_of_a_pair():
    names = np.array(["B", "NK", "T"], dtype=object)
    label = np.array([2, 2, 1, 0, -1])
    neighbours = np.array([[1, 2], [0, 2], [0, 4], [2, 1], [0, 1]])
    got = M.confusions(neighbours, label, names, top=5)
    # T->NK (cell 0), T->NK (cell 1), NK->T (cell 2): 3 of the 4 + 1 labelled slots of T, NK
    assert got[0] == {"labels": ["NK", "T"], "slots": 3, "share": 3 / 5}
    assert got[1] == {"labels": ["B", "NK"], "slots": 1, "share": 1 / 3}
    assert got[2]["labels"] == ["B", "T"] and got[2]["slots"] == 1
    only_b = M.confusions(neighbours, label, names, top=5, cells=label == 0)
    assert [c["labels"] for c in only_b] == [["B", "NK"], ["B", "T"]]


@pytest.mark.parametrize(
    ("sizes", "budget", "want"),
    [
        ([10, 10], 6, [3, 3]),
        ([2, 100, 100], 20, [2, 9, 9]),
        ([2, 3], 100, [2, 3]),
        ([5, 5, 5], 7, [3, 2, 2]),
        ([4, 4], 1, [1, 0]),
    ],
)
def test_quotas_fill_small_groups_first(sizes, budget, want):
    got = M.quotas(np.array(sizes), budget)
    assert got.tolist() == want and got.sum() == min(budget, sum(sizes))
