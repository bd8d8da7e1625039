"""What SQL from a user may do: the statement check, DuckDB's closing settings, the limits.

1. `checked` lets one SELECT or EXPLAIN statement through (DESCRIBE, SHOW, SUMMARIZE,
   FROM-first and PIVOT ... IN (...) parse as SELECT); anything else (CREATE, INSERT, COPY,
   ATTACH, INSTALL, LOAD, PRAGMA, SET, CALL...) is refused before it reaches DuckDB.
2. `connect` and `lock_down` close the rest with DuckDB's own settings: no file system or
   network access (`enable_external_access=false`, which stops read_csv('/etc/passwd'),
   COPY TO and INSTALL), no extension auto-install or auto-load, no Python replacement scans,
   no spilling to disk, and `lock_configuration=true` so no setting can be changed back.
3. `deadline` interrupts a statement that runs past its time limit, from a timer thread
   (DuckDB has no per-statement timeout).

The checks are functions of the SQL text alone: DuckDB's parser decides what a statement is.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb

from uceindex.errors import QueryError

MEMORY_LIMIT = "1GB"  # DuckDB's buffer memory per session (results handed to Python are extra)
ALLOWED = {"SELECT", "EXPLAIN"}  # statement types that may run (DuckDB's StatementType names)

SETTINGS = {  # applied at connect, before any view exists
    "memory_limit": MEMORY_LIMIT,
    "temp_directory": "",  # never spill to disk: an out-of-memory error instead
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # no scans of the caller's Python variables
    "secret_directory": "none",  # not ~/.duckdb/stored_secrets: settings name no server path
}
LOCK_DOWN = (  # applied once the views are registered: registering needs neither
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)


def connect(memory_limit: str = MEMORY_LIMIT, threads: int | None = None):
    """An in-memory DuckDB connection with the sandbox's settings (not yet locked down)."""
    settings = {**SETTINGS, "memory_limit": memory_limit}
    if threads:
        settings["threads"] = threads
    return duckdb.connect(":memory:", config=settings)


def lock_down(con) -> None:
    """No file or network access from now on, and no setting can be changed back."""
    for statement in LOCK_DOWN:
        con.execute(statement)


# -- statements -------------------------------------------------------------------------------


def split(text: str, con=None) -> list[str]:
    """The statements of a script, each with its text. `con`: the connection whose parser
    to use (DuckDB's default connection without it; a session passes its own)."""
    return [s.query.strip() for s in _parse(text, con)]


def checked(sql: str, con=None) -> str:
    """The statement to run, or QueryError: exactly one, and SELECT or EXPLAIN.
    `con` as for `split`."""
    statements = _parse(sql, con)
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


def _parse(sql: str, con) -> list:
    try:
        return (duckdb if con is None else con).extract_statements(sql)
    except Exception as exc:
        raise QueryError(one_line(exc)) from None


_CARET = re.compile(r"^\s*\^+\s*$")
_UDF_ERROR = "Python exception occurred while executing the UDF: QueryError: "


def sql_name(name: str) -> str:
    """A table or column name quoted for DuckDB: in double quotes, a double quote inside
    doubled (any name: spaces, backticks, keywords)."""
    return '"' + name.replace('"', '""') + '"'


def one_line(exc: BaseException) -> str:
    """DuckDB's message on one line: the caret line dropped, the rest joined; a QueryError
    raised inside a Python function (similar()) keeps only its own message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not _CARET.match(ln)]
    text = " ".join(lines) or type(exc).__name__
    return text.split(_UDF_ERROR, 1)[1] if _UDF_ERROR in text else text


def out_of_memory(memory_limit: str, dim: int | None) -> str:
    """What to do when a statement needs more than `memory_limit`: DuckDB's own advice
    (SET memory_limit, a temp directory) does not apply in the sandbox."""
    vector = f" (each embedding is {dim * 4:,} bytes)" if dim else ""
    return (
        f"Out of Memory Error: the statement needs more than this session's "
        f"{memory_limit}: read fewer columns{vector}, filter first, or put the "
        "LIMIT in the statement (ORDER BY ... LIMIT n keeps only the top rows)"
    )


# -- time limit -------------------------------------------------------------------------------


@dataclass
class Stop:
    """Set when a statement is interrupted: by whom, or after which time limit."""

    why: str | None = None


@contextmanager
def deadline(con, stop: Stop, timeout_s: float | None) -> Iterator[None]:
    """Interrupt `con` from a timer thread once `timeout_s` has passed (None or 0: never),
    saying so in `stop`; `stop` is cleared first."""
    stop.why = None
    if not timeout_s:
        yield
        return

    def fire() -> None:
        stop.why = f"after the {timeout_s:g} s time limit"
        con.interrupt()

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()  # a firing timer finishes before the next statement starts
