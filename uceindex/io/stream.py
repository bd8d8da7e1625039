"""Reading an .h5ad in row chunks, so memory does not grow with cells.

anndata's backed mode keeps only X on disk (layers and obs are loaded whole), so the file is
opened with h5py and anndata's reader is asked for one row range at a time: CSR matrices via
`anndata.io.sparse_dataset`, obs columns via `anndata.experimental.read_dispatched` with their
row-aligned datasets sliced (anndata's lazy reader, `read_elem_lazy`, needs xarray and dask).
Dense arrays are h5py slices; a CSC matrix cannot be read by rows, so a small one is read
whole. Against the hand-written decoder this replaced, the reads cost at most 2% more of an
ingest's time (BENCHMARKS.md, Ingest).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import anndata
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.experimental import read_dispatched

from uceindex.errors import InputDataError
from uceindex.io.counts import (
    CountsSource,
    check_values,
    integer_layers,
    no_counts,
    sample_values,
)
from uceindex.io.obs import BOOL, FLOAT, INT, STRING, ObsColumns, type_of_series

HASH_BLOCK = 16 << 20  # bytes read at a time when hashing a file
NAMES_BLOCK = 1 << 18  # obs names read at a time when checking that they are unique
CSC_IN_MEMORY = 50_000_000  # stored values up to which a CSC matrix is read whole (else refused)


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (the identity of an ingested file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _encoding(node) -> str:
    value = node.attrs.get("encoding-type", "")
    return value.decode() if isinstance(value, bytes) else str(value)


class RowMatrix:
    """A cells x genes matrix in an HDF5 file, read by rows: `m[a:b]` or `m[sorted_rows]`."""

    def __init__(self, node, name: str):
        self.node, self.name = node, name
        kind = _encoding(node)
        if isinstance(node, h5py.Dataset):
            self.kind, self.shape = "dense", tuple(node.shape)
        elif kind in ("csr_matrix", "csc_matrix"):
            self.kind = kind[:3]
            # a CSR indptr is as long as the cells: read the slice a range needs, not all of it
            self._sparse = anndata.io.sparse_dataset(node, should_cache_indptr=self.kind == "csc")
            self.shape = tuple(self._sparse.shape)
            if self.kind == "csc":
                nnz = node["data"].shape[0]
                if nnz > CSC_IN_MEMORY:
                    raise InputDataError(
                        f"{name} is stored column-wise (CSC) with {nnz:,} values, which cannot "
                        "be read by rows: rewrite it as CSR (adata.X = adata.X.tocsr())"
                    )
                self._sparse = self._sparse.to_memory().tocsr()
        else:
            raise InputDataError(f"{name} has an encoding uceindex cannot read ({kind or 'none'})")
        if len(self.shape) != 2:
            raise InputDataError(f"{name} is not a 2-D matrix (shape {self.shape})")

    def rows(self, start: int, stop: int):
        """Rows start..stop: scipy CSR for sparse matrices, ndarray for dense ones."""
        if self.kind == "dense":
            return self.node[start:stop]
        return self._sparse[start:stop]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("row slices must be contiguous")
            return self.rows(start, stop)
        picks = np.asarray(key, dtype=np.int64)
        if not len(picks):
            return sp.csr_matrix((0, self.shape[1]))
        lo, hi = int(picks.min()), int(picks.max()) + 1
        if hi - lo <= 4 * len(picks):  # close together: one read of the span
            return self.rows(lo, hi)[picks - lo]
        if self.kind == "dense":
            return self.node[np.unique(picks)]
        return self._sparse[picks]  # one read a row


@dataclass
class _Column:
    source: str
    node: object
    whole: pd.Series | None = None  # an encoding that has no row ranges, read once


class H5AD:
    """An .h5ad opened for chunked reading. Close it (or use `with`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputDataError(f"no such file: {self.path}")
        try:
            self.file = h5py.File(self.path, "r")
            self._obs = self.file["obs"]
            self.n_obs = self._n_obs()
            self.var = self._read_frame(self.file["var"])
        except InputDataError:
            self.close()
            raise
        except Exception as exc:  # h5py raises many types for a truncated or foreign file
            self.close()
            raise InputDataError(
                f"cannot read {self.path} as .h5ad ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else ''}): is it complete and written by anndata?"
            ) from None
        self._columns: list[_Column] | None = None
        self._categories: dict[str, object] = {}  # categoricals' categories, read once each

    def close(self) -> None:
        file = getattr(self, "file", None)
        if file is not None:
            file.close()
            self.file = None

    def __enter__(self) -> H5AD:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- structure ----------------------------------------------------------------------------

    def _n_obs(self) -> int:
        if _encoding(self._obs) != "dataframe":
            raise InputDataError(
                f"{self.path.name} was written by an anndata older than 0.7 (obs has no "
                "encoding): read and write it again with a recent anndata"
            )
        return int(self._obs[self._index_key()].shape[0])

    def _index_key(self) -> str:
        key = self._obs.attrs["_index"]
        return key.decode() if isinstance(key, bytes) else str(key)

    def _read_frame(self, node) -> pd.DataFrame:
        return anndata.io.read_elem(node)

    def _obs_rows(self, node, start: int, stop: int):
        """Rows start..stop of an obs element, decoded by anndata: the datasets as long as the
        cells (the column itself, codes, values, mask) are sliced, categories read whole."""

        def read(read_elem, name: str, elem, *, iospec):
            if not isinstance(elem, h5py.Dataset):
                return read_elem(elem)
            if name.rsplit("/", 1)[-1] == "categories" and _encoding(elem.parent) == "categorical":
                if name not in self._categories:
                    self._categories[name] = read_elem(elem)
                return self._categories[name]
            return (elem.asstr() if iospec.encoding_type == "string-array" else elem)[start:stop]

        return read_dispatched(node, read)

    def obs_names(self, start: int, stop: int) -> np.ndarray:
        names = self._obs_rows(self._obs[self._index_key()], start, stop)
        return np.asarray(names, dtype=object).astype(str).astype(object)

    def duplicate_obs_names(self, block: int = NAMES_BLOCK) -> list[str]:
        """A few obs names that occur more than once (empty when they are unique).

        Hashes the names block by block (8 bytes a cell), then looks only at colliding ones."""
        hashes = np.concatenate(
            [
                pd.util.hash_array(self.obs_names(a, min(a + block, self.n_obs)))
                for a in range(0, self.n_obs, block)
            ]
            or [np.zeros(0, np.uint64)]
        )
        order = np.sort(hashes)
        repeated = np.unique(order[1:][order[1:] == order[:-1]])
        if not len(repeated):
            return []
        found: dict[str, int] = {}
        for a in range(0, self.n_obs, block):
            names = self.obs_names(a, min(a + block, self.n_obs))
            for name in names[np.isin(pd.util.hash_array(names), repeated)]:
                found[name] = found.get(name, 0) + 1
        return [n for n, c in found.items() if c > 1][:5]

    # -- matrices -----------------------------------------------------------------------------

    def matrix(self, where: str) -> RowMatrix | None:
        """X, layers/<name> or raw/X as a RowMatrix (None when absent)."""
        return RowMatrix(self.file[where], where) if where in self.file else None

    def layers(self) -> list[str]:
        return list(self.file["layers"].keys()) if "layers" in self.file else []

    def find_counts(self, layer: str | None = None) -> CountsSource:
        """Like io.counts.find_counts, on the file: the first of X, layers['counts'], raw.X
        whose sampled values are whole numbers."""
        candidates = []
        if layer is not None:
            if layer not in self.layers():
                raise InputDataError(
                    f"there is no layers[{layer!r}]; the file has layers {self.layers() or 'none'}"
                )
            candidates.append((f"layers[{layer!r}]", f"layers/{layer}", self.var))
        else:
            candidates.append(("X", "X", self.var))
            if "counts" in self.layers():
                candidates.append(("layers['counts']", "layers/counts", self.var))
            if "raw/X" in self.file:
                candidates.append(("raw.X", "raw/X", None))
        problems = []
        for name, where, var in candidates:
            matrix = self.matrix(where)
            if matrix is None:
                problems.append(f"{name} is absent")
                continue
            matrix.name = name
            problem = check_values(sample_values(matrix), name)
            if problem is None:
                if var is None:
                    var = self._read_frame(self.file["raw/var"])
                if len(var) != matrix.shape[1]:
                    raise InputDataError(
                        f"{name} has {matrix.shape[1]} columns but its var has {len(var)} rows"
                    )
                return CountsSource(name, matrix, var)
            problems.append(problem)
        others = [name for name in self.layers() if name != (layer or "counts")]
        raise no_counts(
            problems, layer, integer_layers(others, lambda n: self.matrix(f"layers/{n}"))
        )

    def obsm(self, key: str) -> RowMatrix:
        keys = list(self.file["obsm"].keys()) if "obsm" in self.file else []
        if key not in keys:
            raise InputDataError(
                f"there is no obsm[{key!r}] in {self.path.name}; it has {', '.join(keys) or 'no obsm'}"
            )
        node = self.file["obsm"][key]
        if not isinstance(node, h5py.Dataset) or node.ndim != 2 or node.dtype.kind not in "fiu":
            raise InputDataError(
                f"obsm[{key!r}] is not a dense numeric matrix ({_encoding(node) or node}): "
                "pass the key of a cells x dimensions embedding"
            )
        return RowMatrix(node, f"obsm[{key!r}]")

    def uns_dict(self, key: str) -> dict | None:
        """A small uns entry (e.g. the provenance `uceindex embed` writes in uns['uce'])."""
        if "uns" not in self.file or key not in self.file["uns"]:
            return None
        try:
            value = anndata.io.read_elem(self.file["uns"][key])
        except Exception:  # an entry anndata cannot read is no provenance
            return None
        return value if isinstance(value, dict) else None

    # -- obs ----------------------------------------------------------------------------------

    def obs_columns(self, reserved: set[str]) -> ObsColumns:
        """Store names and types of the obs columns, from the file's encodings (no full read,
        except for encodings that only anndata can read)."""
        cols = ObsColumns()
        self._columns = []
        order = self._obs.attrs.get("column-order", [])
        for source in [c.decode() if isinstance(c, bytes) else str(c) for c in order]:
            node = self._obs[source]
            kind = _encoding(node)
            if kind == "categorical":
                cols.add(source, STRING, None, reserved)
            elif kind == "array" and isinstance(node, h5py.Dataset) and node.dtype.kind in "biuf":
                store_type = {"b": BOOL, "i": INT, "u": INT, "f": FLOAT}[node.dtype.kind]
                cols.add(source, store_type, None, reserved)
            elif kind == "string-array":
                cols.add(source, STRING, None, reserved)
            elif kind in ("nullable-integer", "nullable-boolean", "nullable-string-array"):
                store_type = {"nullable-integer": INT, "nullable-boolean": BOOL}.get(kind, STRING)
                cols.add(source, store_type, None, reserved)
            else:  # anything else: read whole (rare), typed like an in-memory column
                whole = pd.Series(anndata.io.read_elem(node))
                store_type, note = type_of_series(whole)
                cols.add(source, store_type, note, reserved)
                self._columns.append(_Column(source, node, whole))
                continue
            self._columns.append(_Column(source, node))
        return cols

    def obs_chunk(self, start: int, stop: int) -> pd.DataFrame:
        """obs rows start..stop with the source column names (call obs_columns first)."""
        if self._columns is None:
            raise RuntimeError("call obs_columns() before obs_chunk()")
        data = {
            c.source: (
                self._obs_rows(c.node, start, stop)
                if c.whole is None
                else c.whole.iloc[start:stop].to_numpy()
            )
            for c in self._columns
        }
        return pd.DataFrame(data, index=pd.RangeIndex(start, stop))
