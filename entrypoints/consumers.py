"""The consumers that follow the notification log from a tracked position (the sessions
read model; webhooks), wired here and started with the server."""

from __future__ import annotations

import logging
import random
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TextIO

from adapters.clock import SystemClock
from adapters.metrics import PairgateMetrics
from adapters.store.config import StoreConfig, postgres_conninfo
from adapters.store.sealing import Sealer
from adapters.store.session_rows import session_rows
from adapters.store.webhook_outbox import webhook_outbox
from adapters.store.work_lease import PostgresWorkLease, SoleWorker
from adapters.webhooks.messages import EVENT_TYPES, new_secret, render
from adapters.webhooks.metrics import WebhookMetrics
from adapters.webhooks.sender import AddressPolicy, HttpSender
from domain.application.activity import SessionActivity
from domain.application.follow import LogFollower
from domain.application.ports import Clock, SessionRow
from domain.application.session_index import SessionRowsIndex
from domain.application.session_rows import SessionsProjection
from domain.application.sessions import DeviceSessions, Event
from domain.application.store_calls import StoreAccess
from domain.application.webhook_delivery import WebhookDispatcher, WebhookWorker, WorkLease
from domain.application.webhooks import Outbox, RetryPolicy, WebhookStore, WebhookSubscriptions
from entrypoints.settings import Settings

log = logging.getLogger("pairgate")
THREADS = "pairgate-log"  # the log consumers' thread pools (each made on demand)
# The sessions read model catches up once a second at most (a list that must show this
# process's saves skips the wait), up to 500 events a page: fewer, larger transactions,
# and a session's events of that second make one upsert. (The webhooks' outbox keeps
# LogFollower's 0.2 s: deliveries should not wait.)
READ_MODEL_BATCH = 1.0
READ_MODEL_PAGE = 500


@dataclass
class Webhooks:
    subscriptions: WebhookSubscriptions
    worker: WebhookWorker
    sender: HttpSender
    metrics: WebhookMetrics


@dataclass
class LogConsumers:
    index: SessionRowsIndex
    activity: SessionActivity  # what consoles watch, fed by the read model's follower
    followers: list[LogFollower] = field(default_factory=list)
    webhooks: Webhooks | None = None
    executors: list[ThreadPoolExecutor] = field(default_factory=list)

    @property
    def wakers(self) -> list[LogFollower]:
        """Every follower a save should wake (the webhooks' runs only under its lease)."""
        return self.followers + ([self.webhooks.worker.follower] if self.webhooks else [])

    def start(self) -> None:
        for follower in self.followers:
            follower.start()
        if self.webhooks is not None:
            self.webhooks.worker.start()

    async def pause(self) -> None:
        """While a stop records its devices: the sessions read model's follower stops (it
        would take the store's write lock and the interpreter from the stop). The next
        start reads the log's tail it leaves, and it goes on from its tracked position."""
        for follower in self.followers:
            await follower.stop()

    async def stop(self) -> None:
        if self.webhooks is not None:
            await self.webhooks.worker.stop()
            await self.webhooks.sender.close()
        for follower in self.followers:
            await follower.stop()
        for executor in self.executors:
            executor.shutdown(wait=True)


