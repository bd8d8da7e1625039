"""obs columns typed for the store, from pandas and straight from .h5ad files in chunks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from uceindex.io.obs import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    chunk_table,
    clean_name,
    merge_types,
    obs_columns,
    to_arrow,
    type_of_series,
)
from uceindex.io.stream import H5AD
from uceindex.store import schema as S

RESERVED = set(S.core_names(S.CELLS))  # what ingest reserves: the core columns of cells


def test_types_of_pandas_columns():
    cases = {
        "cat": (pd.Categorical(["a", None, "b"]), STRING),
        "int_cat": (pd.Categorical([1, 2, 1]), STRING),
        "bool": (np.array([True, False, True]), BOOL),
        "int": (np.array([1, 2, 3], np.int32), INT),
        "uint": (np.array([1, 2, 3], np.uint16), INT),
        "float": (np.array([1.5, np.nan, 2.0], np.float32), FLOAT),
        "nullable_int": (pd.array([1, None, 3], dtype="Int64"), INT),
        "nullable_bool": (pd.array([True, None, False], dtype="boolean"), BOOL),
        "str": (np.array(["x", "y", None], dtype=object), STRING),
        "pd_string": (pd.array(["x", None, "z"], dtype="string"), STRING),
        "obj_ints": (np.array([1, None, 3], dtype=object), INT),
    }
    for name, (values, kind) in cases.items():
        got, note = type_of_series(pd.Series(values))
        assert got == kind, name
        assert note is None, name


def test_mixed_python_types_become_text_with_a_warning():
    series = pd.Series([1, "a", 2.5, None, True], dtype=object)
    kind, note = type_of_series(series)
    assert kind == STRING and "mixed" in note
    assert to_arrow(series, kind).to_pylist() == ["1", "a", "2.5", None, "True"]
    cols = obs_columns(pd.DataFrame({"m": series}), RESERVED)
    assert any("mixed" in w for w in cols.warnings)


def test_nan_and_missing_become_null():
    assert to_arrow(pd.Series([1.0, np.nan]), FLOAT).to_pylist() == [1.0, None]
    assert to_arrow(pd.Series(pd.Categorical(["a", None])), STRING).to_pylist() == ["a", None]
    assert to_arrow(pd.Series(pd.array([1, None], dtype="Int64")), INT).to_pylist() == [1, None]
    assert to_arrow(pd.Series([np.nan, "x"], dtype=object), STRING).to_pylist() == [None, "x"]


def test_names_are_cleaned_and_recorded():
    assert clean_name("percent.mito", RESERVED) == "percent_mito"
    assert clean_name("we`ird", RESERVED) == "we_ird"  # Lance cannot write such a column
    assert clean_name("species", RESERVED) == "obs_species"
    cols = obs_columns(pd.DataFrame({"a.b": [1], "a_b": [2], "cell_id": ["x"]}), RESERVED)
    assert list(cols.names.values()) == ["a_b", "a_b_2", "obs_cell_id"]
    assert cols.renamed == {"a.b": "a_b", "a_b": "a_b_2", "cell_id": "obs_cell_id"}


def test_type_clash_rules():
    assert merge_types(INT, INT) == INT
    assert merge_types(INT, FLOAT) == FLOAT
    assert merge_types(FLOAT, INT) == FLOAT
    assert merge_types(BOOL, INT) == STRING
    assert merge_types(STRING, FLOAT) == STRING


def test_chunk_table_casts_to_the_store_type():
    frame = pd.DataFrame({"n": [1, 2]})
    cols = obs_columns(frame, RESERVED)
    out = chunk_table(frame, cols, {"n": pa.string()})
    assert out["n"].to_pylist() == ["1", "2"]


def test_h5ad_obs_read_in_chunks_matches_anndata(tmp_path):
    n = 10
    obs = pd.DataFrame(
        {
            "cat": pd.Categorical(["a", "b", None, "a", "c"] * 2),
            "num_cat": pd.Categorical([1, 2, 3, 1, 2] * 2),
            "b": np.arange(n) % 2 == 0,
            "i": np.arange(n, dtype=np.int16),
            "f": np.where(np.arange(n) == 3, np.nan, np.arange(n) / 2),
            "nint": pd.array([1, None] * 5, dtype="Int64"),
            "nbool": pd.array([True, None] * 5, dtype="boolean"),
            "s": np.array([f"s{i}" for i in range(n)], dtype=object),
            "percent.mito": np.linspace(0, 1, n),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    path = tmp_path / "types.h5ad"
    ad.AnnData(X=np.zeros((n, 2), np.float32), obs=obs).write_h5ad(path)
    with H5AD(path) as h5:
        cols = h5.obs_columns(RESERVED)
        assert cols.types == {
            "cat": STRING,
            "num_cat": STRING,
            "b": BOOL,
            "i": INT,
            "f": FLOAT,
            "nint": INT,
            "nbool": BOOL,
            "s": STRING,
            "percent_mito": FLOAT,
        }
        got = {name: [] for name in cols.types}
        names = []
        for start in range(0, n, 4):
            stop = min(start + 4, n)
            names += list(h5.obs_names(start, stop))
            for name, array in chunk_table(h5.obs_chunk(start, stop), cols, {}).items():
                got[name] += array.to_pylist()
    assert names == list(obs.index)
    assert got["cat"] == ["a", "b", None, "a", "c"] * 2
    assert got["num_cat"] == ["1", "2", "3", "1", "2"] * 2
    assert got["f"][3] is None and got["f"][4] == 2.0
    assert got["nint"] == [1, None] * 5
    assert got["nbool"] == [True, None] * 5
    assert got["i"] == list(range(n))
    assert got["percent_mito"] == pytest.approx(list(np.linspace(0, 1, n)))


def test_duplicate_obs_names_are_found(tmp_path):
    path = tmp_path / "dup.h5ad"
    a = ad.AnnData(X=np.zeros((5, 2), np.float32))
    a.obs_names = ["a", "b", "a", "c", "b"]
    a.write_h5ad(path)
    with H5AD(path) as h5:
        assert sorted(h5.duplicate_obs_names(block=2)) == ["a", "b"]
