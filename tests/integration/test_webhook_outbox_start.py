"""The webhooks' outbox without subscriptions: this process's saves do not wake its
follower (no work per event), and the first subscription starts the outbox from the
sessions read model's rows and position, so what follows it is delivered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from adapters.metrics import PairgateMetrics
from adapters.store.config import open_store
from adapters.store.sealing import Sealer
from adapters.store.session_rows import session_rows
from adapters.store.webhook_outbox import webhook_outbox
from domain.application.session_rows import Filters, SessionRowStore
from domain.application.sessions import Change, DeviceSessions
from domain.application.webhooks import WebhookStore
from domain.model.session import SessionState
from entrypoints.consumers import LogConsumers, log_consumers
from entrypoints.settings import Settings
from tests.helpers import unique_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass
class World:
    consumers: LogConsumers
    sessions: DeviceSessions
    read_model: SessionRowStore  # the same tables the consumers use, read beside them
    outbox: WebhookStore


@pytest.fixture
async def world(store_settings: dict[str, object]) -> AsyncIterator[World]:
    if "database_url" in store_settings and "cipher_key" not in store_settings:
        pytest.skip("PostgreSQL once: sealed (the copy carries sealed columns as they are)")
    settings = Settings(simulate=True, webhook_allowed_networks=("127.0.0.1/32",),
                        **store_settings)  # fmt: skip
    store = settings.store_config()
    sessions = open_store(store)
    consumers = log_consumers(settings, store, sessions, PairgateMetrics())
    sealer = Sealer(store.cipher_key)
    outbox = webhook_outbox(sessions, sealer)
    assert outbox is not None
    consumers.start()
    try:
        yield World(consumers, sessions, session_rows(sessions, sealer), outbox)
    finally:
        await consumers.stop()
        sessions.close()


async def pairing(world: World) -> str:
    """A pairing to ready, each event handed to the followers as the bus hands it."""
    key, sessions = unique_key("outbox"), world.sessions

    async def record(change: Change) -> None:
        for event in change.events:
            for follower in world.consumers.wakers:
                follower.recorded(key, event)

    await record(sessions.create(key, "Phone", "simulator", "alice"))
    await record(sessions.update(key, lambda s: s.issue_qr("2@code", 20, NOW)))
    await record(sessions.update(key, lambda s: s.authenticate()))
    await record(sessions.update(key, lambda s: s.mark_ready()))
    return key


async def test_no_work_without_subscriptions_then_the_first_one_misses_nothing(
    world: World,
) -> None:
    webhooks = world.consumers.webhooks
    assert webhooks is not None
    filling = webhooks.worker.follower
    for _ in range(100):  # the sole process takes the lease and starts the follower
        if filling.catch_ups:
            break
        await asyncio.sleep(0.02)
    await asyncio.wait_for(filling.caught_up(), 5)
    idle = filling.catch_ups
    for _ in range(5):
        await pairing(world)
    await asyncio.sleep(0.3)  # past the batching window
    assert filling.catch_ups == idle  # 20 saves woke nothing
    [rows] = world.consumers.followers
    await asyncio.wait_for(rows.caught_up(), 5)
    before = world.read_model.select(Filters("alice"), None, 100)
    assert len(before) == 5 and all(r.state is SessionState.READY for r in before)

    made = await webhooks.subscriptions.create(
        "alice", "http://127.0.0.1:9/hook", ["session.ready"], None, None
    )
    # Its own transaction gave the outbox the read model's rows and position.
    assert world.outbox.position() == world.read_model.position()
    assert world.outbox.select(Filters("alice"), None, 100) == before

    late = await pairing(world)
    await asyncio.wait_for(filling.caught_up(), 5)
    assert filling.catch_ups > idle
    assert world.outbox.position() == world.sessions.recorder.max_notification_id()
    # One delivery: the pairing after the subscription's `ready` (none for the five
    # before it). The receiver refuses it, so it waits for its retry.
    due = world.outbox.due(LATER, 100)
    assert [(o.delivery.subscription, o.delivery.key) for o in due] == [(made.id, late)]
