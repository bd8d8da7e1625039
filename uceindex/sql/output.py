"""Result rows as files: csv, json or parquet, written batch by batch.

A result never has to fit in memory, and a path is written whole (`uceindex.atomic`): an
error half-way leaves no file behind. `uceindex sql --format/--out` writes through here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import pyarrow as pa

from uceindex.atomic import written_whole
from uceindex.errors import QueryError

FORMATS = ("csv", "json", "parquet")  # file formats of `write_batches`
SUFFIXES = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def format_of(path: str | os.PathLike) -> str | None:
    """The format a file name asks for (`counts.csv` -> csv), None for another suffix."""
    return SUFFIXES.get(Path(path).suffix.lower())


def write_batches(batches, schema: pa.Schema, out, fmt: str) -> int:
    """Write record batches to `out` (a path or a binary file) as csv, json (an array of
    objects) or parquet; returns the rows written. CSV and JSON write vectors as JSON lists."""
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if isinstance(out, (str, os.PathLike)):
        with written_whole(out) as scratch, open(scratch, "wb") as fh:
            return write_batches(batches, schema, fh, fmt)
    return {"csv": _write_csv, "json": _write_json, "parquet": _write_parquet}[fmt](
        batches, schema, out
    )


def _write_parquet(batches, schema: pa.Schema, out: IO[bytes]) -> int:
    import pyarrow.parquet as pq

    rows = 0
    with pq.ParquetWriter(out, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _write_csv(batches, schema: pa.Schema, out: IO[bytes]) -> int:
    import pyarrow.csv as pcsv

    rows = 0
    flat = _flat_schema(schema)
    with pcsv.CSVWriter(out, flat) as writer:
        for batch in batches:
            writer.write_batch(_flatten(batch, flat))
            rows += batch.num_rows
    return rows


def _write_json(batches, schema: pa.Schema, out: IO[bytes]) -> int:
    rows = 0
    out.write(b"[")
    for batch in batches:
        for record in batch.to_pylist():
            out.write((",\n" if rows else "\n").encode())
            out.write(json.dumps(record, default=str).encode())
            rows += 1
    out.write(b"\n]\n" if rows else b"]\n")
    return rows


def _flat_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_nested(f.type) else f for f in schema]
    )


def _flatten(batch: pa.RecordBatch, flat: pa.Schema) -> pa.RecordBatch:
    """Nested columns (vectors, lists, structs) as JSON text, for CSV."""
    columns = []
    for column in batch.columns:
        if pa.types.is_nested(column.type):
            column = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
                pa.string(),
            )
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=flat)
