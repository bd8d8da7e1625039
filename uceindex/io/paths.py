"""Output paths checked before the work: a name the writer knows, in a folder that exists
and can be written to. A run of minutes must not end on a typo in its last step."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from uceindex.errors import OutputPathError


def check_output(path: str | os.PathLike, suffixes: Sequence[str], option: str) -> Path:
    """`path` (the value of `option`, e.g. "--out"), refused with one line unless its suffix
    is one of `suffixes` (any when empty) and its folder exists and is writable. Nothing is
    created: the writers write whole files beside it (`atomic.written_whole`)."""
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputPathError(f"{option} {path}: the file name must end in {', '.join(suffixes)}")
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder: give a file name inside it")
    folder = path.parent
    if not folder.is_dir():
        raise OutputPathError(
            f"{option} {path}: there is no folder {folder}; create it (mkdir -p {folder}) "
            "or write elsewhere"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {path}: the folder {folder} is not writable by you")
    return path
