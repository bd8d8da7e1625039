"""`SqlSession(store)`: the store's Lance tables as DuckDB views, read-only.

The Lance datasets of `cells`, `datasets` and `rejects` are registered with an in-memory
DuckDB connection. DuckDB pushes projections and filters into the Lance scan, so a count over
metadata never reads the embedding column. The session sees the snapshot of the store it was
opened on. Every statement passes the sandbox first (`uceindex.sql.sandbox`); results are
pulled in Arrow batches and stop at `max_rows`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from uceindex.errors import QueryError
from uceindex.sql import sandbox, similar
from uceindex.sql.output import FORMATS, write_batches
from uceindex.store import Store
from uceindex.store.schema import EMBEDDING

TABLES = ("cells", "datasets", "rejects")  # views, in this order, for the tables the store has
BATCH_ROWS = 8192  # rows per Arrow batch pulled from DuckDB


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
        return list(zip(*(_python_values(col) for col in self.table.columns)))


def _python_values(column: pa.ChunkedArray) -> list:
    """A column as Python values; one holding dates or times that Python's datetime cannot
    hold (DuckDB's 'infinity'::TIMESTAMP, years past 9999) as Arrow's text for each."""
    try:
        return column.to_pylist()
    except OverflowError:
        return column.cast(pa.string()).to_pylist()


@dataclass
class Exported:
    """What `SqlSession.export` wrote: rows, and whether the limit cut the result short."""

    rows: int
    truncated: bool
    elapsed_s: float


def _view(name: str, dataset, hidden: tuple[str, ...]):
    """What DuckDB's view `name` reads: the Lance dataset (pinned to the store's version), or
    for `datasets` with `hidden` columns, an Arrow copy of the others."""
    keep = [c for c in dataset.schema.names if c not in hidden]
    if name != "datasets" or len(keep) == len(dataset.schema.names):
        return dataset
    return dataset.to_table(columns=keep)


class _EngineError(Exception):
    """An error of DuckDB that surfaced while its rows were being streamed."""


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

    store: a `Store`, or its URI (opened here, with `storage_options` as `Store.open` takes
    them, and closed with the session; the Lance datasets are read with the same options).
    timeout_s: a statement running longer is interrupted (QueryError); None: no limit.
    max_rows: results stop there (`truncated=True`); None: no limit.
    hidden: columns of `datasets` left out of its view (the service hides `source_path`, a
    path on the server); that view is then a copy of the table's other columns, which is
    small (one row per ingested file).
    Use `with SqlSession(...) as sql:` or call `close()` (idempotent)."""

    def __init__(
        self,
        store: Store | str | os.PathLike | None = None,
        *,
        timeout_s: float | None = None,
        max_rows: int | None = None,
        memory_limit: str = sandbox.MEMORY_LIMIT,
        threads: int | None = None,
        storage_options: dict | None = None,
        hidden: tuple[str, ...] = (),
    ):
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        self._closed = False
        self._stop = sandbox.Stop()  # why the running statement was interrupted, if it was
        with ExitStack() as stack:
            self._store = stack.enter_context(Store.using(store, storage_options=storage_options))
            self._con = sandbox.connect(memory_limit, threads)
            stack.callback(self._con.close)
            self._tables = []
            for name in TABLES:
                table = getattr(self._store, "datasets_table" if name == "datasets" else name)
                if table is not None:
                    self._con.register(name, _view(name, table.to_lance(), hidden))
                    self._tables.append(name)
            self.dim = self._embedding_dim()
            if self.dim:
                similar.register(self._con, self._store.cells, self._stop)
            sandbox.lock_down(self._con)
            self._resources = stack.pop_all()  # the connection, and the store if opened here

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (and the store when the session opened it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._resources.close()

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
            return [
                (r[0], r[1])
                for r in self._con.sql(f"DESCRIBE {sandbox.sql_name(table)}").fetchall()
            ]

    def _embedding_dim(self) -> int | None:
        if "cells" not in self._tables:
            return None
        kind = self._store.cells.schema.field(EMBEDDING).type
        return getattr(kind, "list_size", None)

    # -- statements ---------------------------------------------------------------------------

    def split(self, text: str) -> list[str]:
        """The statements of a script, each with its text (for stdin and the shell)."""
        self._check_open()
        with self._lock:
            return sandbox.split(similar.rewrite(text), self._con)

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
        with self._lock, sandbox.deadline(self._con, self._stop, self.timeout_s):
            statement = sandbox.checked(similar.rewrite(sql), self._con)
            reader = None
            try:
                reader = self._con.sql(statement).to_arrow_reader(BATCH_ROWS)
                yield _Run(reader, cap, statement)
            except (duckdb.Error, _EngineError) as exc:
                if self._stop.why:
                    raise QueryError(f"the statement was stopped {self._stop.why}") from None
                if "Out of Memory Error" in str(exc):
                    raise QueryError(sandbox.out_of_memory(self.memory_limit, self.dim)) from None
                raise QueryError(sandbox.one_line(exc)) from None
            finally:
                if reader is not None:
                    reader.close()  # frees the connection even when not drained
