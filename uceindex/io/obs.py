"""Typing obs columns for the store: every column kept, as string, bool, int64 or float64.

Rules (docs/store.md):
- categoricals -> string (their categories as text), whatever the categories' type;
- bools -> bool, integers -> int64, floats -> float64; NaN and missing values -> null;
- strings -> string; an object column of mixed Python types (or dates, bytes...) -> string,
  each value as `str(value)`, with a warning;
- column names: `.` and a backtick become `_` (Lance refuses dots in column names and
  cannot write one holding a backtick) and a name taken by a core column (cell_id,
  dataset_id, ...) gets the prefix `obs_`; renames are recorded. Any other name (spaces,
  quotes, SQL keywords) is kept: every filter quotes it (`store.sql_name`).
- across data sets the cells table holds the union of columns; a type clash is settled as
  float64 for int64 vs float64, and as string (with a warning) for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

STRING, BOOL, INT, FLOAT = pa.string(), pa.bool_(), pa.int64(), pa.float64()
OBS_TYPES = (STRING, BOOL, INT, FLOAT)
RENAMED_PREFIX = "obs_"  # for obs columns named like a core column
ORGANISMS = {"Homo sapiens": "human", "Mus musculus": "mouse"}  # CELLxGENE obs["organism"]


def type_of_series(series: pd.Series) -> tuple[pa.DataType, str | None]:
    """The store type of a pandas column and, when the values had to be turned into text,
    why (a warning for the user)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return STRING, None
    if pd.api.types.is_bool_dtype(dtype):
        return BOOL, None
    if pd.api.types.is_integer_dtype(dtype):
        return INT, None
    if pd.api.types.is_float_dtype(dtype):
        return FLOAT, None
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return STRING, None
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred in ("string", "empty"):
        return STRING, None
    if inferred == "boolean":
        return BOOL, None
    if inferred == "integer":
        return INT, None
    if inferred in ("floating", "mixed-integer-float", "decimal"):
        return FLOAT, None
    return STRING, f"mixed Python types ({inferred}) stored as text"


def _text(series: pd.Series) -> pa.Array:
    """Any column as strings, missing values as null."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = series.cat.categories
        labels = np.asarray([str(c) for c in cats], dtype=object)
        codes = series.cat.codes.to_numpy()
        out = np.where(codes >= 0, labels[np.maximum(codes, 0)] if len(labels) else None, None)
        return pa.array(out, type=STRING)
    values = series.to_numpy(dtype=object)
    missing = pd.isna(series).to_numpy()
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return pc.cast(pa.array(series, from_pandas=True), STRING)
    return pa.array(
        [None if m else (v if isinstance(v, str) else str(v)) for v, m in zip(values, missing)],
        type=STRING,
    )


def to_arrow(series: pd.Series, kind: pa.DataType) -> pa.Array:
    """`series` as an arrow array of `kind` (one of OBS_TYPES); NaN -> null."""
    if kind == STRING:
        return _text(series)
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(object)
    if pd.api.types.is_object_dtype(series.dtype):
        series = series.where(~pd.isna(series), None)
    array = pa.array(series, from_pandas=True)
    return array if array.type == kind else pc.cast(array, kind)


def merge_types(old: pa.DataType, new: pa.DataType) -> pa.DataType:
    """The type a column takes when data sets disagree: int64+float64 -> float64, else string."""
    if old == new:
        return old
    if {old, new} == {INT, FLOAT}:
        return FLOAT
    return STRING


def clean_name(name: object, reserved: set[str]) -> str:
    text = str(name).strip().replace(".", "_").replace("`", "_") or "unnamed"
    return RENAMED_PREFIX + text if text in reserved else text


@dataclass
class ObsColumns:
    """The obs columns of one data set: source name -> store name and store type."""

    names: dict[str, str] = field(default_factory=dict)  # source -> store
    types: dict[str, pa.DataType] = field(default_factory=dict)  # store name -> type
    warnings: list[str] = field(default_factory=list)

    @property
    def renamed(self) -> dict[str, str]:
        return {s: d for s, d in self.names.items() if s != d}

    def add(self, source: object, kind: pa.DataType, note: str | None, reserved: set[str]):
        name = clean_name(source, reserved)
        base, i = name, 2
        while name in self.types:  # two sources cleaned to one name
            name, i = f"{base}_{i}", i + 1
        self.names[str(source)] = name
        self.types[name] = kind
        if name != str(source):
            self.warnings.append(f"obs column {source!r} stored as {name!r}")
        if note:
            self.warnings.append(f"obs column {source!r}: {note}")


def obs_columns(obs: pd.DataFrame, reserved: set[str]) -> ObsColumns:
    """Types and store names for an in-memory obs DataFrame."""
    cols = ObsColumns()
    for column in obs.columns:
        kind, note = type_of_series(obs[column])
        cols.add(column, kind, note, reserved)
    return cols


def chunk_table(frame: pd.DataFrame, cols: ObsColumns, types: dict[str, pa.DataType]) -> dict:
    """A chunk of obs (source column names) -> {store name: arrow array}, each cast to the
    type the store holds for it (`types`, after merging with the existing table)."""
    out = {}
    for source, name in cols.names.items():
        array = to_arrow(frame[source], cols.types[name])
        target = types.get(name, cols.types[name])
        out[name] = array if array.type == target else pc.cast(array, target)
    return out


def species_of(uce: dict | None, organism) -> str | None:
    """The species of a file's cells when it says: `uceindex embed`'s uns["uce"]["species"],
    else one CELLxGENE obs["organism"] for every cell (`organism`: those values, or None)."""
    if uce and uce.get("species"):
        return str(uce["species"])
    if organism is not None:
        values = pd.Series(organism).dropna().unique()
        if len(values) == 1 and str(values[0]) in ORGANISMS:
            return ORGANISMS[str(values[0])]
    return None
