"""The maths of k-NN annotation: a similarity-weighted vote and the novelty rule.

Inputs are what one batched vector search returns for n query cells and k neighbour slots:
a label, a cosine similarity and a validity flag per slot (a search can return fewer than k
rows, for a small or filtered reference; the rest is padding). Pure numpy, no I/O: the
store, the CLI and the service sit on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from uceindex.errors import QueryError

NOVELTY_QUANTILE = 0.01  # novel = farther from its neighbours than 99% of stored cells are


@dataclass(frozen=True)
class VoteResult:
    """One entry per query cell, all arrays of length n (read-only). A cell with no valid
    neighbour has None labels and NaN scores; a cell whose neighbours all share one label
    has runner_up None and runner_up_share NaN."""

    label: np.ndarray  # object (n,): predicted label
    confidence: np.ndarray  # float64 (n,): vote share of `label`, in (0, 1]
    runner_up: np.ndarray  # object (n,): second label, None when all neighbours agree
    runner_up_share: np.ndarray  # float64 (n,)
    mean_similarity: np.ndarray  # float64 (n,): mean raw similarity of the valid neighbours
    n_neighbours: np.ndarray  # int64 (n,): valid slots

    def to_frame(self) -> pd.DataFrame:
        """The result as a DataFrame, one row per query cell, columns named as the fields."""
        return pd.DataFrame({name: getattr(self, name) for name in self.__dataclass_fields__})


def check_slots(labels, similarities, valid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes and dtypes of the (n, k) search output; `valid` defaults to all slots."""
    labels = np.asarray(labels)
    sims = np.asarray(similarities)
    if sims.ndim != 2 or labels.shape != sims.shape:
        raise QueryError(
            f"neighbour labels {labels.shape} and similarities {sims.shape} must both be "
            "(n_cells, k) arrays of the same shape"
        )
    if not np.issubdtype(sims.dtype, np.number) or np.iscomplexobj(sims):
        raise QueryError(f"similarities must be real numbers, got dtype {sims.dtype}")
    sims = sims.astype(np.float64, copy=False)
    if valid is None:
        ok = np.ones(sims.shape, dtype=bool)
    else:
        ok = np.asarray(valid)
        if ok.dtype != bool or ok.shape != sims.shape:
            raise QueryError(
                f"valid must be a boolean array of shape {sims.shape}, got {ok.dtype} {ok.shape}"
            )
    if not np.isfinite(sims[ok]).all():
        raise QueryError(
            "a valid neighbour slot has a NaN or infinite similarity; mark padded slots invalid"
        )
    return labels, sims, ok


