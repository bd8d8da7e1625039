"""Counts -> cell sentences (UCE_SPEC section 5), a whole CSR batch at once.

A cell sentence is [CLS], then for each chromosome in a random order: the chromosome's
token, the sampled genes in genomic order (a gene drawn k times appears k times), and
CHROM_RIGHT. Genes are drawn with replacement with probability log1p(count) / sum.

Randomness is counter-based: every random number is a hash of (seed, the cell's content,
a counter), so a cell's sentence depends only on the seed and the cell itself, never on the
batch size, the order of cells or its neighbours. Same draw law as the reference's
`np.random.choice`, different stream.

Only the multiset of draws matters (a gene's k draws sit together), so the sampler counts
draws per gene and writes each run once, instead of sorting 1024 draws per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from uceindex.model.load import CHROM_RIGHT, CLS, PAD

SAMPLE_SIZE = 1024  # genes drawn per cell (the reference's sample_size)
PAD_LENGTH = 1536  # longest sentence the positional encoding covers
BLOCK_CELLS = 128  # cells sampled together: their temporaries stay in cache (2-3x faster)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective avalanche on uint64."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in [0, 1)."""
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


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


def cell_keys(counts: sp.csr_matrix, genes: GeneOrder, seed: int) -> np.ndarray:
    """One uint64 per non-empty cell from its (gene, count) pairs, independent of column order."""
    with np.errstate(over="ignore"):
        tok = genes.token_rows[counts.indices].astype(np.uint64)
        val = np.asarray(counts.data, dtype=np.float64).view(np.uint64)
        pair = _mix(tok * _GOLDEN ^ val)
        sums = np.add.reduceat(pair, counts.indptr[:-1])  # rows must be non-empty
        return _mix(sums ^ _mix(np.uint64(seed) + _GOLDEN))


def draw_counts(
    counts: sp.csr_matrix, keys: np.ndarray, sample_size: int = SAMPLE_SIZE
) -> np.ndarray:
    """How often each stored entry of `counts` is drawn: int64 aligned with counts.data.

    One cumulative sum of log1p(counts) runs over the whole batch; each cell's uniforms are
    scaled into its own stretch of it, so one searchsorted serves every cell."""
    n = counts.shape[0]
    cum = np.cumsum(np.log1p(np.asarray(counts.data, dtype=np.float64)))
    ends = counts.indptr[1:] - 1
    before = np.concatenate([[0.0], cum[ends[:-1]]])
    total = cum[ends] - before
    with np.errstate(over="ignore"):
        counter = (np.arange(1, sample_size + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        u = np.sort(_unit(_mix(keys[:, None] + counter)), axis=1)  # sorted: a faster search
    targets = before[:, None] + u * total[:, None]  # (n, sample_size)
    picked = np.searchsorted(cum, targets.ravel(), side="right").reshape(n, sample_size)
    np.minimum(picked, ends[:, None], out=picked)  # rounding at a cell's right edge
    return np.bincount(picked.ravel(), minlength=counts.nnz)


def sample_sentences(
    counts: sp.csr_matrix,
    genes: GeneOrder,
    seed: int,
    sample_size: int = SAMPLE_SIZE,
    pad_length: int = PAD_LENGTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (cells x genes in genomic order, every row non-empty) -> token ids (cells,
    longest length) int64 padded with PAD, and lengths (cells,) int64."""
    counts = counts.tocsr()
    counts.sort_indices()
    n = counts.shape[0]
    if n == 0:
        return np.zeros((0, 1), np.int64), np.zeros(0, np.int64)
    if (np.diff(counts.indptr) == 0).any():
        raise ValueError("every cell needs at least one expressed gene")
    blocks = [
        _sample_block(counts[i : i + BLOCK_CELLS], genes, seed, sample_size, pad_length)
        for i in range(0, n, BLOCK_CELLS)
    ]
    width = max(t.shape[1] for t, _ in blocks)
    tokens = np.full((n, width), PAD, dtype=np.int64)
    for i, (t, _) in zip(range(0, n, BLOCK_CELLS), blocks):
        tokens[i : i + len(t), : t.shape[1]] = t
    return tokens, np.concatenate([lengths for _, lengths in blocks])


def _sample_block(counts, genes: GeneOrder, seed: int, sample_size: int, pad_length: int):
    n = counts.shape[0]
    keys = cell_keys(counts, genes, seed)
    m = draw_counts(counts, keys, sample_size)
    hit = np.flatnonzero(m)  # entries drawn at least once, in (cell, genomic) order
    cell = np.searchsorted(counts.indptr, hit, side="right") - 1
    col = counts.indices[hit]
    mult = m[hit]
    chrom = genes.chrom_rows[col]
    # Chromosome order: a random priority per (cell, chromosome); a stable sort keeps the
    # genomic order inside each chromosome.
    with np.errstate(over="ignore"):
        prio = _mix(keys[cell] ^ _mix(chrom.astype(np.uint64) + _GOLDEN)) >> np.uint64(33)
    order = np.argsort((cell.astype(np.uint64) << np.uint64(31)) | prio, kind="stable")
    cell, col, mult, chrom = cell[order], col[order], mult[order], chrom[order]

    new_group = np.ones(len(cell), bool)
    new_group[1:] = (cell[1:] != cell[:-1]) | (chrom[1:] != chrom[:-1])
    group_start = np.flatnonzero(new_group)
    groups_per_cell = np.bincount(cell[group_start], minlength=n)
    first_group = np.concatenate([[0], np.cumsum(groups_per_cell)[:-1]])
    g = np.cumsum(new_group) - 1  # global group id of each entry
    g_in_cell = g - first_group[cell]
    # Draws before each entry within its cell.
    cum_mult = np.cumsum(mult)
    first_entry = np.searchsorted(cell, np.arange(n), side="left")
    before = cum_mult - mult - (cum_mult - mult)[first_entry][cell]
    pos = 2 + before + 2 * g_in_cell  # [CLS] + own chromosome token + earlier groups

    lengths = 1 + sample_size + 2 * groups_per_cell
    width = int(lengths.max())
    if width > pad_length:
        raise ValueError(f"a sentence of {width} tokens exceeds pad_length {pad_length}")
    tokens = np.full((n, width), PAD, dtype=np.int64)
    tokens[:, 0] = CLS
    run = np.repeat(np.arange(len(mult)), mult)
    offset = np.arange(run.size) - np.repeat(cum_mult - mult, mult)
    tokens[cell[run], pos[run] + offset] = genes.token_rows[col[run]]
    # Chromosome tokens open each group; CHROM_RIGHT follows its last gene.
    tokens[cell[group_start], pos[group_start] - 1] = chrom[group_start]
    group_end = np.concatenate([group_start[1:], [len(cell)]]) - 1
    tokens[cell[group_end], pos[group_end] + mult[group_end]] = CHROM_RIGHT
    return tokens, lengths.astype(np.int64)
