"""The fork helpers: same order as serial, and a failing or dying helper is an error, never a gap."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from pipeline.evaluate import parallel

PARENT = os.getpid()
HELPER_STARTED = multiprocessing.get_context("fork").Event()  # inherited by the forked helpers


def square(chunk):
    return [x * x for x in chunk]


def fails_in_helper(chunk):
    if os.getpid() != PARENT:
        HELPER_STARTED.set()
        raise ValueError("boom in a helper")
    HELPER_STARTED.wait(30)  # the parent does not finish every chunk before the helper gets one
    return square(chunk)


def dies_in_helper(chunk):
    if os.getpid() != PARENT:
        HELPER_STARTED.set()
        os._exit(3)
    HELPER_STARTED.wait(30)
    return square(chunk)


def test_order_and_progress_match_serial():
    seen = []
    out = parallel.map_chunks(square, list(range(1000)), workers=3, chunk=7, progress=seen.append)
    assert out == [x * x for x in range(1000)]
    assert sum(seen) == 1000


@pytest.mark.parametrize(("fn", "message"), [(fails_in_helper, "boom in a helper"), (dies_in_helper, "died")])
def test_a_broken_helper_is_an_error(fn, message):
    HELPER_STARTED.clear()
    with pytest.raises(parallel.WorkerError, match=message):
        parallel.map_chunks(fn, list(range(50)), workers=2, chunk=1)
