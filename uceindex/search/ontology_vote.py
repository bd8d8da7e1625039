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
    rows: slice = slice(None),
) -> TermScores:
    """CAS scores of the query rows `rows`: neighbour_terms (n, k) CL ids, None for a valid
    neighbour with no term; similarities and valid as `vote.weighted_vote` takes them."""
    terms, sims, ok = check_slots(neighbour_terms, similarities, valid)
    terms, sims, ok = terms[rows], sims[rows], ok[rows]
    w, total = vote_weights(sims, ok)
    mapped = ok & np.not_equal(terms, None)
    own = np.asarray(sorted({str(t) for t in terms[mapped]}), dtype=object)
    columns = np.asarray(sorted(set().union(*(ancestors(t) for t in own))), dtype=object)
    index = {t: i for i, t in enumerate(columns)}
    member = np.zeros((len(own), len(columns)))
    for i, t in enumerate(own):
        member[i, [index[a] for a in ancestors(t)]] = 1.0
    code = np.searchsorted(own, np.where(mapped, terms, own[0] if len(own) else ""))
    per_term = np.zeros((len(sims), len(own)))
    row = np.broadcast_to(np.arange(len(sims))[:, None], sims.shape)
    np.add.at(per_term, (row[mapped], code[mapped]), w[mapped])
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
    n = np.shape(similarities)[0] if np.ndim(similarities) == 2 else 0
    term = np.full(n, None, dtype=object)
    score = np.full(n, np.nan)
    path = np.empty(n, dtype=object)
    path[:] = [()] * n
    for start in range(0, max(n, 1), ROWS):
        block = slice(start, min(start + ROWS, n))
        found = term_scores(neighbour_terms, similarities, ancestors, valid, rows=block)
        if not len(found.terms):
            continue
        if levels is not None:
            term[block], score[block] = _level_call(found, list(levels), min_score)
            continue
        depth = np.asarray([len(ancestors(t)) for t in found.terms], dtype=np.float64)
        passing = np.nan_to_num(found.scores, nan=-1.0) >= min_score - 1e-12
        cand = passing.copy()
        for key in (np.broadcast_to(depth, cand.shape), found.scores):
            masked = np.where(cand, key, -np.inf)
            cand &= masked == masked.max(axis=1, keepdims=True)
        has = cand.any(axis=1)
        best = cand.argmax(axis=1)  # the smallest id among the ties left
        for i in np.flatnonzero(has):
            chosen = found.terms[best[i]]
            above = ancestors(chosen) - {chosen}
            coarser = [j for j in np.flatnonzero(passing[i]) if found.terms[j] in above]
            coarser.sort(key=lambda j: (-depth[j], found.terms[j]))
            term[start + i] = chosen
            score[start + i] = found.scores[i, best[i]]
            path[start + i] = tuple(found.terms[j] for j in coarser)
    for a in (term, score, path):
        a.flags.writeable = False
    return OntologyVote(term, score, path)


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
