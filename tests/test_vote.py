"""weighted_vote, novelty_threshold and is_novel against slow, obvious loop versions."""

import math

import numpy as np
import pytest

from uceindex.errors import QueryError
from uceindex.search.vote import VoteResult, is_novel, novelty_threshold, weighted_vote


def _vote_loop(labels, sims, valid):
    """One row at a time, dicts and sorted(): the definition, written out."""
    out = []
    for row_labels, row_sims, row_valid in zip(labels, sims, valid, strict=True):
        slots = [
            (lab, float(s))
            for lab, s, ok in zip(row_labels, row_sims, row_valid, strict=True)
            if ok
        ]
        if not slots:
            out.append((None, math.nan, None, math.nan, math.nan, 0))
            continue
        weights = [max(s, 0.0) for _, s in slots]
        if sum(weights) == 0:
            weights = [1.0] * len(slots)
        w_of, s_of = {}, {}
        for (lab, s), w in zip(slots, weights, strict=True):
            w_of[lab] = w_of.get(lab, 0.0) + w
            s_of[lab] = s_of.get(lab, 0.0) + s
        total = sum(w_of.values())
        ranked = sorted(w_of, key=lambda lab: (-w_of[lab], -s_of[lab], lab))
        mean = sum(s for _, s in slots) / len(slots)
        second = ranked[1] if len(ranked) > 1 else None
        out.append(
            (
                ranked[0],
                w_of[ranked[0]] / total,
                second,
                w_of[second] / total if second is not None else math.nan,
                mean,
                len(slots),
            )
        )
    return out


def _assert_matches_loop(labels, sims, valid):
    got = weighted_vote(labels, sims, valid)
    want = _vote_loop(labels, sims, valid)
    assert got.label.tolist() == [w[0] for w in want]
    assert got.runner_up.tolist() == [w[2] for w in want]
    np.testing.assert_allclose(got.confidence, [w[1] for w in want], rtol=1e-12)
    np.testing.assert_allclose(got.runner_up_share, [w[3] for w in want], rtol=1e-12)
    np.testing.assert_allclose(got.mean_similarity, [w[4] for w in want], rtol=1e-12, atol=1e-15)
    assert got.n_neighbours.tolist() == [w[5] for w in want]
    return got


def _random_slots(rng, n, k, labels, sim_values=None):
    lab = rng.choice(np.array(labels, dtype=object), size=(n, k))
    if sim_values is None:
        sims = rng.uniform(-0.5, 1.0, size=(n, k))
    else:
        sims = rng.choice(np.array(sim_values), size=(n, k))
    valid = rng.random((n, k)) < 0.8
    valid[:5] = False  # some rows without any neighbour
    sims[5:10] = -np.abs(sims[5:10])  # some rows where every weight is 0
    sims[~valid] = np.nan  # padding is garbage and must be ignored
    return lab, sims, valid


@pytest.mark.parametrize("seed", range(4))
def test_random_string_labels_match_loop(seed):
    rng = np.random.default_rng(seed)
    lab, sims, valid = _random_slots(rng, 300, 9, ["B cell", "T cell", "NK", "mono", "DC"])
    got = _assert_matches_loop(lab, sims, valid)
    assert got.label[:5].tolist() == [None] * 5


