"""`uceindex sql`: read-only SQL over the store, as a table, csv, json or parquet."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli.options import AsOfOpt, StorageOpt, StoreOpt, choices, opened_store
from cli.render import console, err_console, handle_errors
from uceindex.errors import QueryError, UceIndexError
from uceindex.sql import FORMATS

EPILOG = (
    'Example: uceindex sql "SELECT tissue, cell_type, count(*) n FROM cells GROUP BY ALL '
    'ORDER BY n DESC"'
)
DISPLAY_ROWS = 40  # rows a table shows unless --limit says otherwise
MAX_CELL_CHARS = 40  # longer text is cut with an ellipsis
VECTOR_HEAD = 3  # values shown of a vector before "… (D)"
HISTORY = Path(os.environ.get("UCEINDEX_SQL_HISTORY", "~/.local/share/uceindex/sql_history"))
HISTORY_LINES = 1000
TABLE = "table"  # the format shown on a terminal; FORMATS are written to files or piped
Format = choices("Format", (TABLE, *FORMATS))
HELP = """\
End a statement with ; (it may span lines). The views: cells, datasets, rejects.
  .tables           the views
  .schema [TABLE]   columns and types (all views without TABLE)
  .help             this text
  .quit             leave (or Ctrl-D)
Examples:
  SELECT tissue, count(*) AS n FROM cells GROUP BY ALL ORDER BY n DESC;
  SELECT * FROM similar('DATASET/CELL', 20) JOIN cells USING (cell_id);
  SELECT * FROM similar('DATASET/CELL', 20, 'tissue = ''blood''');  -- within a filter
