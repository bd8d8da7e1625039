"""Cell sentences: structure, seeding, and the same law as the reference sampler."""

from __future__ import annotations

import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from uce.eval_data import sample_cell_sentences

from uceindex.model.vocab import CHROM_RIGHT, CLS, PAD
from uceindex.sentences import GeneOrder, gather_columns, sample_sentences

N_GENES = 300
CHROM_OFFSET = 10_000


def _genes(seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = 4 + np.arange(N_GENES)
    chroms = CHROM_OFFSET + rng.integers(0, 12, N_GENES)
    starts = rng.integers(0, 10**8, N_GENES)
    order = GeneOrder.genomic_order(tokens, chroms, starts)
    return GeneOrder(tokens[order], chroms[order]), starts[order]


def _counts(n_cells: int, seed: int = 1, density: float = 0.2) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, N_GENES, density=density, format="csr", random_state=seed)
    X.data = rng.integers(1, 30, X.nnz).astype(np.float64)
    X = X.tolil()
    X[np.arange(n_cells), rng.integers(0, N_GENES, n_cells)] = 3.0  # no empty cell
    return sp.csr_matrix(X)


def _slow_sentence(tokens_row, genes: GeneOrder, starts):
    """Parse one sentence the obvious way: groups of (chromosome, genes) between CHROM_RIGHTs."""
    assert tokens_row[0] == CLS
    groups, i = [], 1
    start_of = dict(zip(genes.token_rows.tolist(), starts.tolist()))
    chrom_of = dict(zip(genes.token_rows.tolist(), genes.chrom_rows.tolist()))
    while i < len(tokens_row) and tokens_row[i] != PAD:
        chrom = tokens_row[i]
        j = i + 1
        while tokens_row[j] != CHROM_RIGHT:
            j += 1
        body = tokens_row[i + 1 : j].tolist()
        assert body, "an empty chromosome group"
        assert all(chrom_of[t] == chrom for t in body)
        assert [start_of[t] for t in body] == sorted(start_of[t] for t in body)
        groups.append((chrom, body))
        i = j + 1
    return groups, i


def test_structure_matches_the_spec():
    genes, starts = _genes()
    X = _counts(40)
    tokens, lengths = sample_sentences(X, genes, seed=0)
    for c in range(40):
        groups, length = _slow_sentence(tokens[c], genes, starts)
        assert length == lengths[c] == 1 + 1024 + 2 * len(groups)
        assert len({g for g, _ in groups}) == len(groups)  # each chromosome once
        drawn = [t for _, body in groups for t in body]
        assert len(drawn) == 1024
        expressed = set(genes.token_rows[X[c].indices].tolist())
        assert set(drawn) <= expressed  # only expressed genes are drawn
        assert (tokens[c, length:] == PAD).all()


def test_a_sentence_depends_only_on_seed_and_cell():
    genes, _ = _genes()
    X = _counts(50)
    tokens, lengths = sample_sentences(X, genes, seed=7)
    order = np.random.default_rng(0).permutation(50)
    shuffled, shuffled_len = sample_sentences(X[order], genes, seed=7)
    for new, old in enumerate(order):
        assert shuffled_len[new] == lengths[old]
        assert (shuffled[new, : lengths[old]] == tokens[old, : lengths[old]]).all()
    alone, _ = sample_sentences(X[3:4], genes, seed=7)
    assert (alone[0] == tokens[3, : alone.shape[1]]).all()
    other, _ = sample_sentences(X, genes, seed=8)
    assert not (other[:, :1000] == tokens[:, :1000]).all()


def test_empty_cells_are_refused():
    genes, _ = _genes()
    X = _counts(3).tolil()
    X[1, :] = 0
    with pytest.raises(ValueError, match="at least one"):
        sample_sentences(sp.csr_matrix(X), genes, seed=0)


def _gene_frequencies(tokens, lengths, genes) -> np.ndarray:
    freq = np.zeros(N_GENES)
    row_of = {t: i for i, t in enumerate(genes.token_rows.tolist())}
    for c in range(len(lengths)):
        body = tokens[c, 1 : lengths[c]]
        body = body[(body != CHROM_RIGHT) & (body < CHROM_OFFSET)]
        for t, k in zip(*np.unique(body, return_counts=True)):
            freq[row_of[t]] += k
    return freq / freq.sum()


