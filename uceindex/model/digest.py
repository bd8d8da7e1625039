"""Content digests of model files, computed once per file version and remembered.

The fingerprint of a model covers every byte of the files its embeddings depend on, and it
is checked at every ingest and query; hashing gigabytes each time would cost seconds, so a
file's sha256 is kept (in memory and in $XDG_CACHE_HOME/uceindex/digests.json) under its
path, size, mtime, ctime and inode. Any write, copy or rename onto the path changes its ctime,
which no user call can set back, so a replaced file is always hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from uceindex.atomic import written_whole
from uceindex.model.files import cache_dir

CACHE_FILE = "digests.json"

_known: dict[str, list] = {}  # resolved path -> [size, mtime_ns, ctime_ns, inode, digest]


def _version(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        cached = json.loads(_cache_path().read_text())
        return cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):  # no cache yet, or a damaged one: hash again
        return {}


def _remember(key: str, entry: list) -> None:
    _known[key] = entry
    cached = _read_cache()
    cached[key] = entry
    try:
        _cache_path().parent.mkdir(parents=True, exist_ok=True)
        with written_whole(_cache_path()) as tmp:
            tmp.write_text(json.dumps(cached))
    except OSError:  # a read-only cache only costs a hash next time
        pass


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (hex), hashed only when this version of it is new."""
    path = Path(path).resolve()
    key = str(path)
    version = _version(path.stat())
    for entry in (_known.get(key), _read_cache().get(key)):
        if isinstance(entry, list) and entry[:4] == version:
            _known[key] = entry
            return entry[4]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if _version(path.stat()) == version:  # not changed while it was read
        _remember(key, [*version, digest])
    return digest
