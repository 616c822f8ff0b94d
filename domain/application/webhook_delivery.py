"""Sending the outbox: due deliveries go out concurrently, each subscription with its own
cap (a slow or dead receiver fills only its own), each key's in order (only the oldest
pending delivery of a subscription's key is ever due). Only the process holding the
webhooks' lease fills and sends the outbox, so no event goes out from two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Protocol

from domain.application.follow import LogFollower
from domain.application.ports import Clock
from domain.application.store_calls import StoreAccess
from domain.application.webhooks import Delivery, Outgoing, RetryPolicy, WebhookStore

log = logging.getLogger(__name__)

DUE_PAGE = 256


class Sender(Protocol):
    async def __call__(self, outgoing: Outgoing) -> str | None:
        """Send one delivery: None when the receiver took it (2xx), else what went wrong
        (never the secret)."""
        ...


class DeliveryObserver(Protocol):
    def delivered(self, delivery: Delivery) -> None: ...

    def failed(self, delivery: Delivery) -> None:
        """`delivery` as it is after the failure (dead: given up)."""
        ...


class WorkLease(Protocol):
    """The one process that runs the webhooks (a sole process always holds it)."""

    async def acquire(self) -> bool: ...

    async def held(self) -> bool:
        """Whether it is still held (a lost connection loses it)."""
        ...

    async def release(self) -> None: ...


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        access: StoreAccess,
        send: Sender,
        clock: Clock,
        policy: RetryPolicy,
        observer: DeliveryObserver,
        *,
        per_subscription: int = 8,
        interval: float = 0.5,
    ) -> None:
        self._store = store
        self._access = access
        self._send = send
        self._clock = clock
        self._policy = policy
        self._observer = observer
        self._per_subscription = per_subscription
        self._interval = interval
        self._wake = asyncio.Event()
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._busy: dict[str, int] = {}
        self._finished: set[int] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                try:
                    started = await self._start_due()
                except Exception:
                    log.exception("webhooks: reading the outbox failed")
                    started = 0
                if started < DUE_PAGE:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._interval)
        finally:
            tasks = list(self._in_flight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _start_due(self) -> int:
        # Deliveries finished while the outbox is read may still be in what it returns.
        self._finished = set()
        due = await self._access.read(self._store.due, self._clock.now(), DUE_PAGE)
        started = 0
        for outgoing in due:
            delivery = outgoing.delivery
            queue = (delivery.subscription, delivery.key)
            if queue in self._in_flight or delivery.id in self._finished:
                continue
            if self._busy.get(delivery.subscription, 0) >= self._per_subscription:
                continue
            self._busy[delivery.subscription] = self._busy.get(delivery.subscription, 0) + 1
            task = asyncio.create_task(self._deliver(outgoing), name=f"webhook:{delivery.id}")
            self._in_flight[queue] = task
            task.add_done_callback(functools.partial(self._done, queue, delivery.id))
            started += 1
        return started

    def _done(self, queue: tuple[str, str], delivery_id: int, _: asyncio.Task[None]) -> None:
        self._in_flight.pop(queue, None)
        self._finished.add(delivery_id)
        left = self._busy.get(queue[0], 1) - 1
        if left:
            self._busy[queue[0]] = left
        else:
            self._busy.pop(queue[0], None)
        self.wake()  # the key's next delivery may be due

    async def _deliver(self, outgoing: Outgoing) -> None:
        delivery = outgoing.delivery
        try:
            error = await self._send(outgoing)
        except Exception as unexpected:  # a sender bug must not stop the key's queue
            log.exception("webhooks: sending %s failed", delivery.message_id)
            error = type(unexpected).__name__
        try:
            if error is None:
                await self._access.read(self._store.delivered, delivery.id)
                self._observer.delivered(delivery)
                return
            failed = self._policy.after_failure(delivery, error, self._clock.now())
            await self._access.read(self._store.failed, failed)
            self._observer.failed(failed)
        except Exception:
            # Not recorded: the delivery stays due and goes out again (at least once).
            log.exception("webhooks: recording the outcome of %s failed", delivery.message_id)


class WebhookWorker:
    """Fills and sends the outbox while this process holds the webhooks' lease; looks
    for the lease again every `interval` seconds while another process holds it."""

    def __init__(
        self,
        lease: WorkLease,
        follower: LogFollower,
        dispatcher: Callable[[], WebhookDispatcher],
        interval: float,
    ) -> None:
        self._lease = lease
        self.follower = follower
        self._dispatcher = dispatcher
        self._interval = interval
        self.dispatching: WebhookDispatcher | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._lease.release()

    async def _run(self) -> None:
        while True:
            try:
                if await self._lease.acquire():
                    await self._while_held()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhooks: the lease failed; trying again")
            await asyncio.sleep(self._interval)

    async def _while_held(self) -> None:
        self.dispatching = dispatcher = self._dispatcher()
        self.follower.start()
        sending = asyncio.create_task(dispatcher.run(), name="webhooks:send")
        try:
            while await self._lease.held():
                await asyncio.sleep(self._interval)
            log.warning("webhooks: lost the lease; another process takes over")
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await self.follower.stop()
            self.dispatching = None
            with contextlib.suppress(Exception):
                await self._lease.release()