def test_draws_follow_log1p_weights_like_the_reference():
    """One cell drawn under many seeds: gene shares match log1p(c)/sum for us and the reference."""
    genes, starts = _genes()
    cell = _counts(1, seed=3, density=0.3)
    w = np.zeros(N_GENES)
    w[cell.indices] = np.log1p(cell.data)
    expected = w / w.sum()

    # Different seeds give different cells' keys; replicate the cell with distinct seeds.
    ours = [sample_sentences(cell, genes, seed=s) for s in range(60)]
    ours_freq = _gene_frequencies(
        np.vstack([t[:, :1100] for t, _ in ours]), np.concatenate([l for _, l in ours]), genes
    )

    np.random.seed(0)
    args = types.SimpleNamespace(
        pad_length=1536,
        sample_size=1024,
        cls_token_idx=CLS,
        CHROM_TOKEN_OFFSET=CHROM_OFFSET,
        chrom_token_right_idx=CHROM_RIGHT,
        pad_token_idx=PAD,
    )
    dense = torch.tensor(cell.toarray())
    weights = torch.log1p(dense) / torch.log1p(dense).sum()
    chroms = pd.Series(genes.chrom_rows - CHROM_OFFSET, index=[f"G{i}" for i in range(N_GENES)])
    ref_tokens, ref_lengths = [], []
    for _ in range(60):
        sentence, _mask, length, _ = sample_cell_sentences(
            dense,
            weights,
            "d",
            args,
            dataset_to_protein_embeddings={"d": torch.tensor(genes.token_rows)},
            dataset_to_chroms={"d": chroms},
            dataset_to_starts={"d": starts},
        )
        ref_tokens.append(sentence.numpy()[:, :1100])
        ref_lengths.append(length)
    ref_tokens = np.vstack(ref_tokens)
    ref_freq = _gene_frequencies(ref_tokens, np.array(ref_lengths), genes)

    # 61,440 draws each: shares agree with the law and with each other to a few 1e-3.
    assert np.abs(ours_freq - expected).max() < 4e-3
    assert np.abs(ref_freq - expected).max() < 4e-3
    # Same structure: the reference's sentences parse under the same rules, same length law.
    for row, length in zip(ref_tokens, ref_lengths):
        groups, parsed = _slow_sentence(row, genes, starts)
        assert parsed == length == 1 + 1024 + 2 * len(groups)
    ours_len = np.concatenate([l for _, l in ours])
    assert abs(ours_len.mean() - np.mean(ref_lengths)) <= 2


MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    """splitmix64's finaliser in Python integers."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _obvious_sentence(row: sp.csr_matrix, genes: GeneOrder, seed: int) -> list[int]:
    """The documented random stream, spelled out in Python integers one draw and one
    chromosome at a time."""
    tokens = [int(genes.token_rows[i]) for i in row.indices]
    bits = [int(v) for v in np.asarray(row.data, dtype=np.float64).view(np.uint64)]
    pairs = sum(_mix((t * GOLDEN & MASK) ^ b) for t, b in zip(tokens, bits)) & MASK
    key = _mix(pairs ^ _mix((seed + GOLDEN) & MASK))
    cum = np.cumsum([math.log1p(v) for v in row.data])
    times = np.zeros(row.nnz, int)
    for j in range(1, 1025):
        u = (_mix((key + j * GOLDEN) & MASK) >> 11) / 2**53
        first_above = np.searchsorted(cum, u * cum[-1], side="right")
        times[min(first_above, row.nnz - 1)] += 1
    drawn = [i for i in range(row.nnz) if times[i]]
    chroms = []
    for i in drawn:
        chrom = int(genes.chrom_rows[row.indices[i]])
        if chrom not in chroms:
            chroms.append(chrom)
    prio = {c: _mix(key ^ _mix((c + GOLDEN) & MASK)) >> 33 for c in chroms}
    sentence = [CLS]
    for chrom in sorted(chroms, key=lambda c: prio[c]):  # stable: ties keep genomic order
        sentence.append(chrom)
        for i in drawn:
            if genes.chrom_rows[row.indices[i]] == chrom:
                sentence += [int(genes.token_rows[row.indices[i]])] * int(times[i])
        sentence.append(CHROM_RIGHT)
    return sentence


def test_compiled_sampler_equals_the_obvious_one():
    genes, _ = _genes()
    X = _counts(12, seed=5).tolil()
    X[10, :] = 0
    X[10, 7] = 4.0  # a cell of one gene
    X[11, :] = 0
    one_chrom = np.flatnonzero(genes.chrom_rows == genes.chrom_rows[0])
    X[11, one_chrom] = np.arange(1, len(one_chrom) + 1)  # a cell on one chromosome
    X = sp.csr_matrix(X)
    X.data[:5] = [0.5, 2.5, 5000.0, 70000.0, 1e9]  # past the log1p table
    X.sort_indices()
    wide = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)))
    tokens, lengths = sample_sentences(X, genes, seed=11)
    wide_tokens, _ = sample_sentences(wide, genes, seed=11)
    assert (wide_tokens == tokens).all()  # int32 and int64 indices alike
    assert lengths[10] == 1 + 1024 + 2 and lengths[11] == 1 + 1024 + 2
    for c in range(12):
        assert tokens[c, : lengths[c]].tolist() == _obvious_sentence(X[c], genes, seed=11)


def test_inputs_the_sampler_refuses_or_cleans():
    genes, _ = _genes()
    X = _counts(6)
    tokens, _ = sample_sentences(X, genes, seed=3)
    stored_zero = X.tolil()
    stored_zero = sp.csr_matrix(stored_zero)
    stored_zero.data = np.append(stored_zero.data, 0.0)  # an explicit zero in the last cell
    stored_zero.indices = np.append(stored_zero.indices, 0)
    stored_zero.indptr[-1] += 1
    stored_zero.has_sorted_indices = False
    before = stored_zero.copy()
    same, _ = sample_sentences(stored_zero, genes, seed=3)
    assert (same == tokens).all()  # a stored zero is no count
    assert (stored_zero != before).nnz == 0 and not stored_zero.has_sorted_indices  # untouched
    for bad in (np.nan, np.inf, -1.0):
        broken = X.copy()
        broken.data[0] = bad
        with pytest.raises(ValueError, match="finite and non-negative"):
            sample_sentences(broken, genes, seed=3)
    shuffled = GeneOrder(genes.token_rows[::-1], genes.chrom_rows[::-1])
    with pytest.raises(ValueError, match="genomic order"):
        sample_sentences(X, shuffled, seed=3)
    for size in (0, 1534):
        with pytest.raises(ValueError, match="sample_size"):
            sample_sentences(X, genes, seed=3, sample_size=size)


def _product(counts, target, n_columns):
    """The obvious way: a 0/1 combiner, a sparse product, then canonical form."""
    rows = np.flatnonzero(target >= 0)
    combiner = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, target[rows])), shape=(len(target), n_columns)
    )
    out = sp.csr_matrix(sp.csr_matrix(counts) @ combiner)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


@pytest.mark.parametrize("n_columns", [7, 5000])  # a cell fills many columns (swept), few (sorted)
def test_gathered_columns_equal_the_sparse_product(n_columns):
    rng = np.random.default_rng(n_columns)
    n_input = 300
    target = rng.integers(-1, n_columns, n_input)  # -1: dropped; repeats: summed
    X = sp.random(40, n_input, density=0.2, format="csr", random_state=1) * 9
    X.data = np.round(X.data)  # stored zeros among the counts
    X = X.tolil()
    X[3, :] = 0  # an empty cell
    X[5, 0], X[5, 1] = 2.0, -2.0  # entries that cancel where they land together
    target[1] = target[0] = max(target[0], 0)
    X = sp.csr_matrix(X)
    whole = X.astype(np.int64)  # integer counts
    X.data[7] = np.nan  # kept: the sampler names it
    for counts in (X, whole, X[:, ::-1][:, ::-1], X.toarray()):
        got = gather_columns(counts, target, n_columns)
        want = _product(counts, target, n_columns)
        assert got.has_sorted_indices and got.shape == want.shape
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.data, want.data)  # NaN where NaN
        assert got.dtype == want.dtype
        assert (np.diff(got.indices[got.indptr[5] : got.indptr[6]]) > 0).all()


def test_gene_matching_and_sentences_do_not_load_torch():
    """io and sentences sit below the model: the vocabulary they read is torch-free."""
    code = (
        "import sys, uceindex.io.genes, uceindex.sentences, uceindex.model.vocab; "
        "print('torch' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
