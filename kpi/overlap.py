"""Bounded overlap of a day's I/O with its computing: fetch ahead, write behind.

A day's ingest waits on two servers, KPIggybank (fetching a window) and CouchDB (a
`_bulk_docs`), and computes in between (decoding, validating, aggregating). `Ahead` fetches the
next item in a thread while the caller works on the current one; `Behind` runs writes in one
thread, in the order given, while the caller prepares the next. Both hold at most `depth`
items beyond the one in hand, so memory stays bounded, and both re-raise a failure in the
caller, where the code without overlap would have raised it.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Ahead(Generic[T]):
    """The results of `calls`, in order, each computed in a thread ahead of the caller: the
    first `depth` start at once (on `with`), and each one the caller takes starts the next,
    so at most `depth` results wait or are computed beyond the one in hand. Leaving `with`
    drops those not started and waits for the running one."""

    def __init__(self, calls: Iterable[Callable[[], T]], depth: int = 1) -> None:
        self._calls = iter(calls)
        self.depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kpi-ahead")
        self._pending: deque[Future] = deque()

    def __enter__(self) -> Ahead[T]:
        for call in itertools.islice(self._calls, self.depth):
            self._pending.append(self._pool.submit(call))
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __iter__(self) -> Iterator[T]:
        while self._pending:
            future = self._pending.popleft()
            for call in itertools.islice(self._calls, 1):
                self._pending.append(self._pool.submit(call))
            yield future.result()


class Behind(Generic[T]):
    """Runs calls one at a time in a thread, in the order submitted (a later write of a
    document never overtakes an earlier one), with at most `depth` waiting or running.

    `submit` returns the results of the calls that had to finish to make room, oldest first;
    `drain` waits for all and returns theirs. A failed call's exception is raised by the
    `submit` or `drain` that collects it; `close` waits for every queued call, and leaving
    `with` on a failure waits for the running one and drops those not started (their work is
    lost with the failure being raised).
    """

    def __init__(self, depth: int = 1) -> None:
        self.depth = depth
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kpi-behind")
        self._pending: deque[Future] = deque()

    def __enter__(self) -> Behind[T]:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(cancel=exc_type is not None)

    def submit(self, call: Callable[[], T]) -> list[T]:
        """Queue `call`; the results of the calls collected to keep the bound."""
        self._pending.append(self._pool.submit(call))
        done = []
        while len(self._pending) > self.depth:
            done.append(self._pending.popleft().result())
        return done

    def drain(self) -> list[T]:
        """Wait for every queued call; their results, oldest first."""
        done = []
        while self._pending:
            done.append(self._pending.popleft().result())
        return done

    def close(self, cancel: bool = False) -> None:
        """Wait for every queued call (their results and failures are dropped); with
        `cancel` (leaving `with` on a failure), the calls not started yet are dropped."""
        if cancel:
            for future in self._pending:
                future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


_gc_lock = threading.Lock()
_gc_pauses = 0  # threads inside `gc_paused`
_gc_was_enabled = False  # whether the collector was on when the first of them entered


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: millions of small objects (decoded rows, staged
    blobs) make it the main cost, and they hold no reference cycles. Threads may pause it at
    the same time (fetching, validating, two days at once): it comes back on when the last of
    them leaves, if it was on when the first entered."""
    global _gc_pauses, _gc_was_enabled  # noqa: PLW0603
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
