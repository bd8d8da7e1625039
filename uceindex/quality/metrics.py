"""The maths of the atlas quality report: pure functions over numpy arrays, no I/O.

Embeddings are unit rows; groups (data sets, labels) are integer codes, -1 for a missing
label. Neighbours are the (m, k) row positions `knn_within` returns, never a cell itself.
"""

from __future__ import annotations

import numpy as np

KNN_BLOCK = 1 << 24  # query x cell similarities held at once by knn_within (64 MB)


def cosine_summary(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the cosine over all m(m-1) ordered pairs i != j of the
    unit rows of x, without forming the m x m matrix: the sum of x_i.x_j is |sum x|^2 - m and
    the sum of its squares |X'X|_F^2 - m (the Gram matrix of the smaller side). NaN below 2 rows."""
    x = np.asarray(x, dtype=np.float32)
    m = len(x)
    if m < 2:
        return float("nan"), float("nan")
    self_dots = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    s = x.sum(axis=0, dtype=np.float64)
    total = float(s @ s - self_dots.sum())
    gram = (x.T @ x if x.shape[1] <= m else x @ x.T).astype(np.float64)  # float32 product
    squares = float((gram * gram).sum() - (self_dots**2).sum())
    pairs = m * (m - 1)
    mean = total / pairs
    return mean, float(np.sqrt(max(0.0, squares / pairs - mean * mean)))


def cosine_pairs(x: np.ndarray, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Cosines of n_pairs random pairs of distinct rows (drawn with replacement; empty below
    2 rows): the distribution behind `cosine_summary`, for quantiles and a histogram."""
    m = len(x)
    if m < 2:
        return np.empty(0)
    i = rng.integers(0, m, n_pairs)
    j = (i + rng.integers(1, m, n_pairs)) % m  # never i
    return np.einsum("ij,ij->i", x[i], x[j], dtype=np.float64)


def knn_within(x: np.ndarray, k: int) -> np.ndarray:
    """(m, min(k, m-1)) positions of each row's most similar other rows (cosine), best first:
    exact, in blocks of rows against all rows."""
    x = np.asarray(x, dtype=np.float32)
    m = len(x)
    k = min(k, m - 1)
    out = np.empty((m, max(k, 0)), dtype=np.int64)
    if k < 1:
        return out
    step = max(1, KNN_BLOCK // m)
    for a in range(0, m, step):
        sim = x[a : a + step] @ x.T
        sim[np.arange(len(sim)), np.arange(a, a + len(sim))] = -np.inf  # not itself
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[a : a + step] = np.take_along_axis(top, order, axis=1)
    return out


def other_share(neighbours: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """(m,) share of each cell's neighbours from another batch (data set) than its own."""
    batch = np.asarray(batch)
    if neighbours.shape[1] == 0:
        return np.full(len(batch), np.nan)
    return (batch[neighbours] != batch[:, None]).mean(axis=1)


def expected_other_share(batch: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """(m,) the share `other_share` would have under random mixing: of the other cells of the
    cell's group (its label; all cells when group is None), those from another batch. NaN
    for a cell without a label (group -1) or alone in its group."""
    batch = np.asarray(batch)
    group = np.zeros(len(batch), dtype=np.int64) if group is None else np.asarray(group)
    labelled = group >= 0
    out = np.full(len(batch), np.nan)
    if not labelled.any():
        return out
    g, b = group[labelled], batch[labelled]
    _, pair = np.unique(np.stack([g, b]), axis=1, return_inverse=True)
    in_group = np.bincount(g)[g]
    in_pair = np.bincount(pair.ravel())[pair.ravel()]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (in_group - in_pair) / (in_group - 1)
    out[labelled] = np.where(in_group > 1, share, np.nan)
    return out


def mixing_score(observed: np.ndarray, expected: np.ndarray) -> float | None:
    """Sum of observed over sum of expected other-batch shares, over the cells where both
    are defined: 1 mixes as randomly as the data sets' sizes allow, 0 never meets another.
    None when no cell could have met another batch."""
    ok = np.isfinite(observed) & np.isfinite(expected)
    denominator = float(expected[ok].sum())
    return float(observed[ok].sum()) / denominator if denominator > 0 else None


def label_coherence(neighbours: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(m,) share of each labelled cell's labelled neighbours that carry its label; NaN for
    an unlabelled cell (-1) or one without labelled neighbours."""
    label = np.asarray(label)
    theirs = label[neighbours]
    known = theirs >= 0
    same = ((theirs == label[:, None]) & known).sum(axis=1)
    n = known.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = same / n
    return np.where((label >= 0) & (n > 0), share, np.nan)


def chance_coherence(label: np.ndarray) -> float | None:
    """What `label_coherence` averages to when neighbours are random: the chance that two
    distinct labelled cells share a label (None below two labelled cells)."""
    label = np.asarray(label)
    counts = np.bincount(label[label >= 0]).astype(np.float64)
    n = counts.sum()
    return float((counts * (counts - 1)).sum() / (n * (n - 1))) if n >= 2 else None


def confusions(
    neighbours: np.ndarray, label: np.ndarray, names, top: int, cells: np.ndarray | None = None
) -> list[dict]:
    """The label pairs most often neighbours of each other: for unordered pairs {a, b}, the
    neighbour slots where a cell of one has a neighbour of the other (`slots`), and their share
    of all labelled neighbour slots of the cells of a and b. `cells` (bool, m) restricts the
    cells whose slots count (one data set's); the largest `top` pairs, ties by name."""
    label = np.asarray(label)
    rows = label >= 0 if cells is None else (label >= 0) & np.asarray(cells)
    a = np.repeat(label[rows], neighbours.shape[1])
    b = label[neighbours[rows]].ravel()
    known = b >= 0
    a, b = a[known], b[known]
    n_labels = len(names)
    slots = np.bincount(a, minlength=n_labels)  # labelled neighbour slots per cell label
    off = a != b
    lo, hi = np.minimum(a[off], b[off]), np.maximum(a[off], b[off])
    pair, count = np.unique(lo * n_labels + hi, return_counts=True)
    found = [
        {
            "labels": [str(names[p // n_labels]), str(names[p % n_labels])],
            "slots": int(c),
            "share": float(c / (slots[p // n_labels] + slots[p % n_labels])),
        }
        for p, c in zip(pair, count, strict=True)
    ]
    found.sort(key=lambda f: (-f["slots"], f["labels"]))
    return found[:top]


def quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Cells to draw from each group so that the total is min(budget, sum of sizes) and the
    groups are as equal as their sizes allow (water filling): a small group gives all its
    cells, the rest of the budget is split evenly among the others."""
    sizes = np.asarray(sizes, dtype=np.int64)
    out = np.zeros(len(sizes), dtype=np.int64)
    left, open_ = int(budget), list(np.argsort(sizes, kind="stable"))
    while open_ and left > 0:
        share = left // len(open_)
        small = [g for g in open_ if sizes[g] <= share]
        if not small:
            out[open_] = share
            out[open_[: left - share * len(open_)]] += 1  # the remainder, one each
            break
        for g in small:
            out[g] = sizes[g]
            left -= sizes[g]
        open_ = [g for g in open_ if g not in small]
    return out
