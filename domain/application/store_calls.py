"""Where a call to the event store runs: on the event loop or on the store's threads."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar

from domain.application.ports import StoreCalls
from domain.application.sessions import Change, DeviceSessions
from domain.model.session import DeviceSession

P = ParamSpec("P")
T = TypeVar("T")


class StoreAccess:
    """DeviceSessions called from asyncio. `executor`: the store's threads (None: a local
    store, called from the event loop); `calls` runs each call there (an adapter may time
    them)."""

    def __init__(
        self,
        sessions: DeviceSessions,
        executor: Executor | None = None,
        calls: StoreCalls | None = None,
    ) -> None:
        self.sessions = sessions
        self._executor = executor
        self._run: StoreCalls = calls or _call

    async def call(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call about one session: on the store's threads or, when it has none (a
        local store: an SQLite file, memory), right here, which costs less than waking a
        thread: the session is held in memory or its stream is short."""
        if self._executor is None:
            return self._run(functools.partial(call, *args, **kwargs))
        return await self.read(call, *args, **kwargs)

    async def read(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call that may take long (a whole history, every key): never on the loop
        (asyncio's default threads when the store has none of its own)."""
        loop = asyncio.get_running_loop()
        bound = functools.partial(call, *args, **kwargs)
        return await loop.run_in_executor(self._executor, self._run, bound)

    @property
    def threaded(self) -> bool:
        """Whether calls run on the store's threads (else on the event loop)."""
        return self._executor is not None

    async def find(self, key: str) -> DeviceSession | None:
        return await self.call(self.sessions.find, key)

    async def current(self, key: str) -> DeviceSession | None:
        """`find`, without a thread hop for a session held in memory (nothing to read)."""
        if self.sessions.holds(key):
            return self.sessions.find(key)
        return await self.find(key)

    async def update(self, key: str, command: Callable[[DeviceSession], None]) -> Change:
        return await self.call(self.sessions.update, key, command)


def _call(call: Callable[[], T]) -> T:
    return call()
