"""Threads for neonize's blocking calls, owned by the engine and gone when idle.

Every live whatsmeow client holds one thread for as long as it is connected (neonize's
`connect()` blocks), so the engine must not borrow the event loop's default executor
(`min(32, cpus + 4)` threads, shared with everything else). This pool is the engine's
own; it starts threads on demand and lets them all go when no call is running, so an
idle engine holds no thread and needs no explicit close.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class IdleClosingPool(Executor):
    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0
        self._closed = False

    @property
    def busy(self) -> int:
        return self._busy

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix=self._name)
            self._busy += 1
            future = self._pool.submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future[Any]) -> None:
        with self._lock:
            self._busy -= 1
            if self._busy == 0 and self._pool is not None:
                # Idle threads exit as soon as they see the shutdown; nothing waits here.
                pool, self._pool = self._pool, None
                pool.shutdown(wait=False)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