Read-only: SELECT, WITH, EXPLAIN, DESCRIBE, SHOW and SUMMARIZE run; nothing else does."""


@handle_errors
def sql(
    statement: Annotated[
        Optional[str],
        typer.Argument(help="SQL to run; without it, a shell on a terminal or a script on stdin."),
    ] = None,
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    format: Annotated[
        Optional[Format],
        typer.Option("--format", "-f", help="Output format (default: from --out, else table)."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the rows to this file.")
    ] = None,
    limit: Annotated[
        Optional[int],
        typer.Option(
            min=1, help=f"At most this many rows (a table shows {DISPLAY_ROWS} by default)."
        ),
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option(min=0.001, help="Stop a statement after this many seconds.")
    ] = None,
    as_of: AsOfOpt = None,
) -> None:
    """Query the store with DuckDB: views cells, datasets, rejects; similar(cell_id, k[, filter])
    and similar_to_vector(vector, k[, filter]) for the nearest cells. Read-only."""
    from uceindex.sql import SqlSession, format_of

    fmt = format.value if format else ((format_of(out) if out else None) or TABLE)
    if fmt == TABLE and out is not None:
        raise QueryError(f"--out {out} needs --format csv, json or parquet")
    if fmt == "parquet" and out is None:
        raise QueryError("parquet is binary: give --out FILE.parquet")
    if out is not None:
        from uceindex.io.paths import check_output

        check_output(out, (), "--out")
    with (
        opened_store(store, storage_option, as_of) as opened,
        SqlSession(opened, timeout_s=timeout) as session,
    ):
        if statement is None and sys.stdin.isatty():
            shell(session)
            return
        text = statement if statement is not None else sys.stdin.read()
        statements = session.split(text)
        if not statements:
            raise QueryError("no SQL given: pass a statement, or pipe one on stdin")
        if out is not None and len(statements) > 1:
            raise QueryError(f"--out takes one statement, got {len(statements)}")
        try:
            for one in statements:  # piped, a table keeps every column
                run(session, one, fmt, out=out, limit=limit, fit=console.is_terminal)
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None


def run(
    session,
    statement: str,
    fmt: str,
    *,
    out=None,
    limit=None,
    to: Console = console,
    fit: bool = True,
):
    """One statement, rendered as a table (`fit`: only the columns that fit the width) or
    written as csv/json/parquet. It runs in a worker thread so that Ctrl-C, which Python
    delivers to this thread, can interrupt it."""
    _interruptible(session, _run, session, statement, fmt, out, limit, to, fit)


def _interruptible(session, fn, *args):
    outcome: list = []

    def work() -> None:
        try:
            fn(*args)
            outcome.append(None)
        except BaseException as exc:  # re-raised below, in the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        session.interrupt()
        worker.join()
        raise
    if outcome and outcome[0] is not None:
        raise outcome[0]


def _run(session, statement: str, fmt: str, out, limit, to: Console, fit: bool) -> None:
    if fmt == TABLE:
        shown = limit or DISPLAY_ROWS
        render_table(session.execute(statement, limit=shown, count_rest=True), to, fit=fit)
        return
    if out is None:
        sys.stdout.flush()
        done = session.export(statement, sys.stdout.buffer, fmt, limit=limit)
        sys.stdout.buffer.flush()
    else:
        done = session.export(statement, out, fmt, limit=limit)
        err_console.print(
            f"wrote {done.rows:,} rows to {out} in {done.elapsed_s:.2f} s", highlight=False
        )
    if done.truncated:
        err_console.print(f"stopped at --limit {limit:,} rows", highlight=False)


def render_table(result, to: Console, fit: bool = True) -> None:
    """A rich table: long text cut, vectors abbreviated, a note for rows not shown; `fit`:
    the columns that fit the console's width (else all of them, as wide as they need)."""
    if result.columns == ["explain_key", "explain_value"]:
        for value in result.table["explain_value"].to_pylist():
            to.print(Text(value))
        return
    rows = [[_cell(value) for value in row] for row in result.rows()]
    fields = list(result.table.schema)
    needs = _widths(fields, rows)
    keep = _fitting_columns(needs, to.width) if fit else list(range(len(fields)))
    table = Table(show_header=True, header_style="bold", show_edge=False)
    for i in keep:
        numeric = _is_number(fields[i].type)
        table.add_column(
            fields[i].name,
            justify="right" if numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    (to if fit else Console(file=to.file, width=max(to.width, sum(needs)))).print(table)
    total = result.num_rows + (result.more_rows or 0)
    note = f"{total:,} row{'' if total == 1 else 's'} in {result.elapsed_s:.2f} s"
    if result.more_rows:
        note += (
            f"; {result.more_rows:,} more rows not shown "
            "(--limit N, or --format csv/json/parquet --out FILE for all)"
        )
    elif result.truncated:
        note += "; more rows not shown"
    if len(keep) < len(fields):
        hidden = [f.name for i, f in enumerate(fields) if i not in keep]
        note += (
            f"; {len(hidden)} more column{'' if len(hidden) == 1 else 's'} not shown: "
            + ", ".join(hidden)
        )
    to.print(Text(note, style="dim"), soft_wrap=True)


def _widths(fields, rows: list[list[Text]]) -> list[int]:
    """The width each column needs: its longest cell or name, padding and rule."""
    return [
        max([len(field.name), *(row[i].cell_len for row in rows)]) + 3
        for i, field in enumerate(fields)
    ]


def _fitting_columns(needs: list[int], width: int) -> list[int]:
    """The leading columns that fit in `width` (at least one), like DuckDB's own shell."""
    keep, used = [], 0
    for i, need in enumerate(needs):
        if keep and used + need > width:
            break
        keep.append(i)
        used += need
    return keep


def _is_number(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _cell(value) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, float):
        return Text("nan" if math.isnan(value) else f"{value:.6g}")
    if isinstance(value, (list, tuple)):
        head = ", ".join(_short(v) for v in value[:VECTOR_HEAD])
        more = ", …" if len(value) > VECTOR_HEAD else ""
        return Text(f"[{head}{more}] ({len(value)})")
    if isinstance(value, dict):
        value = json.dumps(value, default=str)
    text = " ".join(str(value).split("\n"))
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return Text(text)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# -- the shell --------------------------------------------------------------------------------


def shell(session, *, read=input, out=None, history: Path | None = HISTORY) -> None:
    """Read statements until .quit or end of input; errors print and the shell goes on."""
    to = Console(file=out, width=120) if out is not None else console
    if history is not None:
        _load_history(history)
    to.print(
        f"uceindex sql on {', '.join(session.tables()) or 'an empty store'}: "
        "end statements with ;  .help for help",
        highlight=False,
    )
    buffer: list[str] = []
    try:
        while True:
            try:
                line = read("sql> " if not buffer else " ..> ")
            except EOFError:
                break
            except KeyboardInterrupt:
                buffer = []
                to.print()
                continue
            if not buffer and line.strip().startswith("."):
                if not _dot(session, line.strip(), to):
                    break
                continue
            if not buffer and not line.strip():
                continue
            buffer.append(line)
            if not line.rstrip().endswith(";"):
                continue
            text, buffer = "\n".join(buffer), []
            try:
                for statement in session.split(text):
                    run(session, statement, TABLE, to=to)
            except UceIndexError as exc:
                to.print(Text(f"error: {exc}", style="red"), soft_wrap=True)
            except KeyboardInterrupt:
                to.print(Text("interrupted", style="red"))
    finally:
        if history is not None:
            _save_history(history)


def _dot(session, line: str, to: Console) -> bool:
    """A dot command; False means leave the shell."""
    command, _, arg = line.partition(" ")
    arg = arg.strip().rstrip(";")
    if command in (".quit", ".exit", ".q"):
        return False
    if command == ".help":
        to.print(Text(HELP))
    elif command == ".tables":
        to.print(Text("  ".join(session.tables())))
    elif command == ".schema":
        try:
            for name in [arg] if arg else session.tables():
                table = Table(title=name, title_justify="left", show_edge=False)
                table.add_column("column")
                table.add_column("type")
                for column, kind in session.schema(name):
                    table.add_row(column, kind)
                to.print(table)
        except UceIndexError as exc:
            to.print(Text(f"error: {exc}", style="red"), soft_wrap=True)
    else:
        to.print(Text(f"unknown command {command}: try .help", style="red"))
    return True


def _load_history(path: Path) -> None:
    try:
        import readline
    except ImportError:  # Windows without pyreadline: no history, the shell still works
        return
    readline.set_history_length(HISTORY_LINES)
    try:
        readline.read_history_file(path.expanduser())
    except OSError:
        pass


def _save_history(path: Path) -> None:
    try:
        import readline
    except ImportError:
        return
    try:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path.expanduser())
    except OSError:
        pass
