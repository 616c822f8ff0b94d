"""LogFollower: a consumer that must not lose anything follows the notification log from
the position it tracks, instead of being called in-process only.

It is woken by this process's own saves (its `recorded` is a handler in the composition
root's map: it only sets a flag, so a save never waits for it) and, for other processes'
saves on a shared store, every `interval` seconds. Its work runs on a thread of its own
(a StoreAccess with its own executor): never on the event loop, never inside a key's
lock, never on the store threads that pairings use.

Saves come in bursts (a pairing is five events; a busy server saves hundreds a second),
and each catch-up has a fixed cost (a thread hop, reading the position, a tracked write
transaction). So a save's wake-up waits `batch` seconds before the catch-up, and every
save in that window rides on the same one: the cost follows the rate of catch-ups, not
of events. Whoever waits for the follower (`caught_up`: a list that promised to show
this process's saves) skips the wait. A consumer with nothing to follow for now (webhooks
without a subscription) says so (its catch-up returns None): saves then do not wake it
at all, only `interval` and `wake()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from domain.application.sessions import Event, IntegrityError
from domain.application.store_calls import StoreAccess

log = logging.getLogger(__name__)

# After a failed catch-up (the database away, say): seconds before the next, doubling.
RETRY_DELAYS = (0.1, 0.5, 2.0, 5.0)
# Seconds a save's wake-up waits for the saves that follow it, before one catch-up.
BATCH_DELAY = 0.2


class LogFollower:
    def __init__(
        self,
        name: str,
        catch_up: Callable[[], int | None],
        store: StoreAccess,
        interval: float,
        then: Callable[[], Awaitable[None] | None] | None = None,
        batch: float = BATCH_DELAY,
        page: int = 1,
    ) -> None:
        """`catch_up` moves the consumer on by one page of the log (of `page` events at
        most) and says how many events it handled (fewer than `page`: it reached the
        log's head; None: it has nothing to follow for now, so saves need not wake it);
        `then` runs on the event loop after each page that handled some (e.g. to wake
        whoever acts on what it wrote, or to hand its changes on: awaited, so pages are
        handed on in order)."""
        self.name = name
        self._then = then
        self._catch_up = catch_up
        self._store = store
        self._interval = interval
        self._batch = batch
        self._page = page
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()
        self._idle = asyncio.Event()
        self._dormant = False
        self._task: asyncio.Task[None] | None = None
        self.catch_ups = 0  # catch-ups run (pages read, the empty ones included)

    def recorded(self, key: str, event: Event) -> None:
        """A handler of recorded events (a plain function: it only sets a flag)."""
        if not self._dormant and not self._wake.is_set():
            self._idle.clear()
            self._wake.set()

    def wake(self) -> None:
        """Catch up now (no batching wait), e.g. a subscription was just made."""
        self._idle.clear()
        self._hurry.set()
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
            self._hurry.clear()
            try:
                self.catch_ups += 1
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
            self._dormant = handled is None
            if handled and self._then is not None:
                done = self._then()
                if done is not None:
                    await done
            if handled and handled >= self._page:
                continue  # a full page: more is waiting
            if not self._wake.is_set():
                self._idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            if self._wake.is_set() and not self._hurry.is_set():
                # A save woke it: let the rest of the burst be saved first.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self._batch)
