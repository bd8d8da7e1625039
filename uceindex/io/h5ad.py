"""Opening .h5ad files with one clear error for a missing, truncated or foreign file; writing
one whole."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from uceindex.atomic import written_whole
from uceindex.errors import InputDataError


def read_h5ad(path: str | os.PathLike, backed: bool = False):
    """AnnData from `path`; backed=True leaves X on disk (read it in row chunks)."""
    import anndata

    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"no such file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return anndata.read_h5ad(path, backed="r" if backed else None)
    except Exception as exc:  # h5py/anndata raise many types for a bad file
        raise InputDataError(
            f"cannot read {path} as .h5ad ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}): "
            "is it complete and written by anndata?"
        ) from None


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write `adata` to `path` whole: an error or a kill half-way leaves no half-written file."""
    path = Path(path)
    with written_whole(path) as scratch:
        adata.write_h5ad(scratch)
    return path
