"""Counts -> cell sentences (docs/uce.md §5), a whole CSR batch in one compiled call.

A cell sentence is [CLS], then for each chromosome in a random order: the chromosome's
token, the sampled genes in genomic order (a gene drawn k times appears k times), and
CHROM_RIGHT. Genes are drawn with replacement with probability log1p(count) / sum.

Randomness is counter-based: every random number is a hash of (seed, the cell's content,
a counter), so a cell's sentence depends only on the seed and the cell itself, never on the
batch size, the order of cells or its neighbours. Same draw law as the reference's
`np.random.choice`, different stream.

Only the multiset of draws matters (a gene's k draws sit together), so the sampler counts
draws per gene and writes each run once, instead of sorting 1024 draws per cell.

The per-cell work is a loop compiled by numba (as scanpy's own kernels are): array code
needs many passes over temporaries the size of the stored counts (the history is in
BENCHMARKS.md). The kernels release the GIL, so a thread samples the next chunk while the
model runs (`uceindex.pipeline`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from uceindex.model.vocab import CHROM_RIGHT, CLS, PAD

SAMPLE_SIZE = 1024  # genes drawn per cell (the reference's sample_size)
PAD_LENGTH = 1536  # longest sentence the positional encoding covers

# uint64 constants: numba turns uint64-with-int64 arithmetic into float64, so every
# operand of the hash is spelled as uint64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S11, _S27, _S30, _S31, _S33 = (np.uint64(s) for s in (11, 27, 30, 31, 33))
_INV53 = 1.0 / (1 << 53)
GUIDE = 1024  # guide table slots per cell (a power of two: g / GUIDE is exact)
_INV_GUIDE = 1.0 / GUIDE
# log1p of the small integer counts most cells are made of, from the C library's log1p,
# which numba also calls for the rest (numpy's own log1p differs in the last bit on ~1% of
# values, and by CPU): every weight comes from one function.
LOG1P = np.array([math.log1p(c) for c in range(4096)])

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _mix(x):
    """splitmix64's finaliser: a bijective avalanche on one uint64."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


@_jit
def _unit(x):
    """uint64 -> float64 uniform in [0, 1)."""
    return np.float64(x >> _S11) * _INV53


@dataclass(frozen=True)
class GeneOrder:
    """The genes of a count matrix's columns, as tokens. Columns must already be in genomic
    order: by chromosome row, then start (then token row), so that within a chromosome the
    genes of a sentence come out sorted. `genomic_order()` gives that permutation."""

    token_rows: np.ndarray  # int64, one per column
    chrom_rows: np.ndarray  # int64 token row of each column's chromosome

    @staticmethod
    def genomic_order(token_rows, chrom_rows, starts) -> np.ndarray:
        return np.lexsort((token_rows, starts, chrom_rows))


@_jit
def _groups(a, b, indices, chrom_rows, draws, starts):
    """The chromosome groups of the entries a..b of one cell: writes the first drawn entry
    of each into `starts` (a chromosome's genes are one run of columns); returns how many."""
    n_groups, chrom = 0, -1
    for j in range(a, b):
        here = chrom_rows[indices[j]]
        if (draws[j] > 0) & (here != chrom):
            chrom = here
            starts[n_groups] = j
            n_groups += 1
    return n_groups


@_jit
def _draw(indptr, indices, token_rows, chrom_rows, values, seed, sample_size, draws, keys, lengths):
    """Per cell: its key (a hash of its (token, count) pairs, independent of their order),
    how often each of its entries is drawn (into `draws`), and the length of its sentence:
    CLS, the draws, two tokens per chromosome drawn from.

    A draw is the first entry whose running sum of log1p(count) exceeds u * total, found
    through a guide table (Chen's inversion method): guide[g] is the first entry past
    g / GUIDE of the total, so a draw starts there and walks a step or two."""
    bits = values.view(np.uint64)
    longest = np.max(indptr[1:] - indptr[:-1])
    cum = np.empty(longest, np.float64)  # one cell's running sum
    starts = np.empty(longest, np.int64)
    guide = np.empty(GUIDE, np.int64)
    for c in range(len(indptr) - 1):
        a, b = indptr[c], indptr[c + 1]
        pairs, total = np.uint64(0), 0.0
        for j in range(a, b):
            pairs += _mix(np.uint64(token_rows[indices[j]]) * _GOLDEN ^ bits[j])
            v = values[j]
            small = (v >= 0) & (v < LOG1P.size) & (v == np.floor(v))
            total += LOG1P[np.int64(v)] if small else np.log1p(v)
            cum[j - a] = total
        key = _mix(pairs ^ _mix(seed + _GOLDEN))
        keys[c] = key
        last = b - a - 1
        j = 0
        for g in range(GUIDE):  # (g / GUIDE) * total <= u * total whenever u >= g / GUIDE
            while j < last and cum[j] <= (g * _INV_GUIDE) * total:
                j += 1
            guide[g] = j
        for i in range(1, sample_size + 1):
            u = _unit(_mix(key + np.uint64(i) * _GOLDEN))
            target = u * total
            j = guide[np.int64(u * GUIDE)]
            while j < last and cum[j] <= target:
                j += 1
            draws[a + j] += 1
        n_groups = _groups(a, b, indices, chrom_rows, draws, starts)
        lengths[c] = 1 + sample_size + 2 * n_groups