def vote_weights(sims: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each valid slot's weight, max(similarity, 0), one vote each in a row whose weights are
    all 0; padded slots weigh 0. Returns (weights (n, k), row totals (n,))."""
    w = np.maximum(sims, 0.0, where=ok, out=np.zeros_like(sims))
    row_w = w.sum(axis=1)
    w = np.where(ok & (row_w[:, None] == 0), 1.0, w)  # all-zero rows: one vote each
    return w, w.sum(axis=1)


def _row_means(sims: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean similarity over valid slots, NaN for a row without one; valid count) per row."""
    count = ok.sum(axis=1)
    total = np.where(ok, sims, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return mean, count.astype(np.int64)


def _factorize(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> (int codes, sorted unique labels as objects), so that a smaller code is a
    smaller label. Refuses missing labels and mixed types, which cannot be ordered."""
    try:
        codes, uniques = pd.factorize(labels, sort=True)
        uniques = np.asarray(uniques, dtype=object)
        if len(uniques) > 1 and sorted(uniques.tolist()) != uniques.tolist():
            raise TypeError
    except TypeError:
        raise QueryError(
            "neighbour labels mix types (for example strings and numbers); "
            "convert the label column to one type"
        ) from None
    if (codes < 0).any():
        raise QueryError(
            "a valid neighbour has no label; mark it invalid or restrict the reference "
            'to labelled cells (for example --where "cell_type IS NOT NULL")'
        )
    return codes.astype(np.int64), uniques


def _best_group(g_w, g_s, g_code, row_start, alive) -> np.ndarray:
    """Index of each row's top `alive` group: highest weight, then highest summed
    similarity, then smallest code. Groups are sorted by row; `row_start` marks each row's
    first group. Rows without an alive group get none. Segment maxima, not a sort."""
    seg = np.repeat(np.arange(len(row_start)), np.diff(np.r_[row_start, len(g_w)]))
    cand = alive.copy()
    for key in (g_w, g_s, -g_code.astype(np.float64)):
        masked = np.where(cand, key, -np.inf)
        cand &= masked == np.maximum.reduceat(masked, row_start)[seg]
    return np.flatnonzero(cand)


def weighted_vote(
    neighbour_labels: np.ndarray,
    similarities: np.ndarray,
    valid: np.ndarray | None = None,
) -> VoteResult:
    """Similarity-weighted k-NN vote, per query cell (row).

    neighbour_labels: (n, k) strings/objects or integer codes; similarities: (n, k) cosine
    similarities; valid: (n, k) bool, False for padded slots (their label and similarity
    are ignored, NaN allowed there). A valid slot must have a label and a finite similarity.

    Weight of a neighbour = max(similarity, 0): a neighbour pointing away must not vote
    against its own label. If every weight of a row is 0 (all similarities <= 0) the row
    falls back to one vote per neighbour. A label's share = its weight / the row's weight.
    Ranking: higher weight, then higher summed raw similarity, then the smaller label
    (lexicographic for strings, numeric for codes), so ties never depend on slot order.
    mean_similarity averages the raw (unclipped) similarities of the valid slots.

    Vectorised: each row's slots are sorted by label code and summed per run, so time and
    memory are O(n k log k) whatever the number of labels. Sums are float64 in slot order.
    """
    labels, sims, ok = check_slots(neighbour_labels, similarities, valid)
    n = sims.shape[0]
    mean_sim, n_valid = _row_means(sims, ok)

    label = np.full(n, None, dtype=object)
    confidence = np.full(n, np.nan)
    runner_up = np.full(n, None, dtype=object)
    runner_up_share = np.full(n, np.nan)

    if ok.any():
        codes, uniques = _factorize(labels[ok])
        n_labels = len(uniques)
        w, row_w = vote_weights(sims, ok)

        # sort each row's slots by label code (stable: slot order kept inside a label, so
        # sums match a plain loop); padded slots get code n_labels and sort last
        code = np.full(sims.shape, n_labels, dtype=np.int64)
        code[ok] = codes
        perm = np.argsort(code, axis=1, kind="stable")
        code = np.take_along_axis(code, perm, axis=1).ravel()
        run = np.ones(sims.shape, dtype=bool)
        run[:, 1:] = np.diff(code.reshape(sims.shape), axis=1) != 0
        starts = np.flatnonzero(run)  # one group per run of a label in a row

        g_w = np.add.reduceat(np.take_along_axis(w, perm, axis=1).ravel(), starts)
        g_s = np.add.reduceat(
            np.take_along_axis(np.where(ok, sims, 0.0), perm, axis=1).ravel(), starts
        )
        g_code = code[starts]
        g_row = starts // sims.shape[1]
        real = g_code < n_labels
        g_w, g_s, g_code, g_row = g_w[real], g_s[real], g_code[real], g_row[real]

        row_start = np.flatnonzero(np.r_[True, g_row[1:] != g_row[:-1]])
        best = _best_group(g_w, g_s, g_code, row_start, np.ones(len(g_w), dtype=bool))
        label[g_row[best]] = uniques[g_code[best]]
        confidence[g_row[best]] = g_w[best] / row_w[g_row[best]]

        others = np.ones(len(g_w), dtype=bool)
        others[best] = False
        second = _best_group(g_w, g_s, g_code, row_start, others)
        runner_up[g_row[second]] = uniques[g_code[second]]
        runner_up_share[g_row[second]] = g_w[second] / row_w[g_row[second]]

    arrays = (label, confidence, runner_up, runner_up_share, mean_sim, n_valid)
    for a in arrays:
        a.flags.writeable = False
    return VoteResult(*arrays)


def novelty_threshold(
    self_similarities: np.ndarray,
    quantile: float = NOVELTY_QUANTILE,
    valid: np.ndarray | None = None,
) -> float:
    """Calibrate the novelty rule on the store.

    self_similarities: (m, k) similarities of a sample of stored cells to their own k
    nearest neighbours in the whole store, the cell itself excluded (search k + 1 and drop
    the hit with the cell's own id, not simply the first column: duplicates tie with it).
    valid: (m, k) bool for padded slots, as in `weighted_vote`.

    Rule: a query cell is novel when its mean neighbour similarity is below what 99% (for
    quantile=0.01) of the store's own cells have to theirs. The threshold is the `quantile`
    of the per-cell means (numpy's linear interpolation).

    Easy to get wrong: queries must be searched with the same k and the same reference as
    the calibration (a mean over 50 neighbours is lower than over 10; neighbours found only
    inside the sample are farther than those in the whole store).
    """
    if np.ndim(self_similarities) != 2:
        raise QueryError("self_similarities must be an (n_cells, k) array")
    _, sims, ok = check_slots(np.zeros(np.shape(self_similarities)), self_similarities, valid)
    if not 0.0 <= quantile <= 1.0:
        raise QueryError(f"quantile must be between 0 and 1, got {quantile}")
    means, count = _row_means(sims, ok)
    means = means[count > 0]
    if means.size == 0:
        raise QueryError(
            "no stored cell has a valid neighbour to calibrate novelty on; "
            "the store needs at least two cells"
        )
    return float(np.quantile(means, quantile))


def is_novel(mean_similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Bool array: mean neighbour similarity strictly below `threshold` (from
    `novelty_threshold`, same k). A cell with no valid neighbour (NaN) counts as novel:
    nothing in the reference resembles it."""
    if not np.isfinite(threshold):
        raise QueryError(f"novelty threshold must be a finite number, got {threshold}")
    mean = np.asarray(mean_similarity, dtype=np.float64)
    return ~(mean >= threshold)
