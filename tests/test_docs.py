"""Docs cannot drift: every command has an example in its --help and a section in docs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.main import get_command

from cli.main import app

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _commands(group, prefix=("uceindex",)):
    for name, command in getattr(group, "commands", {}).items():
        path = (*prefix, name)
        if isinstance(command, typer.core.TyperGroup):
            yield from _commands(command, path)
        else:
            yield " ".join(path), command


COMMANDS = dict(_commands(get_command(app)))


def test_there_are_commands():
    assert {"uceindex embed", "uceindex models info", "uceindex models download"} <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_an_example(path):
    assert "Example: " + path in (COMMANDS[path].epilog or ""), f"{path} --help shows no example"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_is_documented(path):
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    assert path in text, f"no page in docs/ mentions `{path}`"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_is_documented(path):
    text = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    for param in COMMANDS[path].params:
        for opt in param.opts:
            if opt.startswith("--") and opt != "--help":
                assert opt in text, f"`{path}` option {opt} is not documented in docs/"
