"""Read-only SQL over a store: DuckDB views on the store's Lance tables.

`SqlSession(store)` registers the Lance datasets of `cells`, `datasets` and `rejects` with an
in-memory DuckDB connection. DuckDB pushes projections and filters into the Lance scan, so a
count over metadata never reads the embedding column. The session sees the snapshot of the
store it was opened on.

The sandbox has two layers:
1. Only one SELECT or EXPLAIN statement runs at a time (DESCRIBE, SHOW, SUMMARIZE, FROM-first
   and PIVOT ... IN (...) parse as SELECT); anything else (CREATE, INSERT, COPY, ATTACH,
   INSTALL, LOAD, PRAGMA, SET, CALL...) is refused before it reaches DuckDB.
2. After the views are registered, DuckDB's own settings close the rest: no file system or
   network access (`enable_external_access=false`, which stops read_csv('/etc/passwd'),
   COPY TO and INSTALL), no extension auto-install or auto-load, no Python replacement scans,
   no spilling to disk, and `lock_configuration=true` so no setting can be changed back.
A timer thread interrupts a statement that runs past `timeout_s`; results stop at `max_rows`.

`similar(cell_id, k)` and `similar_to_vector(vec, k)` are table macros over Python functions
that call `uceindex.search` (the store's vector index when it has one, else an exact scan):
DuckDB's own brute force over Lance reads every vector through Arrow (6.4 s per query at 1M
cells on 2 cores, BENCHMARKS.md). `similar` is a reserved word in SQL (`x SIMILAR TO pattern`), so the macro is named
`similar_cells`, and `similar(` in a statement is rewritten to it lexically.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa

from uceindex.errors import QueryError

TABLES = ("cells", "datasets", "rejects")  # views, in this order, for the tables the store has
MEMORY_LIMIT = "1GB"  # DuckDB's buffer memory per session (results handed to Python are extra)
BATCH_ROWS = 8192  # rows per Arrow batch pulled from DuckDB
ALLOWED = {"SELECT", "EXPLAIN"}  # statement types that may run (DuckDB's StatementType names)
FORMATS = ("csv", "json", "parquet")  # file formats of `write_batches`
SIMILAR_MACRO = "similar_cells"  # what `similar(` is rewritten to
MAX_K = 10_000  # neighbours one similar() call may ask for

_SETTINGS = {  # applied at connect, before any view exists
    "memory_limit": MEMORY_LIMIT,
    "temp_directory": "",  # never spill to disk: an out-of-memory error instead
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # no scans of the caller's Python variables
}


@dataclass
class SqlResult:
    """The rows of one statement. `truncated`: rows past the limit were left out;
    `more_rows`: how many, when the caller asked for them to be counted (else None)."""

    table: pa.Table
    truncated: bool = False
    more_rows: int | None = None
    elapsed_s: float = 0.0

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def rows(self) -> list[tuple]:
        """Rows as tuples of Python values (lists for vectors)."""
        return list(zip(*(col.to_pylist() for col in self.table.columns)))


@dataclass
class Exported:
    """What `SqlSession.export` wrote: rows, and whether the limit cut the result short."""

    rows: int
    truncated: bool
    elapsed_s: float


class _EngineError(Exception):
    """An error of DuckDB that surfaced while its rows were being streamed."""


@dataclass
class _Stop:
    """Set when a statement is interrupted: by whom, or after which time limit."""

    why: str | None = None


@dataclass
class _Run:
    """A statement being streamed: iterate for its batches, up to `cap` rows (the rest is
    left unread). The counters fill in as it goes."""

    reader: pa.RecordBatchReader
    cap: int | None
    statement: str
    rows: int = 0
    truncated: bool = False

    @property
    def schema(self) -> pa.Schema:
        return self.reader.schema

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        batches = iter(self.reader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:  # DuckDB's error, via Arrow's reader
                raise _EngineError(str(exc)) from None
            if self.cap is None or self.rows + batch.num_rows <= self.cap:
                self.rows += batch.num_rows
                yield batch
                continue
            keep = self.cap - self.rows
            if keep > 0:
                self.rows += keep
                yield batch.slice(0, keep)
            self.truncated = True
            return


class SqlSession:
    """A read-only DuckDB session over one store. Statements run one at a time (threads
    wait for each other); `interrupt()` may be called from any thread.

    store: a `Store`, or its URI (opened here and closed with the session).
    timeout_s: a statement running longer is interrupted (QueryError); None: no limit.
    max_rows: results stop there (`truncated=True`); None: no limit.
    Use `with SqlSession(...) as sql:` or call `close()` (idempotent)."""

    def __init__(
        self,
        store=None,
        *,
        timeout_s: float | None = None,
        max_rows: int | None = None,
        memory_limit: str = MEMORY_LIMIT,
        threads: int | None = None,
    ):
        import duckdb

        from uceindex.store.store import Store

        self._owned = not isinstance(store, Store)
        self._store = Store.open(store) if self._owned else store
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        self._closed = False
        self._stop = _Stop()  # why the running statement was interrupted, if it was
        settings = {**_SETTINGS, "memory_limit": memory_limit}
        if threads:
            settings["threads"] = threads
        self._con = duckdb.connect(":memory:", config=settings)
        self._datasets = {}  # view name -> the Lance dataset it scans (pinned version)
        for name in TABLES:
            table = getattr(self._store, "datasets_table" if name == "datasets" else name)
            if table is not None:
                self._datasets[name] = table.to_lance()
                self._con.register(name, self._datasets[name])
        self._tables = list(self._datasets)
        self.dim = self._embedding_dim()
        if self.dim:
            for name, (fn, kind) in _search_functions(self._store.cells, self._stop).items():
                self._con.create_function(name, fn, [kind, "BIGINT"], NEIGHBOURS)
            self._con.execute(MACROS)
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (and the store when the session opened it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._con.close()
        if self._owned:
            self._store.close()

    def __enter__(self) -> SqlSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise QueryError("this SQL session is closed: open a new one")

    def interrupt(self) -> None:
        """Stop the running statement (from another thread: Ctrl-C in a shell, a server)."""
        self._stop.why = "by the user"
        self._con.interrupt()

    # -- catalogue ----------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """The views this store has (`cells` appears with the first data set)."""
        self._check_open()
        return list(self._tables)

    def schema(self, table: str) -> list[tuple[str, str]]:
        """(column, DuckDB type) of a view; vectors show as FLOAT[D]."""
        self._check_open()
        if table not in self._tables:
            raise QueryError(f"no table {table!r}: the tables are {', '.join(self._tables)}")
        with self._lock:
            return [(r[0], r[1]) for r in self._con.sql(f'DESCRIBE "{table}"').fetchall()]

    def _embedding_dim(self) -> int | None:
        if "cells" not in self._tables:
            return None
        kind = self._store.cells.schema.field("embedding").type
        return getattr(kind, "list_size", None)

    # -- statements ---------------------------------------------------------------------------

    def split(self, text: str) -> list[str]:
        """The statements of a script, each with its text (for stdin and the shell)."""
        self._check_open()
        try:
            with self._lock:
                statements = self._con.extract_statements(_rewrite(text))
        except Exception as exc:
            raise QueryError(_one_line(exc)) from None
        return [s.query.strip() for s in statements]

    def execute(self, sql: str, *, limit: int | None = None, count_rest: bool = False) -> SqlResult:
        """Run one read-only statement and return its rows as an Arrow table.

        limit: at most this many rows (and never more than `max_rows`).
        count_rest: when rows were left out, count them (`more_rows`) with a second statement,
        `SELECT count(*) FROM (<sql>)`: DuckDB then reads only the columns the count needs."""
        started = time.perf_counter()
        with self._run(sql, limit) as run:
            table = pa.Table.from_batches(list(run), schema=run.schema)
        more = None
        if count_rest:
            more = 0
            if run.truncated:  # newlines: the statement may end in a -- comment
                count = f"SELECT count(*) FROM (\n{run.statement}\n) AS rows_counted"
                try:
                    with self._run(count, None) as counted:
                        more = next(iter(counted)).column(0)[0].as_py() - table.num_rows
                except QueryError:  # a statement that cannot be a subquery: not counted
                    more = None
        return SqlResult(table, run.truncated, more, time.perf_counter() - started)

    def export(self, sql: str, out, fmt: str, *, limit: int | None = None) -> Exported:
        """Stream one statement's rows to `out` (a path or a binary file) as csv, json or
        parquet, batch by batch: the result never has to fit in memory."""
        if fmt not in FORMATS:
            raise QueryError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        started = time.perf_counter()
        with self._run(sql, limit) as run:
            write_batches(run, run.schema, out, fmt)
        return Exported(run.rows, run.truncated, time.perf_counter() - started)

    @contextmanager
    def _run(self, sql: str, limit: int | None) -> Iterator[_Run]:
        self._check_open()
        cap = min((n for n in (limit, self.max_rows) if n is not None), default=None)
        with self._lock, self._deadline():
            statement = self._check(sql)
            reader = None
            try:
                reader = self._con.sql(statement).to_arrow_reader(BATCH_ROWS)
                yield _Run(reader, cap, statement)
            except Exception as exc:
                if not (_is_duckdb_error(exc) or isinstance(exc, _EngineError)):
                    raise
                if self._stop.why:
                    raise QueryError(f"the statement was stopped {self._stop.why}") from None
                if "Out of Memory Error" in str(exc):
                    raise QueryError(self._out_of_memory()) from None
                raise QueryError(_one_line(exc)) from None
            finally:
                if reader is not None:
                    reader.close()  # frees the connection even when not drained

    def _out_of_memory(self) -> str:
        """DuckDB's advice (SET memory_limit, a temp directory) does not apply here."""
        vector = f" (each embedding is {self.dim * 4:,} bytes)" if self.dim else ""
        return (
            f"Out of Memory Error: the statement needs more than this session's "
            f"{self.memory_limit}: read fewer columns{vector}, filter first, or put the "
            "LIMIT in the statement (ORDER BY ... LIMIT n keeps only the top rows)"
        )

    def _check(self, sql: str) -> str:
        """The statement to run, or QueryError: exactly one, SELECT or EXPLAIN."""
        try:
            statements = self._con.extract_statements(_rewrite(sql))
        except Exception as exc:
            raise QueryError(_one_line(exc)) from None
        if len(statements) != 1:
            raise QueryError(
                f"one statement at a time, got {len(statements)}: "
                "run them one by one (or pipe a script to `uceindex sql` on stdin)"
            )
        kind = statements[0].type.name
        if kind not in ALLOWED:
            raise QueryError(
                f"{kind} statements are not allowed: the SQL session is read-only "
                "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW and SUMMARIZE run)"
            )
        return statements[0].query.strip().rstrip(";")

    @contextmanager
    def _deadline(self) -> Iterator[None]:
        """Interrupt the connection from a timer thread once `timeout_s` has passed."""
        self._stop.why = None
        if not self.timeout_s:
            yield
            return

        def fire() -> None:
            self._stop.why = f"after the {self.timeout_s:g} s time limit"
            self._con.interrupt()

        timer = threading.Timer(self.timeout_s, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()  # a firing timer finishes before the next statement starts


# -- SQL text ---------------------------------------------------------------------------------


def _rewrite(sql: str) -> str:
    """`similar(` -> `similar_cells(`, outside strings, comments and quoted names."""
    import duckdb

    try:
        tokens = duckdb.tokenize(sql)
    except Exception:
        return sql
    out, last = [], 0
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        word = sql[start:end].rstrip()
        if kind.name == "keyword" and word.lower() == "similar":
            rest = sql[start + len(word) :].lstrip()
            if rest.startswith("("):
                out.append(sql[last:start] + SIMILAR_MACRO)
                last = start + len(word)
    return "".join(out) + sql[last:]


NEIGHBOURS = "STRUCT(cell_id VARCHAR, similarity DOUBLE)[]"  # what the search UDFs return
MACROS = f"""
CREATE MACRO {SIMILAR_MACRO}(id, k) AS TABLE SELECT unnest(_similar(id, k), recursive := true);
CREATE MACRO similar_to_vector(vec, k) AS TABLE
    SELECT unnest(_similar_to_vector(vec, k), recursive := true);
"""


def _search_functions(table, stop: _Stop) -> dict:
    """The Python functions behind similar() and similar_to_vector(): `uceindex.search`'s
    k-NN on the cells table (its vector index when it has one, an exact scan otherwise).
    They hold the table, not the session, so the connection is not part of a cycle."""
    from uceindex.search.neighbours import cell_vector, knn

    def neighbours(vector, k: int, skip: str | None) -> list[dict]:
        if stop.why:  # DuckDB checks interrupts between chunks, not inside a Python call
            raise QueryError(f"stopped {stop.why}")
        if not 1 <= k <= MAX_K:
            raise QueryError(f"k must be between 1 and {MAX_K:,}, got {k}")
        hits = knn(table, vector, k + (skip is not None))
        found = zip(hits.cell_id[0], hits.similarity[0], hits.valid[0])
        out = [{"cell_id": c, "similarity": float(s)} for c, s, ok in found if ok and c != skip]
        return out[:k]

    def similar(cell_id: str, k: int) -> list[dict]:
        return neighbours(cell_vector(table, cell_id), k, cell_id)

    def similar_to_vector(vector: list[float], k: int) -> list[dict]:
        return neighbours(vector, k, None)

    return {"_similar": (similar, "VARCHAR"), "_similar_to_vector": (similar_to_vector, "DOUBLE[]")}


def _is_duckdb_error(exc: BaseException) -> bool:
    import duckdb

    return isinstance(exc, duckdb.Error)


_CARET = re.compile(r"^\s*\^+\s*$")


_UDF_ERROR = "Python exception occurred while executing the UDF: QueryError: "


def _one_line(exc: BaseException) -> str:
    """DuckDB's message on one line: the caret line dropped, the rest joined; a QueryError
    from similar() keeps only its own message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not _CARET.match(ln)]
    text = " ".join(lines) or type(exc).__name__
    return text.split(_UDF_ERROR, 1)[1] if _UDF_ERROR in text else text


# -- writing results --------------------------------------------------------------------------


def write_batches(batches, schema: pa.Schema, out, fmt: str) -> int:
    """Write record batches to `out` (a path or a binary file) as csv, json (an array of
    objects) or parquet; returns the rows written. CSV and JSON write vectors as JSON lists."""
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        partial = path.with_name(path.name + ".partial")  # no half-written file on an error
        try:
            with open(partial, "wb") as fh:
                rows = write_batches(batches, schema, fh, fmt)
            os.replace(partial, path)
            return rows
        finally:
            partial.unlink(missing_ok=True)
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


def _nested(kind: pa.DataType) -> bool:
    return pa.types.is_nested(kind)


def _flat_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if _nested(f.type) else f for f in schema])


def _flatten(batch: pa.RecordBatch, flat: pa.Schema) -> pa.RecordBatch:
    """Nested columns (vectors, lists, structs) as JSON text, for CSV."""
    columns = []
    for column in batch.columns:
        if _nested(column.type):
            column = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in column.to_pylist()],
                pa.string(),
            )
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=flat)
