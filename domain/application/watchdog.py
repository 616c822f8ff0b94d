"""Watchdog: at most one timer per key, for sessions waiting on a quiet engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Expiry = Callable[[str, int], Coroutine[Any, Any, None]]


class Watchdog:
    """Calls `on_expiry(key, version)` after a delay unless the key is re-armed or disarmed.

    The session version travels with the timer, so an expiry that races a newer event can
    tell it is stale. Each expiry runs as its own task; `close` cancels whatever is left.
    """

    def __init__(self, on_expiry: Expiry) -> None:
        self._on_expiry = on_expiry
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._timers)

    def arm(self, key: str, delay: float, version: int) -> None:
        self.disarm(key)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key, version)

    def disarm(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def close(self) -> None:
        for key in list(self._timers):
            self.disarm(key)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _fire(self, key: str, version: int) -> None:
        del self._timers[key]
        task = asyncio.ensure_future(self._on_expiry(key, version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
