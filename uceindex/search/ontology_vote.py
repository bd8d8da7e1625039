"""The maths of ontology-aware annotation: Cell Ontology terms scored as Cellarium CAS does.

Each valid neighbour's weight (`vote.vote_weights`: its similarity, clipped at 0) is added to
its CL term and to every ancestor of that term; a term's score is that sum over the total
weight of the row, unmapped neighbours (no term) included, so a call is never surer than
the mapped share of the neighbours. The call is the most specific term whose score reaches
`min_score`; its passing ancestors are the coarser calls. At a chosen level (a list of terms
such as "myeloid cell", "lymphocyte") the call is the level term scoring highest, at least
`min_score`. Pure numpy over arrays and an
`ancestors` function; the ontology itself stays in uceindex.ontology.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from uceindex.errors import QueryError
from uceindex.search.vote import check_slots, vote_weights

MIN_SCORE = 0.5  # the most specific term at least half the neighbour weight supports
ROWS = 4096  # query rows scored at once: memory ROWS x terms

Ancestors = Callable[[str], frozenset]  # a term -> the term and all its ancestors


@dataclass(frozen=True)
class OntologyVote:
    """One entry per query cell (arrays of length n). term is None (score NaN, path empty)
    when the cell has no valid neighbour or no term reaches min_score."""

    term: np.ndarray  # object (n,): the most specific passing term
    score: np.ndarray  # float64 (n,): its share of the neighbour weight
    path: np.ndarray  # object (n,): tuples of the passing coarser terms, most specific first


@dataclass(frozen=True)
class TermScores:
    """Scores (n, len(terms)) of every term any neighbour's term descends from (sorted ids)."""

    terms: np.ndarray  # object (a,)
    scores: np.ndarray  # float64 (n, a)


def term_scores(
    neighbour_terms: np.ndarray,
    similarities: np.ndarray,
    ancestors: Ancestors,
    valid: np.ndarray | None = None,
) -> TermScores:
    """CAS scores per query row: neighbour_terms (n, k) CL ids, None for a valid neighbour
    with no term; similarities and valid as `vote.weighted_vote` takes them."""
    return _scores(*check_slots(neighbour_terms, similarities, valid), ancestors)


def _scores(terms: np.ndarray, sims: np.ndarray, ok: np.ndarray, ancestors: Ancestors):
    w, total = vote_weights(sims, ok)
    mapped = ok & np.not_equal(terms, None)
    code, own = pd.factorize(terms[mapped])  # hashing: no string sort of n * k ids
    own = np.asarray(own, dtype=object)
    columns = np.asarray(sorted(set().union(*(ancestors(t) for t in own))), dtype=object)
    index = {t: i for i, t in enumerate(columns)}
    member = np.zeros((len(own), len(columns)))
    for i, t in enumerate(own):
        member[i, [index[a] for a in ancestors(t)]] = 1.0
    row = np.nonzero(mapped)[0]
    per_term = np.bincount(
        row * len(own) + code, weights=w[mapped], minlength=len(sims) * len(own)
    ).reshape(len(sims), len(own))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (per_term @ member) / np.where(total > 0, total, np.nan)[:, None]
    return TermScores(columns, scores)


def ontology_vote(
    neighbour_terms: np.ndarray,
    similarities: np.ndarray,
    ancestors: Ancestors,
    valid: np.ndarray | None = None,
    min_score: float = MIN_SCORE,
    levels: Sequence[str] | None = None,
) -> OntologyVote:
    """The CAS call per query cell: among the terms scoring at least `min_score`, the most
    specific (most ancestors), then the higher score, then the smaller id; its passing
    ancestors, most specific first, are the path. With `levels`, only those terms are
    called: the highest scoring one, the earlier in `levels` on a tie (no path). Scored ROWS
    query cells at a time."""
    if not 0.0 < min_score <= 1.0:
        raise QueryError(f"min score must be in (0, 1], got {min_score}")
    terms, sims, ok = check_slots(neighbour_terms, similarities, valid)
    n = len(sims)
    term = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    path = np.empty(n, dtype=object)
    path[:] = [()] * n
    for start in range(0, n, ROWS):
        block = slice(start, min(start + ROWS, n))
        found = _scores(terms[block], sims[block], ok[block], ancestors)
        if not len(found.terms):
            continue
        if levels is not None:
            term[block], score[block] = _level_call(found, list(levels), min_score)
            continue
        term[block], score[block], path[block] = _most_specific(found, ancestors, min_score)
    for a in (term, score, path):
        a.flags.writeable = False
    return OntologyVote(term, score, path)


def _most_specific(found: TermScores, ancestors: Ancestors, min_score: float):
    """Each row's most specific passing term, its score and its passing ancestors."""
    names = found.terms
    depth = np.asarray([len(ancestors(t)) for t in names], dtype=np.float64)
    passing = np.nan_to_num(found.scores, nan=-1.0) >= min_score - 1e-12
    cand = passing.copy()
    for key in (np.broadcast_to(depth, cand.shape), found.scores):
        masked = np.where(cand, key, -np.inf)
        cand &= masked == masked.max(axis=1, keepdims=True)
    has = cand.any(axis=1)
    best = cand.argmax(axis=1)  # the smallest id among the ties left
    index = {t: i for i, t in enumerate(names)}
    above = np.zeros((len(names), len(names)), dtype=bool)  # above[c, j]: j is c's ancestor
    for c, t in enumerate(names):
        above[c, [index[a] for a in ancestors(t) if a != t]] = True
    order = np.lexsort((np.arange(len(names)), -depth))  # most specific first, then by id
    coarser = (passing & above[best])[:, order]
    n = len(best)
    term = np.where(has, names[best], None)
    score = np.where(has, found.scores[np.arange(n), best], np.nan)
    ordered = names[order]
    path = np.empty(n, dtype=object)
    path[:] = [tuple(ordered[coarser[i]]) if has[i] else () for i in range(n)]
    return term, score, path


def _level_call(found: TermScores, levels: list[str], min_score: float):
    """Each row's best level term (and score), None where none reaches min_score."""
    column = {t: i for i, t in enumerate(found.terms)}
    zero = np.zeros(len(found.scores))
    scores = np.column_stack([found.scores[:, column[t]] if t in column else zero for t in levels])
    scores = np.nan_to_num(scores, nan=-1.0)
    best = scores.argmax(axis=1)  # the first of equal maxima: the earlier level
    top = scores[np.arange(len(scores)), best]
    has = top >= min_score - 1e-12
    term = np.where(has, np.asarray(levels, dtype=object)[best], None)
    return term, np.where(has, top, np.nan)
