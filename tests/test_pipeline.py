"""`pipeline.ahead`: results in order, bounded look-ahead, errors at their turn, nothing left running."""

from __future__ import annotations

import threading
import time

import pytest

from uceindex.pipeline import ahead


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_results_come_in_order_whatever_finishes_first(threads):
    def slow_first(i):
        time.sleep(0.02 if i % 3 == 0 else 0)
        return i * i

    assert list(ahead(slow_first, range(10), threads=threads, depth=4)) == [
        i * i for i in range(10)
    ]


def test_never_more_than_depth_ahead_of_the_consumer():
    started, lock = [], threading.Lock()

    def note(i):
        with lock:
            started.append(i)
        return i

    results = ahead(note, range(20), threads=2, depth=3)
    for consumed, value in enumerate(results, start=1):
        time.sleep(0.005)  # let the threads run as far as they are allowed
        with lock:
            assert len(started) <= consumed + 3
        assert value == consumed - 1


def test_an_error_is_raised_at_its_turn_and_later_items_do_not_run():
    ran = []

    def fail_at_5(i):
        if i == 5:
            raise ValueError("bad chunk 5")
        time.sleep(0.01)
        ran.append(i)
        return i

    got = []
    with pytest.raises(ValueError, match="bad chunk 5"):
        for value in ahead(fail_at_5, range(100), threads=2, depth=2):
            got.append(value)
    assert got == [0, 1, 2, 3, 4]
    assert max(ran) < 5 + 2 + 2  # only the items already queued ran
    assert not [t for t in threading.enumerate() if t.name.startswith("uceindex-ahead")]


def test_leaving_early_stops_the_workers():
    gen = ahead(lambda i: i, range(1000), threads=2, depth=2)
    assert next(gen) == 0
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("uceindex-ahead")]
