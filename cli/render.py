"""What every command shares: error lines, JSON output, progress bars."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from uceindex.errors import UceIndexError

console = Console()
err_console = Console(stderr=True)


def handle_errors(fn):
    """A UceIndexError becomes one red line on stderr and exit code 1; anything else is a bug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UceIndexError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def progress_bar(description: str, unit: str = "cells", quiet: bool = False) -> Iterator:
    """Yields a callback(done, total, label=None): a rich bar on a terminal, plain lines every
    10% elsewhere. A new label starts a new stretch of work (the next file of a download)."""
    if quiet:
        yield lambda done, total, label=None: None
        return
    if err_console.is_terminal:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err_console,
        ) as bar:
            task = bar.add_task(description, total=None, rate="")
            started = time.perf_counter()

            def update(done: int, total: int, label: str | None = None) -> None:
                nonlocal started
                if label is not None and label != bar.tasks[0].description:
                    started = time.perf_counter()
                    bar.update(task, description=label)
                bar.update(task, completed=done, total=total, rate=_rate(done, started, unit))

            yield update
        return
    state = {"next": 0.0, "started": time.perf_counter(), "label": description}

    def lines(done: int, total: int, label: str | None = None) -> None:
        if label is not None and label != state["label"]:
            state.update(next=0.0, started=time.perf_counter(), label=label)
        share = done / total if total else 1.0
        if share >= state["next"] or done == total:
            err_console.print(
                f"{state['label']}: {done:,}/{total:,} {unit} {_rate(done, state['started'], unit)}",
                highlight=False,
            )
            state["next"] = share + 0.1

    yield lines


def _rate(done: int, started: float, unit: str) -> str:
    """'1,234 cells/s', or nothing while too little time has passed to say."""
    elapsed = time.perf_counter() - started
    if elapsed <= 0.05 or not done:
        return ""
    return f"({per_second(done / elapsed)} {unit}/s)"


def per_second(rate: float) -> str:
    """A rate for people: '1,234', or two significant digits below 10 ('0.31', not '0')."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