@_jit
def _write(indptr, indices, token_rows, chrom_rows, draws, keys, out):
    """Per cell: CLS, then its chromosome groups in a random order (a priority hashed from
    the cell's key and the chromosome), each [chrom, genes in genomic order, CHROM_RIGHT]."""
    group_start = np.empty(out.shape[1], np.int64)
    group_prio = np.empty(out.shape[1], np.uint64)
    for c in range(len(indptr) - 1):
        end = indptr[c + 1]
        n_groups = _groups(indptr[c], end, indices, chrom_rows, draws, group_start)
        for g in range(n_groups):
            chrom = np.uint64(chrom_rows[indices[group_start[g]]])
            group_prio[g] = _mix(keys[c] ^ _mix(chrom + _GOLDEN)) >> _S33
        for g in range(1, n_groups):  # insertion sort by priority: stable, few groups
            start, prio, h = group_start[g], group_prio[g], g
            while h > 0 and group_prio[h - 1] > prio:
                group_start[h], group_prio[h] = group_start[h - 1], group_prio[h - 1]
                h -= 1
            group_start[h], group_prio[h] = start, prio
        out[c, 0] = CLS
        pos = 1
        for g in range(n_groups):
            j = group_start[g]
            chrom = chrom_rows[indices[j]]
            out[c, pos] = chrom
            pos += 1
            while j < end and chrom_rows[indices[j]] == chrom:
                token, times = token_rows[indices[j]], draws[j]
                out[c, pos] = token  # kept only if drawn: the next write lands here otherwise
                for r in range(1, times):
                    out[c, pos + r] = token
                pos += times
                j += 1
            out[c, pos] = CHROM_RIGHT
            pos += 1


@_jit
def _gather(indptr, indices, data, target, n_columns, out_indptr, out_indices, out_data):
    """Per cell: its entries moved to column target[column] (dropped where -1), entries that
    land on one column summed, written in column order without zeros; returns the count."""
    total = np.zeros(n_columns, out_data.dtype)
    seen = np.zeros(n_columns, np.bool_)
    touched = np.empty(n_columns, np.int64)
    k = 0
    for c in range(len(indptr) - 1):
        n = 0
        for p in range(indptr[c], indptr[c + 1]):
            t = target[indices[p]]
            if t >= 0:
                if not seen[t]:
                    seen[t] = True
                    touched[n] = t
                    n += 1
                total[t] += data[p]
        if n * 64 < n_columns:  # few columns: sort them; many: sweep the marks in order
            columns = np.sort(touched[:n])
        else:
            columns = np.flatnonzero(seen)
        for t in columns:
            if total[t] != 0:  # NaN is kept: the sampler refuses it by name
                out_indices[k] = t
                out_data[k] = total[t]
                k += 1
            total[t] = 0
            seen[t] = False
        out_indptr[c + 1] = k
    return k


def gather_columns(counts, target: np.ndarray, n_columns: int) -> sp.csr_matrix:
    """Counts (cells x input columns, sparse or dense) -> cells x `n_columns` CSR in
    canonical form (sorted, summed, no zeros): input column j moves to target[j], or goes
    where target[j] is -1. It is `counts @ combiner` for a 0/1 combiner with one entry a
    row, in one pass: the sparse product and the sort after it cost more than sampling."""
    counts = sp.csr_matrix(counts)
    dtype = np.result_type(counts.dtype, np.float32)
    index = np.int32 if max(counts.nnz, n_columns) < 2**31 else np.int64
    out_indptr = np.zeros(counts.shape[0] + 1, index)
    out_indices = np.empty(counts.nnz, index)
    out_data = np.empty(counts.nnz, dtype)
    k = _gather(
        counts.indptr,
        counts.indices,
        counts.data.astype(dtype, copy=False),
        np.asarray(target, dtype=np.int64),
        n_columns,
        out_indptr,
        out_indices,
        out_data,
    )
    out = sp.csr_matrix(
        (out_data[:k], out_indices[:k], out_indptr), shape=(counts.shape[0], n_columns)
    )
    out.has_sorted_indices = True
    return out


def sample_sentences(
    counts: sp.csr_matrix,
    genes: GeneOrder,
    seed: int,
    sample_size: int = SAMPLE_SIZE,
    pad_length: int = PAD_LENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (cells x genes in genomic order, every row non-empty) -> token ids (cells,
    longest length) int64 padded with PAD, and lengths (cells,) int64."""
    if sample_size < 1 or 3 + sample_size > pad_length:
        raise ValueError(f"sample_size must be 1 to {pad_length - 3}, got {sample_size}")
    if (np.diff(genes.chrom_rows) < 0).any():
        raise ValueError("columns must be in genomic order (GeneOrder.genomic_order)")
    counts = counts.tocsr()
    lo, hi = (counts.data.min(), counts.data.max()) if counts.nnz else (1, 1)  # NaN stays NaN
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
        raise ValueError("counts must be finite and non-negative")
    if not counts.has_sorted_indices or lo == 0:  # work on a copy
        counts = counts.copy()
        counts.sort_indices()
        counts.eliminate_zeros()  # a stored zero must not change the cell's key
    n = counts.shape[0]
    if n == 0:
        return np.zeros((0, 1), np.int64), np.zeros(0, np.int64)
    if (np.diff(counts.indptr) == 0).any():
        raise ValueError("every cell needs at least one expressed gene")
    indptr = counts.indptr.astype(np.int64)
    values = np.ascontiguousarray(counts.data, dtype=np.float64)
    columns = (
        counts.indices,
        np.asarray(genes.token_rows, dtype=np.int64),
        np.asarray(genes.chrom_rows, dtype=np.int64),
    )
    draws = np.zeros(counts.nnz, np.int32)
    keys = np.empty(n, np.uint64)
    lengths = np.empty(n, np.int64)
    _draw(indptr, *columns, values, np.uint64(seed), sample_size, draws, keys, lengths)
    width = int(lengths.max())
    if width > pad_length:
        raise ValueError(f"a sentence of {width} tokens exceeds pad_length {pad_length}")
    out = np.full((n, width), PAD, dtype=np.int64)
    _write(indptr, *columns, draws, keys, out)
    return out, lengths
