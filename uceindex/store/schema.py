"""The store's table schemas, read from the JSON files in `schemas/` (declared once, as data).

`cells` has a fixed core (cell_id, dataset_id, species, ingest_chunk, embedding) and grows
one column per obs column seen; `datasets` and `rejects` are fixed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pyarrow as pa

CELLS, DATASETS, REJECTS = "cells", "datasets", "rejects"
TABLES = (CELLS, DATASETS, REJECTS)
EMBEDDING = "embedding"
CHUNK = "ingest_chunk"
META_MODEL_NAME = "uceindex.model_name"
META_FINGERPRINT = "uceindex.model_fingerprint"
META_DIM = "uceindex.embedding_dim"
META_MODEL_DIR = "uceindex.model_dir"  # where the model that made the store was, when known

_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def schemas_dir() -> Path:
    """The JSON schemas, shipped inside the package (`schemas/` at the repository root is a
    link to them, so they are found the same way from a checkout and from a wheel)."""
    return Path(__file__).resolve().parents[1] / "schemas"


@cache
def spec(table: str) -> dict:
    """The parsed JSON description of a table (fields with name, type, nullable, doc)."""
    return json.loads((schemas_dir() / f"{table}.json").read_text())


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def _field(entry: dict, dim: int | None) -> pa.Field:
    if entry["type"] == "embedding":
        if dim is None:
            raise ValueError("the embedding dimension is needed for the cells schema")
        kind = embedding_type(dim)
    else:
        kind = _TYPES[entry["type"]]
    return pa.field(entry["name"], kind, nullable=entry["nullable"])


def schema(table: str, dim: int | None = None, metadata: dict | None = None) -> pa.Schema:
    """The core arrow schema of `table`; `dim` is required for cells."""
    fields = [_field(e, dim) for e in spec(table)["fields"]]
    return pa.schema(fields, metadata=metadata)


def core_names(table: str) -> list[str]:
    return [e["name"] for e in spec(table)["fields"]]
