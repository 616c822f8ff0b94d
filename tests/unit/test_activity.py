"""SessionActivity: the log's events as rows for the console, and the last hour's pairings
per owner, fed by the sessions read model's projection (a real memory store and rows; the
clock is a fake)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.store.memory_rows import MemorySessionRows
from domain.application.activity import SessionActivity
from domain.application.ports import SessionRow
from domain.application.session_rows import SessionsProjection
from domain.application.sessions import DeviceSessions, Event, IntegrityError
from domain.model.session import DisconnectReason, SessionState

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


class Log:
    """A memory store whose read model hands each saved page's changes on."""

    def __init__(self) -> None:
        self.sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.rows = MemorySessionRows()
        self.changes: deque[tuple[Event, SessionRow]] = deque()
        self.projection = SessionsProjection(self.sessions, self.rows, changes=self.changes)

    def pairing(self, key: str, owner: str = "alice", scanned: bool = True) -> None:
        self.sessions.create(key, key.title(), "simulator", owner)
        self.sessions.update(key, lambda s: s.issue_qr("2@ref,noise,identity,secret", 20, T0))
        if scanned:
            self.sessions.update(key, lambda s: s.authenticate())
            self.sessions.update(key, lambda s: s.mark_ready())
        else:
            self.sessions.update(key, lambda s: s.disconnect(DisconnectReason.QR_EXPIRED))

    async def follow(self, activity: SessionActivity) -> None:
        while self.projection.catch_up():
            page = list(self.changes)
            self.changes.clear()
            await activity.observe(page)


async def test_each_event_reaches_the_listeners_as_the_row_after_it() -> None:
    log, activity = Log(), SessionActivity(Clock())
    heard: list[SessionRow] = []

    async def listener(row: SessionRow) -> None:
        heard.append(row)

    async def broken(row: SessionRow) -> None:
        raise RuntimeError("a listener that fails")

    activity.listen(broken)  # does not keep the others from hearing
    activity.listen(listener)
    log.pairing("phone")
    await log.follow(activity)
    assert [(row.state, row.version) for row in heard] == [
        (SessionState.CREATED, 1),
        (SessionState.QR, 2),
        (SessionState.AUTHENTICATED, 3),
        (SessionState.READY, 4),
    ]
    assert {(row.key, row.owner, row.name) for row in heard} == {("phone", "alice", "Phone")}


async def test_the_last_hour_s_pairings_per_owner() -> None:
    log, clock = Log(), Clock()
    activity = SessionActivity(clock)
    log.pairing("a")
    log.pairing("b", scanned=False)
    log.pairing("c", owner="bob")
    await log.follow(activity)
    recent = activity.recent("alice")
    assert (recent.started, recent.completed, recent.expired) == (2, 1, 1)
    assert recent.since == T0  # the process started less than an hour ago
    assert (activity.recent("bob").started, activity.recent("carol").started) == (1, 0)
    clock.at = datetime.now(UTC) + timedelta(hours=1, seconds=1)  # events carry their own time
    later = activity.recent("alice")
    assert (later.started, later.completed, later.expired) == (0, 0, 0)
    assert later.since == clock.at - timedelta(hours=1)


class MovedOnce(MemorySessionRows):
    """Rows whose position another process moves on once, under the first save."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    def save(self, rows: Any, previous: int, position: int, extra: Any = ()) -> None:
        if not self.refused:
            self.refused = True
            raise IntegrityError("moved past")
        super().save(rows, previous, position, extra)


async def test_a_page_is_handed_on_only_once_saved() -> None:
    log = Log()
    log.rows = MovedOnce()
    log.projection = SessionsProjection(log.sessions, log.rows, changes=log.changes)
    log.pairing("k")
    with pytest.raises(IntegrityError):
        log.projection.catch_up()
    assert not log.changes  # the refused page told nobody
    assert log.projection.catch_up() == 4  # read again (LogFollower's retry)
    assert [event.originator_version for event, _ in log.changes] == [1, 2, 3, 4]
