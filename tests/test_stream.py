"""Row ranges of an .h5ad read in chunks equal anndata's own reading of the file, sliced."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from uceindex.errors import InputDataError
from uceindex.ingestion import ingest
from uceindex.io import stream
from uceindex.io.stream import H5AD

N, GENES = 40, 9
RANGES = [(0, N), (0, 1), (7, 23), (N - 1, N), (5, 5)]
PICKS = [np.array([2, 3, 5, 8]), np.array([0, 17, 39]), np.array([], dtype=np.int64)]


def _obs() -> pd.DataFrame:
    i = np.arange(N)
    return pd.DataFrame(
        {
            "cat": pd.Categorical(np.where(i % 7 == 3, None, np.array(["b", "a", "c"])[i % 3])),
            "num_cat": pd.Categorical(i % 4),
            "nint": pd.array(np.where(i % 5 == 0, None, i), dtype="Int64"),
            "nbool": pd.array(np.where(i % 3 == 0, None, i % 2 == 0), dtype="boolean"),
            "nstr": pd.array(np.where(i % 4 == 1, None, [f"n{k}" for k in i]), dtype="string"),
            "text": np.array([f"cell text {k}" for k in i], dtype=object),
            "f": np.where(i % 6 == 2, np.nan, i / 4),
            "b": i % 2 == 1,
            "small": i.astype(np.int16),
        },
        index=[f"cell{k}" for k in i],
    )


def _counts(seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = sp.random(N, GENES, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    x.data = np.ceil(x.data * 9)
    x.data[x.indptr[11] : x.indptr[12]] = 0  # an empty row
    x.eliminate_zeros()
    return x


def _write(path: Path, *, dense: bool) -> Path:
    x = _counts(0)
    a = ad.AnnData(X=x.toarray() if dense else x, obs=_obs())
    a.var_names = [f"G{j}" for j in range(GENES)]
    a.layers["counts"] = _counts(1).toarray() if dense else _counts(1)
    a.layers["csc"] = _counts(2).tocsc()
    a.raw = ad.AnnData(X=_counts(3)[:, :5], obs=a.obs, var=pd.DataFrame(index=list("VWXYZ")))
    a.obsm["X_emb"] = np.random.default_rng(4).standard_normal((N, 6)).astype(np.float32)
    a.obsm["X_int"] = np.arange(N * 2, dtype=np.int64).reshape(N, 2)
    with ad.settings.override(allow_write_nullable_strings=True):
        a.write_h5ad(path)
    return path


def _read(path: Path) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(path)


@pytest.fixture(scope="module", params=["sparse", "dense"])
def written(request, tmp_path_factory):
    path = _write(tmp_path_factory.mktemp("stream") / "cells.h5ad", dense=request.param == "dense")
    return path, _read(path)


def _same_matrix(got, want) -> None:
    if sp.issparse(want):
        assert isinstance(got, sp.csr_matrix)
        want = sp.csr_matrix(want)
        assert got.dtype == want.dtype and got.indices.dtype == want.indices.dtype
        assert got.shape == want.shape and (got != want).nnz == 0
    else:
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "where, expected",
    [
        ("X", lambda a: a.X),
        ("layers/counts", lambda a: a.layers["counts"]),
        ("layers/csc", lambda a: a.layers["csc"].tocsr()),
        ("raw/X", lambda a: a.raw.X),
    ],
)
def test_matrix_rows_equal_anndata(written, where, expected):
    path, full = written
    want = expected(full)
    with H5AD(path) as h5:
        matrix = h5.matrix(where)
        assert matrix.shape == want.shape
        for start, stop in RANGES:
            _same_matrix(matrix.rows(start, stop), want[start:stop])
            _same_matrix(matrix[start:stop], want[start:stop])
        for picks in PICKS[:2]:
            _same_matrix(matrix[picks], want[picks])
        assert matrix[PICKS[2]].shape == (0, want.shape[1])


@pytest.mark.parametrize("key", ["X_emb", "X_int"])
def test_obsm_rows_equal_anndata(written, key):
    path, full = written
    with H5AD(path) as h5:
        matrix = h5.obsm(key)
        for start, stop in RANGES:
            _same_matrix(matrix.rows(start, stop), full.obsm[key][start:stop])


def test_obs_rows_equal_anndata(written):
    path, full = written
    with H5AD(path) as h5:
        assert h5.n_obs == N
        h5.obs_columns(set())
        for start, stop in RANGES:
            want = full.obs.iloc[start:stop]
            assert list(h5.obs_names(start, stop)) == list(want.index)
            got = h5.obs_chunk(start, stop)
            pd.testing.assert_frame_equal(got, want.set_axis(pd.RangeIndex(start, stop)))
        assert h5.duplicate_obs_names(block=7) == []


def test_a_row_range_reads_only_its_rows(written, monkeypatch):
    """Memory stays flat in cells: no dataset as long as the cells is read whole for a range."""
    path, _ = written
    reads, read = [], h5py.Dataset.__getitem__

    def spy(self, key, *args, **kwargs):
        reads.append((self.name, self.shape, key))
        return read(self, key, *args, **kwargs)

    with H5AD(path) as h5:
        h5.obs_columns(set())
        matrices = [h5.matrix("X"), h5.matrix("layers/counts"), h5.obsm("X_emb")]
        monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
        h5.obs_names(7, 23)
        h5.obs_chunk(7, 23)
        for matrix in matrices:
            matrix.rows(7, 23)
    assert reads
    for name, shape, key in reads:
        if not name.endswith("/categories"):
            assert isinstance(key, slice) and key.stop - key.start < shape[0], (name, key)


def test_counts_found_in_raw_with_raw_var(tmp_path):
    a = ad.AnnData(X=_counts(0) / 3, obs=_obs())
    a.raw = ad.AnnData(X=_counts(3)[:, :5], obs=a.obs, var=pd.DataFrame(index=list("VWXYZ")))
    path = tmp_path / "normalised.h5ad"
    a.write_h5ad(path)
    full = _read(path)
    with H5AD(path) as h5:
        source = h5.find_counts()
        assert source.name == "raw.X"
        assert list(source.var.index) == list(full.raw.var_names)
        _same_matrix(source.matrix.rows(3, 9), full.raw.X[3:9])


def test_a_large_csc_matrix_is_refused_with_the_fix(written, monkeypatch):
    path, _ = written
    monkeypatch.setattr(stream, "CSC_IN_MEMORY", 10)
    with H5AD(path) as h5, pytest.raises(InputDataError, match="CSC.*tocsr"):
        h5.matrix("layers/csc")


def test_truncated_or_foreign_files_are_refused(written, tmp_path):
    path, _ = written
    data = path.read_bytes()
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.h5ad"
    garbage.write_bytes(bytes(range(256)) * 16)
    for bad in (truncated, garbage):
        with pytest.raises(InputDataError, match="cannot read .* is it complete"):
            H5AD(bad)
    with pytest.raises(InputDataError, match="no such file"):
        H5AD(tmp_path / "absent.h5ad")


def _spoil_first_chunk(path: Path, dataset: str) -> None:
    """Overwrite the stored bytes of a compressed dataset's first chunk."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)


