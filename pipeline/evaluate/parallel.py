"""Chunks of a list scored by this process and forked helpers together, results in input order.

Why not multiprocessing.Pool: the scorer's dictionaries and per-word caches are already loaded in this
process, and every pool worker would start with empty caches and leave this process idle. Here this
process scores chunks itself, keeping its caches warm for the next call, and `workers - 1` forked
helpers (which inherit the dictionaries and the caches as they stand, copy-on-write) take chunks from the
same shared counter, so a helper slowed by other work on the machine simply takes fewer. Inputs are
inherited, not pickled; only results travel back, over one pipe per helper.
"""

from __future__ import annotations

import gc
import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import cast


class WorkerError(RuntimeError):
    pass


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def map_chunks(
    fn: Callable[[Sequence], list],
    items: Sequence,
    workers: int,
    chunk: int,
    progress: Callable[[int], None] | None = None,
) -> list:
    """fn over consecutive chunks of items, concatenated in order; `workers` processes in all."""
    bounds = [(i, min(i + chunk, len(items))) for i in range(0, len(items), chunk)]
    results: list[list | None] = [None] * len(bounds)
    helpers = min(workers, len(bounds)) - 1
    if helpers < 1 or not can_fork():
        helpers = 0
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)

    def take() -> int | None:
        with counter.get_lock():
            k = counter.value
            counter.value = k + 1
        return k if k < len(bounds) else None

    def helper(send: Connection) -> None:
        try:
            while (k := take()) is not None:
                a, b = bounds[k]
                send.send(("rows", k, fn(items[a:b])))
            send.send(("done",))
        except BaseException:  # report, do not hang the parent
            send.send(("error", traceback.format_exc()))
        finally:
            send.close()

    pipes: list[Connection] = []
    procs = []
    gc.freeze()  # the helpers' collectors leave inherited objects alone (no copy of every page they visit)
    try:
        for _ in range(helpers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=helper, args=(send,), daemon=True)
            proc.start()
            send.close()
            pipes.append(recv)
            procs.append(proc)
    finally:
        gc.unfreeze()
    try:
        pending = list(pipes)

        def collect(block: bool) -> None:
            # wait gives back the objects it was passed: here, only Connections
            for conn in cast("list[Connection]", wait(pending, timeout=None if block else 0)):
                try:
                    message = conn.recv()
                except EOFError:
                    pending.remove(conn)
                    continue
                if message[0] == "rows":
                    results[message[1]] = message[2]
                    if progress:
                        progress(len(message[2]))
                else:
                    pending.remove(conn)
                    if message[0] == "error":
                        raise WorkerError(f"a scoring process failed:\n{message[1]}")

        while (k := take()) is not None:
            a, b = bounds[k]
            results[k] = fn(items[a:b])
            if progress:
                progress(b - a)
            collect(block=False)
        while pending:
            collect(block=True)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
    missing = sum(r is None for r in results)
    if missing:
        raise WorkerError(f"{missing} chunks were never scored: a scoring process died (out of memory?)")
    return [row for rows in results for row in rows]  # type: ignore[union-attr]
