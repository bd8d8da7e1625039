"""Scores of predicted CL terms against true ones that credit a right answer at a coarser
level: exact accuracy, accuracy up to the parent, hierarchical precision/recall/F1 over
ancestor sets (Kiritchenko et al.'s micro-averaged form). Cells whose true term is None are
left out; a cell without a prediction (None) counts as wrong, with an empty ancestor set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from uceindex.errors import QueryError

Terms = Callable[[str], frozenset]  # a term -> a set of terms (ancestors with itself, parents)


def _pairs(predicted, truth) -> list[tuple[str | None, str]]:
    p, t = np.asarray(predicted, dtype=object), np.asarray(truth, dtype=object)
    if p.shape != t.shape or p.ndim != 1:
        raise QueryError(f"predicted {p.shape} and true terms {t.shape} must be 1-D, one per cell")
    pairs = [(a if isinstance(a, str) else None, b) for a, b in zip(p, t) if isinstance(b, str)]
    if not pairs:
        raise QueryError("no cell has a true term to score against")
    return pairs


def exact_accuracy(predicted, truth) -> float:
    """Share of cells whose predicted term is the true term."""
    pairs = _pairs(predicted, truth)
    return sum(p == t for p, t in pairs) / len(pairs)


def parent_accuracy(predicted, truth, parents: Terms) -> float:
    """Share of cells predicted as the true term or one of its direct parents."""
    pairs = _pairs(predicted, truth)
    return sum(p is not None and (p == t or p in parents(t)) for p, t in pairs) / len(pairs)


def hierarchical_f1(predicted, truth, ancestors: Terms) -> dict[str, float]:
    """Hierarchical precision, recall and F1: P and T the ancestor sets (with the term) of
    prediction and truth, precision = sum |P & T| / sum |P|, recall = sum |P & T| / sum |T|."""
    pairs = _pairs(predicted, truth)
    common = guessed = true = 0
    for p, t in pairs:
        mine = ancestors(p) if p is not None else frozenset()
        theirs = ancestors(t)
        common += len(mine & theirs)
        guessed += len(mine)
        true += len(theirs)
    precision = common / guessed if guessed else 0.0
    recall = common / true
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
