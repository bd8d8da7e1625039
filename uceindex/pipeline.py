"""Work done ahead of its consumer: while the model embeds chunk i, threads read and sample the
next chunks, so the device never waits on one CPU core.

Threads, not processes: the h5py reads and the compiled sampler kernels release the GIL, and a
chunk's arrays then need no copy between processes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from uceindex import CORES

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    """Threads that read and sample ahead of the model: a core of their own where there is one
    to spare, a few more on a large host feeding a GPU."""
    return max(1, min(4, CORES // 2))


def ahead(fn: Callable[[T], R], items: Iterable[T], *, threads: int, depth: int) -> Iterator[R]:
    """`fn(item)` for each item, yielded in the items' order, computed by `threads` threads at
    most `depth` items ahead of the consumer (so memory holds at most depth + 1 results).

    threads=0 computes each result when it is asked for, in the caller's thread. An exception
    in `fn` is raised at that item's turn; the items after it are not started, and those
    already running are waited for, so nothing runs on once the generator is left."""
    if threads <= 0:
        yield from map(fn, items)
        return
    depth = max(depth, 1)
    queued: deque[Future] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="uceindex-ahead") as pool:
        try:
            for item in items:
                queued.append(pool.submit(fn, item))
                if len(queued) > depth:
                    yield queued.popleft().result()
            while queued:
                yield queued.popleft().result()
        finally:
            for future in queued:
                future.cancel()