def log_consumers(
    settings: Settings,
    store: StoreConfig,
    sessions: DeviceSessions,
    metrics: PairgateMetrics,
    clock: Clock | None = None,
) -> LogConsumers:
    """Each follower gets a thread of its own: however far behind it is, it takes none of
    the threads (nor the event loop) that pairings use."""
    sealer = Sealer(store.cipher_key)
    rows = session_rows(sessions, sealer)
    reads = _threads(1, "index")
    index = SessionRowsIndex(rows, StoreAccess(sessions, reads, metrics.timed_store))
    changes: deque[tuple[Event, SessionRow]] = deque()
    projection = SessionsProjection(sessions, rows, page=READ_MODEL_PAGE, changes=changes)
    activity = SessionActivity(clock or SystemClock())

    async def hand_on() -> None:  # on the loop, after each page: its changes, in order
        page = list(changes)
        changes.clear()
        await activity.observe(page)

    own = _threads(1, "follow-sessions")
    follower = LogFollower(
        "sessions read model",
        projection.catch_up,
        StoreAccess(sessions, own, metrics.timed_store),
        settings.follow_interval,
        then=hand_on,
        batch=READ_MODEL_BATCH,
        page=projection.page,
    )
    index.caught_up = follower.caught_up
    consumers = LogConsumers(index, activity, [follower], executors=[reads, own])
    outbox = webhook_outbox(sessions, sealer)
    if outbox is None:
        log.info("webhooks are off: the memory store keeps no outbox")
        return consumers
    threads = [_threads(2, "webhooks"), _threads(1, "follow-webhooks")]
    consumers.executors += threads
    consumers.webhooks = _webhooks(
        settings, store, sessions, metrics, outbox, clock or SystemClock(), threads
    )
    return consumers


def _threads(count: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(count, thread_name_prefix=f"{THREADS}-{name}")


def _webhooks(
    settings: Settings,
    store: StoreConfig,
    sessions: DeviceSessions,
    metrics: PairgateMetrics,
    outbox: WebhookStore,
    clock: Clock,
    threads: list[ThreadPoolExecutor],
) -> Webhooks:
    """`threads`: the outbox's (sending, the REST routes), and its follower's own."""
    observer = WebhookMetrics(metrics.registry)
    access = StoreAccess(sessions, threads[0], metrics.timed_store)
    filling = Outbox(outbox, render, clock)
    projection = SessionsProjection(sessions, outbox, also=filling.deliveries)

    def fill() -> int | None:
        if not filling.refresh():
            # No subscription: nothing to fill (the first one restarts the outbox from
            # the read model's position: WebhookStore.add_subscription).
            observer.lag.set(0)
            observer.backlog.set(0)
            return None
        handled = projection.catch_up()
        head = sessions.recorder.max_notification_id() or 0
        observer.lag.set(head - outbox.position())
        observer.backlog.set(outbox.backlog())
        return handled

    policy = AddressPolicy(settings.webhook_allowed_networks)
    sender = HttpSender(policy, clock, settings.webhook_timeout)
    retry = RetryPolicy(
        random.uniform,
        settings.webhook_retry_delay,
        settings.webhook_retry_max_delay,
        settings.webhook_retry_for,
    )

    def dispatcher() -> WebhookDispatcher:
        return WebhookDispatcher(
            outbox,
            access,
            sender,
            clock,
            retry,
            observer,
            per_subscription=settings.webhook_concurrency,
        )

    worker: WebhookWorker
    follower = LogFollower(
        "webhooks outbox",
        fill,
        StoreAccess(sessions, threads[1], metrics.timed_store),
        settings.follow_interval,
        then=lambda: worker.dispatching.wake() if worker.dispatching else None,
        page=projection.page,
    )
    lease: WorkLease = SoleWorker()
    if store.kind == "postgres":
        conninfo, schema = postgres_conninfo(store)
        lease = PostgresWorkLease(conninfo, "webhooks", schema)
    worker = WebhookWorker(lease, follower, dispatcher, settings.follow_interval)
    subscriptions = WebhookSubscriptions(
        outbox, access, clock, policy.check, EVENT_TYPES, new_secret, made=follower.wake
    )
    return Webhooks(subscriptions, worker, sender, observer)


def rebuild_index(settings: Settings, out: TextIO) -> int:
    """`pairgate reindex`: forget the sessions read model and project the whole log again
    (a running server's projection starts over with it). An existing store only."""
    from adapters.store.config import open_store

    store = settings.store_config()
    sessions = open_store(store, create=False)
    try:
        rows = session_rows(sessions, Sealer(store.cipher_key))
        position = SessionsProjection(sessions, rows).rebuild()
    finally:
        sessions.close()
    out.write(f"sessions read model rebuilt up to log position {position}\n")
    return 0
