"""LogFollower: a burst of saves costs a few catch-ups, not one each; whoever waits for
the follower (a list's freshness) skips the batching wait; a follower with nothing to
follow is not woken by saves at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from adapters.store.memory_rows import MemorySessionRows
from domain.application.follow import LogFollower
from domain.application.session_rows import SessionsProjection
from domain.application.sessions import Change, DeviceSessions
from domain.application.store_calls import StoreAccess
from domain.model.session import SessionState, session_id

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Counted:
    """A catch-up that counts its calls."""

    def __init__(self, catch_up: Callable[[], int | None]) -> None:
        self.calls = 0
        self._catch_up = catch_up

    def __call__(self) -> int | None:
        self.calls += 1
        return self._catch_up()


@pytest.fixture
async def thread() -> AsyncIterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as executor:
        yield executor


def store() -> DeviceSessions:
    return DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


async def pairings(
    sessions: DeviceSessions, follower: LogFollower, count: int, prefix: str = "burst"
) -> int:
    """`count` pairings to ready, saved as a busy server saves them (a few milliseconds
    apart), each event handed to the follower as the composition root hands it; how
    many events were saved."""
    saved = 0

    async def record(change: Change) -> None:
        nonlocal saved
        for event in change.events:
            follower.recorded(change.session.key, event)
            saved += 1

    for index in range(count):
        key = f"{prefix}-{index}"
        await record(sessions.create(key, "Phone", "simulator", "alice"))
        await record(sessions.update(key, lambda s: s.issue_qr("2@code", 20, NOW)))
        await asyncio.sleep(0.001)
        await record(sessions.update(key, lambda s: s.authenticate()))
        await record(sessions.update(key, lambda s: s.mark_ready()))
        await asyncio.sleep(0.001)
    return saved


async def test_a_burst_of_saves_is_caught_up_in_a_few_passes_and_lists_stay_fresh(
    thread: ThreadPoolExecutor,
) -> None:
    sessions, rows = store(), MemorySessionRows()
    projection = SessionsProjection(sessions, rows)
    catch_up = Counted(projection.catch_up)
    access = StoreAccess(sessions, thread)
    follower = LogFollower("rows", catch_up, access, 60.0, batch=0.05, page=projection.page)
    follower.start()
    try:
        await asyncio.wait_for(follower.caught_up(), 5)
        before = catch_up.calls
        saved = await pairings(sessions, follower, 60)
        await asyncio.wait_for(follower.caught_up(), 5)
        passes = catch_up.calls - before
        # One pass per save before batching; now a few per batching window (and pages).
        assert saved == 240 and passes <= 24, passes
        assert rows.position() == sessions.recorder.max_notification_id()
        last = rows.rows([session_id("burst-59")])[session_id("burst-59")]
        assert last.state is SessionState.READY and last.version == 4

        # A wait for the follower does not sit out the batching window (a list promises
        # this process's saves within 2 s): here the window is far longer than that.
        slow = LogFollower("rows", projection.catch_up, access, 60.0, batch=30.0)
        await follower.stop()
        slow.start()
        await pairings(sessions, slow, 1, "slow")
        await asyncio.wait_for(slow.caught_up(), 2)
        assert rows.position() == sessions.recorder.max_notification_id()
        await slow.stop()
    finally:
        await follower.stop()


async def test_a_follower_with_nothing_to_follow_is_not_woken_by_saves(
    thread: ThreadPoolExecutor,
) -> None:
    sessions, rows = store(), MemorySessionRows()
    projection = SessionsProjection(sessions, rows)
    wanted = False

    def fill() -> int | None:
        # As the webhooks' outbox does: nothing to fill while nobody subscribed.
        return projection.catch_up() if wanted else None

    catch_up = Counted(fill)
    follower = LogFollower("outbox", catch_up, StoreAccess(sessions, thread), 60.0, batch=0.01)
    follower.start()
    try:
        await asyncio.wait_for(follower.caught_up(), 5)
        before = catch_up.calls
        await pairings(sessions, follower, 20)
        await asyncio.sleep(0.05)
        assert catch_up.calls == before and rows.position() == 0  # saves cost it nothing

        wanted = True
        follower.wake()  # a subscription was made
        await asyncio.wait_for(follower.caught_up(), 5)
        assert rows.position() == sessions.recorder.max_notification_id()
        calls = catch_up.calls
        await pairings(sessions, follower, 1, "late")
        await asyncio.wait_for(follower.caught_up(), 5)
        assert catch_up.calls > calls  # following again
        assert rows.position() == sessions.recorder.max_notification_id()
    finally:
        await follower.stop()
