"""Docs cannot drift: every command has an example in its --help, and its own page in docs/
shows the command and every one of its options (as datasette's test_docs.py does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from cli.main import app

DOCS = Path(__file__).resolve().parents[1] / "docs"

# The page that documents each command; a new command fails until it is given one.
PAGES = {
    "uceindex embed": "embed.md",
    "uceindex models download": "models.md",
    "uceindex models info": "models.md",
    "uceindex models tiny": "models.md",
    "uceindex species add": "species.md",
    "uceindex species list": "species.md",
    "uceindex ingest": "ingest.md",
    "uceindex datasets": "ingest.md",
    "uceindex export": "ingest.md",
    "uceindex versions": "store.md",
    "uceindex tag": "store.md",
    "uceindex check": "store.md",
    "uceindex labels": "ontology.md",
    "uceindex index": "search.md",
    "uceindex annotate": "search.md",
    "uceindex query": "search.md",
    "uceindex similar": "search.md",
    "uceindex match": "search.md",
    "uceindex sql": "sql.md",
    "uceindex serve": "service.md",
    "uceindex qc": "qc.md",
}


def _commands(group, prefix=("uceindex",)):
    for name, command in getattr(group, "commands", {}).items():
        path = (*prefix, name)
        if isinstance(command, typer.core.TyperGroup):
            yield from _commands(command, path)
        else:
            yield " ".join(path), command


COMMANDS = dict(_commands(get_command(app)))


def _options(path: str) -> list[str]:
    return [
        opt
        for param in COMMANDS[path].params
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    ]


def test_there_are_commands():
    assert {"uceindex embed", "uceindex models info", "uceindex models download"} <= set(COMMANDS)


def test_every_command_has_a_page():
    assert set(COMMANDS) == set(PAGES), (
        "a command without a page in PAGES, or a page entry left over"
    )


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_an_example(path):
    assert "Example: " + path in (COMMANDS[path].epilog or ""), f"{path} --help shows no example"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_and_option_is_on_its_own_page(path):
    text = (DOCS / PAGES[path]).read_text()
    assert path in text, f"docs/{PAGES[path]} does not show `{path}`"
    for opt in _options(path):
        # the whole option, not a prefix of a longer one (--k must not be satisfied by --kind)
        assert re.search(re.escape(opt) + r"(?![\w-])", text), (
            f"`{path}` option {opt} is not documented in docs/{PAGES[path]}"
        )


def test_the_option_check_can_fail():
    assert not re.search(re.escape("--k") + r"(?![\w-])", "uceindex index --kind ivf_flat")
