"""CAS-style ontology scoring against a slow obvious version, on a small DAG and on real CL."""

from __future__ import annotations

import numpy as np
import pytest

from uceindex.errors import QueryError
from uceindex.ontology import cell_ontology
from uceindex.search.ontology_vote import ontology_vote, term_scores

# a small DAG: root R; M (myeloid) and L (lymphoid) under R; C1, C2 under M; X under M and L
DAG = {"R": "", "M": "R", "L": "R", "C1": "M", "C2": "M", "X": "ML"}


def ancestors(term: str) -> frozenset:
    out = {term}
    for parent in DAG[term]:
        out |= ancestors(parent)
    return frozenset(out)


def slow_vote(terms, sims, valid, min_score):
    """The definition, one cell at a time with dicts."""
    calls = []
    for t_row, s_row, ok_row in zip(terms, sims, valid):
        w = [max(s, 0.0) if ok else 0.0 for s, ok in zip(s_row, ok_row)]
        if sum(w) == 0:
            w = [1.0 if ok else 0.0 for ok in ok_row]
        total = sum(w)
        if total == 0:
            calls.append((None, None, ()))
            continue
        score: dict[str, float] = {}
        for t, wi, ok in zip(t_row, w, ok_row):
            if ok and t is not None:
                for a in ancestors(t):
                    score[a] = score.get(a, 0.0) + wi
        passing = {t: v / total for t, v in score.items() if v / total >= min_score - 1e-12}
        if not passing:
            calls.append((None, None, ()))
            continue
        best = sorted(passing, key=lambda t: (-len(ancestors(t)), -passing[t], t))[0]
        path = sorted(
            (t for t in passing if t in ancestors(best) - {best}),
            key=lambda t: (-len(ancestors(t)), t),
        )
        calls.append((best, passing[best], tuple(path)))
    return calls


def test_small_cases():
    terms = np.array(
        [
            ["C1", "C1", "C2", None],  # C1 half the weight: C1; M 0.75
            ["C1", "C2", "L", None],  # no leaf reaches 0.5: M
            [None, None, None, "C1"],  # mostly unmapped: R only reaches 0.25: no call
            ["X", "X", "L", "C1"],  # X under M and L
        ],
        dtype=object,
    )
    sims = np.ones(terms.shape)
    vote = ontology_vote(terms, sims, ancestors, min_score=0.5)
    assert vote.term.tolist() == ["C1", "M", None, "X"]
    assert vote.score[:2].tolist() == [0.5, 0.5] and np.isnan(vote.score[2])
    assert vote.path.tolist() == [("M", "R"), ("R",), (), ("L", "M", "R")]
    scores = term_scores(terms, sims, ancestors)
    assert scores.terms.tolist() == ["C1", "C2", "L", "M", "R", "X"]
    assert scores.scores[2, 4] == 0.25  # normalised by the weight including unmapped


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("min_score", [0.3, 0.5, 0.9])
def test_matches_the_slow_version(seed, min_score):
    rng = np.random.default_rng(seed)
    n, k = 60, 7
    choices = np.array([None, *DAG], dtype=object)
    terms = choices[rng.integers(0, len(choices), (n, k))]
    sims = rng.uniform(-0.3, 1.0, (n, k))
    sims[:3] = -0.5  # all-negative rows: one vote each
    valid = rng.random((n, k)) > 0.2
    valid[3] = False  # a row with no valid neighbour
    sims[~valid] = np.nan
    vote = ontology_vote(terms, sims, ancestors, valid, min_score=min_score)
    for i, (term, score, path) in enumerate(slow_vote(terms, sims, valid, min_score)):
        assert vote.term[i] == term, i
        assert vote.path[i] == path, i
        if term is None:
            assert np.isnan(vote.score[i])
        else:
            assert vote.score[i] == pytest.approx(score, abs=1e-12)


def test_blocks_give_the_same_answer(monkeypatch):
    from uceindex.search import ontology_vote as module

    rng = np.random.default_rng(3)
    terms = np.array([None, *DAG], dtype=object)[rng.integers(0, 7, (50, 5))]
    sims = rng.uniform(0, 1, (50, 5))
    whole = ontology_vote(terms, sims, ancestors)
    monkeypatch.setattr(module, "ROWS", 7)
    blocks = module.ontology_vote(terms, sims, ancestors)
    assert whole.term.tolist() == blocks.term.tolist()
    assert np.allclose(whole.score, blocks.score, equal_nan=True)


def test_real_cell_ontology_rolls_up_to_monocyte():
    o = cell_ontology()
    # classical and non-classical monocytes split the vote: neither passes, monocyte does
    terms = np.array([["CL:0000860", "CL:0000860", "CL:0000875", "CL:0000875"]], dtype=object)
    vote = ontology_vote(terms, np.ones((1, 4)), o.ancestors, min_score=0.6)
    assert vote.term[0] == "CL:0000576" and o.label(vote.term[0]) == "monocyte"
    assert vote.path[0][-1] == "CL:0000000" and "CL:0000738" in vote.path[0]  # ... leukocyte, cell


def test_bad_min_score():
    with pytest.raises(QueryError, match="min score must be in"):
        ontology_vote(np.array([["R"]], dtype=object), np.ones((1, 1)), ancestors, min_score=0)


def test_metrics_credit_a_coarser_answer():
    from uceindex.ontology.metrics import exact_accuracy, hierarchical_f1, parent_accuracy

    def parents(t):
        return frozenset(DAG[t])

    truth = ["C1", "C1", "C1", "C1", "X"]
    predicted = ["C1", "M", "R", "C2", None]  # exact, parent, grandparent, sibling, none
    assert exact_accuracy(predicted, truth) == 0.2
    assert parent_accuracy(predicted, truth, parents) == 0.4
    h = hierarchical_f1(predicted, truth, ancestors)
    # |P & T|: 3 + 2 + 1 + 2 + 0 = 8; |P|: 3 + 2 + 1 + 3 + 0 = 9; |T|: 3 * 4 + 4 = 16
    assert h["precision"] == pytest.approx(8 / 9) and h["recall"] == pytest.approx(8 / 16)
    assert h["f1"] == pytest.approx(2 * (8 / 9) * 0.5 / (8 / 9 + 0.5))
    # cells without a true term are left out
    assert exact_accuracy(["C1", "C2"], ["C1", None]) == 1.0
    with pytest.raises(QueryError, match="no cell has a true term"):
        exact_accuracy(["C1"], [None])


def test_metrics_on_real_terms():
    from uceindex.ontology.metrics import parent_accuracy

    o = cell_ontology()
    # monocyte for a CD14-positive monocyte is the parent; leukocyte is not
    assert parent_accuracy(["CL:0000576", "CL:0000738"], ["CL:0001054"] * 2, o.parents) == 0.5