@pytest.mark.parametrize("dataset", ["obsm/X_emb", "obs/cat/codes", "obs/nint/values", "obs/text"])
def test_a_corrupt_chunk_is_one_clear_error(dataset, tmp_path):
    a = _read(_write(tmp_path / "plain.h5ad", dense=False))
    path = tmp_path / "corrupt.h5ad"
    with ad.settings.override(allow_write_nullable_strings=True):
        a.write_h5ad(path, compression="gzip")
    _spoil_first_chunk(path, dataset)
    with pytest.raises(InputDataError, match="corrupt.h5ad: cannot read .*is the file complete"):
        ingest(path, species="human", store=tmp_path / "atlas", embedding_key="X_emb")


def test_counts_in_a_layer_of_another_name_are_suggested(tmp_path):
    """No counts where uceindex looks, but whole numbers in other layers: they are listed, in
    one line that says --layer NAME, from the file (ingest) and in memory (embed) alike."""
    from uceindex.io.counts import find_counts

    a = ad.AnnData(X=_counts(0) / 3, obs=_obs())
    a.layers["raw_counts"] = _counts(1)
    a.layers["spliced"] = _counts(2).toarray()
    a.layers["scaled"] = _counts(3) / 7
    path = tmp_path / "renamed.h5ad"
    a.write_h5ad(path)
    with H5AD(path) as h5, pytest.raises(InputDataError) as from_file:
        h5.find_counts()
    with pytest.raises(InputDataError) as in_memory:
        find_counts(a)
    for err in (from_file, in_memory):
        text = str(err.value)
        assert "\n" not in text and "raw_counts, spliced hold whole numbers" in text
        assert "--layer NAME (e.g. --layer raw_counts)" in text and "scaled" not in text
    with H5AD(path) as h5:
        assert h5.find_counts("raw_counts").name == "layers['raw_counts']"
        with pytest.raises(InputDataError, match=r"layer\(s\) raw_counts, spliced"):
            h5.find_counts("scaled")
