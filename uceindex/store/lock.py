"""One ingest of a data set at a time: a second one is refused at once, naming the first.

Two writers of one data set would each delete the rows the other is writing (resume, replace)
and race to mark it complete. The lock is an OS lock (`fcntl.flock`) on a small file, which
the kernel releases when its process ends however it ends, so a killed ingest never leaves a
stale lock behind. The file sits in the store's `.locks/` directory for a local store, and
under the user's cache for a store on object storage, where it guards the ingests of this
machine only (object stores have no such lock; docs/store.md says what holds there).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from uceindex.errors import StoreBusyError

LOCKS = ".locks"  # inside a local store's directory
CACHE_ENV = "XDG_CACHE_HOME"


CREATION = "store.create"  # the lock file held while a store's tables are created


def lock_path(uri: str, name: str) -> Path:
    """A lock file of the store at `uri`: `<data set id>.lock`, or CREATION."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://")) / LOCKS / name
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache")
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return cache / "uceindex" / "locks" / key / name


def _open_lock_file(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Held, waiting for it, while a store's tables are created. Two processes creating one
    store at once would each create its tables, and Lance commits the later creation as an
    overwrite of the earlier one, which fails (or loses) the other's first append."""
    fd = _open_lock_file(lock_path(uri, CREATION))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def ingest_lock(uri: str, dataset_id: str, source: str | None) -> Iterator[None]:
    """Hold the ingest lock of `dataset_id` for the block, or raise StoreBusyError at once
    when another process holds it (the message names that process and its file)."""
    fd = _open_lock_file(lock_path(uri, f"{dataset_id}.lock"))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreBusyError(
                f"data set {dataset_id!r} is being ingested into {uri} right now "
                f"({_holder(fd)}): wait for that ingest to end; if it stops early, run the "
                "same command again to finish it"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "source": source,
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    if not holder:
        return "by another process"
    source = f" from {holder['source']}" if holder.get("source") else ""
    return (
        f"by process {holder.get('pid')} on {holder.get('host')}{source}, "
        f"since {holder.get('started')}"
    )