@pytest.mark.parametrize("seed", range(4))
def test_random_ties_match_loop(seed):
    # few exactly representable similarities: ties in weight and in summed similarity
    rng = np.random.default_rng(100 + seed)
    lab, sims, valid = _random_slots(
        rng, 400, 6, ["a", "b", "c"], sim_values=[-0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
    )
    _assert_matches_loop(lab, sims, valid)


def test_random_integer_codes_match_loop():
    rng = np.random.default_rng(7)
    lab, sims, valid = _random_slots(rng, 300, 8, [3, 11, 2, 40])
    got = _assert_matches_loop(lab.astype(np.int64), sims, valid)
    assert {type(x) for x in got.label[got.n_neighbours > 0]} == {int}


def test_float32_and_no_valid_mask_match_loop():
    rng = np.random.default_rng(8)
    lab = rng.choice(np.array(["x", "y", "z"]), size=(200, 5))  # numpy str dtype
    sims = rng.uniform(-1, 1, size=(200, 5)).astype(np.float32)
    got = _assert_matches_loop(lab, sims, np.ones(lab.shape, bool))
    assert got.label.tolist() == weighted_vote(lab, sims).label.tolist()
    assert {type(x) for x in got.label} == {str}


def test_slot_order_does_not_change_the_result():
    rng = np.random.default_rng(9)
    lab, sims, valid = _random_slots(
        rng, 300, 7, ["a", "b", "c", "d"], sim_values=[-0.5, 0.0, 0.25, 0.5, 0.75]
    )
    perm = np.argsort(rng.random(lab.shape), axis=1)
    a = weighted_vote(lab, sims, valid)
    b = weighted_vote(*(np.take_along_axis(x, perm, axis=1) for x in (lab, sims, valid)))
    assert a.to_frame().equals(b.to_frame())


def test_hand_made_weighted_vote():
    got = weighted_vote(np.array([["a", "b", "b"]], dtype=object), np.array([[0.9, 0.3, 0.3]]))
    assert got.label.tolist() == ["a"] and got.runner_up.tolist() == ["b"]
    np.testing.assert_allclose(got.confidence, [0.6])
    np.testing.assert_allclose(got.runner_up_share, [0.4])
    np.testing.assert_allclose(got.mean_similarity, [0.5])
    assert got.n_neighbours.tolist() == [3]


def test_tie_broken_by_summed_similarity_then_label():
    # a and b both weigh 0.5; a's raw similarities sum to 0.25, b's to 0.5
    got = weighted_vote(np.array([["a", "a", "b"]]), np.array([[0.5, -0.25, 0.5]]))
    assert got.label.tolist() == ["b"] and got.runner_up.tolist() == ["a"]
    np.testing.assert_allclose([got.confidence[0], got.runner_up_share[0]], [0.5, 0.5])
    # a full tie: the smaller label wins, whichever slot comes first
    for row in (["z", "m"], ["m", "z"]):
        got = weighted_vote(np.array([row]), np.array([[0.5, 0.5]]))
        assert got.label.tolist() == ["m"] and got.runner_up.tolist() == ["z"]


def test_negative_similarity_does_not_vote():
    got = weighted_vote(np.array([["a", "b", "b"]]), np.array([[0.5, -0.9, -0.9]]))
    assert got.label.tolist() == ["a"]
    np.testing.assert_allclose(got.confidence, [1.0])
    np.testing.assert_allclose(got.runner_up_share, [0.0])
    np.testing.assert_allclose(got.mean_similarity, [(0.5 - 1.8) / 3])


def test_all_weights_zero_falls_back_to_one_vote_each():
    got = weighted_vote(np.array([["a", "b", "b"]]), np.array([[-0.1, -0.5, 0.0]]))
    assert got.label.tolist() == ["b"]
    np.testing.assert_allclose([got.confidence[0], got.runner_up_share[0]], [2 / 3, 1 / 3])


def test_invalid_slots_and_empty_rows():
    labels = np.array([["a", "b", "b"], ["a", "a", "a"], ["c", None, None]], dtype=object)
    sims = np.array([[0.2, 0.9, np.nan], [np.nan] * 3, [0.4, np.nan, np.inf]])
    valid = np.array([[True, True, False], [False] * 3, [True, False, False]])
    got = weighted_vote(labels, sims, valid)
    assert got.label.tolist() == ["b", None, "c"]
    assert got.runner_up.tolist() == ["a", None, None]
    np.testing.assert_allclose(got.confidence, [0.9 / 1.1, np.nan, 1.0])
    np.testing.assert_allclose(got.runner_up_share, [0.2 / 1.1, np.nan, np.nan])
    np.testing.assert_allclose(got.mean_similarity, [0.55, np.nan, 0.4])
    assert got.n_neighbours.tolist() == [2, 0, 1]


def test_single_label_has_no_runner_up():
    got = weighted_vote(np.full((4, 3), "T cell"), np.full((4, 3), 0.7))
    assert got.label.tolist() == ["T cell"] * 4
    assert got.runner_up.tolist() == [None] * 4
    np.testing.assert_allclose(got.confidence, 1.0)
    assert np.isnan(got.runner_up_share).all()


@pytest.mark.parametrize("shape", [(0, 5), (3, 0)])
def test_empty_inputs(shape):
    got = weighted_vote(np.empty(shape, dtype=object), np.empty(shape))
    assert len(got.label) == shape[0]
    assert got.label.tolist() == [None] * shape[0]
    assert got.n_neighbours.tolist() == [0] * shape[0]


def test_result_is_read_only_and_frames():
    got = weighted_vote(np.array([["a"]]), np.array([[0.5]]))
    assert isinstance(got, VoteResult)
    with pytest.raises(ValueError):
        got.confidence[0] = 0.0
    assert list(got.to_frame().columns) == [
        "label",
        "confidence",
        "runner_up",
        "runner_up_share",
        "mean_similarity",
        "n_neighbours",
    ]


@pytest.mark.parametrize(
    "labels, sims, valid, message",
    [
        (np.array(["a", "b"]), np.array([0.1, 0.2]), None, "same shape"),
        (np.array([["a", "b"]]), np.array([[0.1, 0.2, 0.3]]), None, "same shape"),
        (np.array([["a", "b"]]), np.array([[0.1, 0.2]]), np.array([[1, 0]]), "boolean"),
        (np.array([["a", "b"]]), np.array([[0.1, np.nan]]), None, "NaN"),
        (np.array([["a", None]], dtype=object), np.array([[0.1, 0.2]]), None, "no label"),
        (np.array([["a", 1]], dtype=object), np.array([[0.1, 0.2]]), None, "mix types"),
        (np.array([["a", "b"]]), np.array([["x", "y"]]), None, "real numbers"),
    ],
)
def test_bad_input_is_a_query_error(labels, sims, valid, message):
    with pytest.raises(QueryError, match=message):
        weighted_vote(labels, sims, valid)


def _threshold_loop(sims, valid, quantile):
    means = sorted(
        sum(s for s, ok in zip(row, ok_row, strict=True) if ok) / sum(ok_row)
        for row, ok_row in zip(sims, valid, strict=True)
        if any(ok_row)
    )
    pos = quantile * (len(means) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(means) - 1)
    return means[lo] + (pos - lo) * (means[hi] - means[lo])


@pytest.mark.parametrize("quantile", [0.0, 0.01, 0.3, 1.0])
def test_novelty_threshold_matches_loop(quantile):
    rng = np.random.default_rng(11)
    sims = rng.uniform(0.2, 1.0, size=(500, 10))
    valid = rng.random(sims.shape) < 0.9
    valid[:3] = False  # rows without neighbours are left out of the calibration
    sims[~valid] = np.nan
    got = novelty_threshold(sims, quantile, valid)
    assert got == pytest.approx(_threshold_loop(sims, valid, quantile), rel=1e-12)


def test_novelty_threshold_hand_made_and_default_quantile():
    sims = np.repeat(np.arange(101, dtype=float)[:, None] / 100, 4, axis=1)  # means 0..1
    assert novelty_threshold(sims) == pytest.approx(0.01)
    assert novelty_threshold(sims, 0.5) == pytest.approx(0.5)


def test_held_out_cells_are_novel_and_store_cells_are_not():
    rng = np.random.default_rng(12)
    store_self = rng.normal(0.85, 0.03, size=(1000, 20))
    threshold = novelty_threshold(store_self)
    assert (~is_novel(store_self.mean(axis=1), threshold)).mean() >= 0.98
    query_means = np.array([0.86, 0.84, 0.40, np.nan])
    assert is_novel(query_means, threshold).tolist() == [False, False, True, True]


def test_is_novel_is_strict_below_threshold():
    assert is_novel(np.array([0.49, 0.5, 0.51]), 0.5).tolist() == [True, False, False]


@pytest.mark.parametrize(
    "sims, kwargs, message",
    [
        (np.ones((3, 2)), {"quantile": 1.5}, "between 0 and 1"),
        (np.ones((3, 2)), {"quantile": -0.1}, "between 0 and 1"),
        (np.ones(3), {}, r"\(n_cells, k\)"),
        (np.ones((3, 2)), {"valid": np.zeros((3, 2), bool)}, "no stored cell"),
        (np.ones((0, 2)), {}, "no stored cell"),
    ],
)
def test_novelty_threshold_errors(sims, kwargs, message):
    with pytest.raises(QueryError, match=message):
        novelty_threshold(sims, **kwargs)


def test_is_novel_refuses_a_nan_threshold():
    with pytest.raises(QueryError, match="finite"):
        is_novel(np.array([0.5]), float("nan"))
