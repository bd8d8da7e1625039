"""Files written whole: a reader, or a run killed half-way, never sees half of one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch path beside `path` to write to; when the block ends without an error it
    replaces `path` in one rename, otherwise it is removed and `path` is left as it was. The
    scratch name carries the process id, so two writers never share one."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
