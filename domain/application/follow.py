"""LogFollower: a consumer that must not lose anything follows the notification log from
the position it tracks, instead of being called in-process only.

It is woken by this process's own saves (its `recorded` is a handler in the composition
root's map: it only sets a flag, so a save never waits for it) and, for other processes'
saves on a shared store, every `interval` seconds. Its work runs on a thread of its own
(a StoreAccess with its own executor): never on the event loop, never inside a key's
lock, never on the store threads that pairings use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from domain.application.sessions import Event, IntegrityError
from domain.application.store_calls import StoreAccess

log = logging.getLogger(__name__)

# After a failed catch-up (the database away, say): seconds before the next, doubling.
RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)


class LogFollower:
    def __init__(
        self,
        name: str,
        catch_up: Callable[[], int],
        store: StoreAccess,
        interval: float,
        then: Callable[[], None] | None = None,
    ) -> None:
        """`catch_up` moves the consumer on by one page of the log and says how many
        events it handled (0: it is at the log's head); `then` runs on the event loop
        after each page (e.g. to wake whoever acts on what it wrote)."""
        self.name = name
        self._then = then
        self._catch_up = catch_up
        self._store = store
        self._interval = interval
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def recorded(self, key: str, event: Event) -> None:
        self.wake()

    def wake(self) -> None:
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"follow:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def caught_up(self) -> None:
        """Returns once the follower has found the log's head after the last wake-up."""
        self.wake()
        await self._idle.wait()

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                handled = await self._store.read(self._catch_up)
            except IntegrityError:
                continue  # another process (or a reindex) moved the position: read it again
            except Exception:
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.exception("%s: following the log failed; again in %.1f s", self.name, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if handled:
                if self._then is not None:
                    self._then()
                continue
            if not self._wake.is_set():
                self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
