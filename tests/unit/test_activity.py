"""SessionActivity: recorded events as rows for the console, and the last hour's pairings
per owner (the events are real aggregates' events; the clock and the lookup are fakes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.application.activity import SessionActivity
from domain.application.ports import SessionRow
from domain.model.session import DeviceSession, DisconnectReason, SessionState

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class Lookups:
    sessions: dict[str, DeviceSession] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def __call__(self, key: str) -> DeviceSession | None:
        self.asked.append(key)
        return self.sessions.get(key)


def pairing(key: str, owner: str = "alice", scanned: bool = True) -> DeviceSession:
    session = DeviceSession(key=key, name=key.title(), engine="simulator", owner=owner, proxy=None)
    session.issue_qr("2@ref,noise,identity,secret", 20, T0)
    if scanned:
        session.authenticate()
        session.mark_ready()
    else:
        session.disconnect(DisconnectReason.QR_EXPIRED)
    return session


async def replay(activity: SessionActivity, session: DeviceSession) -> None:
    for event in session.collect_events():
        await activity.recorded(session.key, event)


async def test_each_event_reaches_the_listeners_as_the_row_after_it() -> None:
    activity = SessionActivity(Clock(), Lookups())
    heard: list[SessionRow] = []

    async def listener(row: SessionRow) -> None:
        heard.append(row)

    async def broken(row: SessionRow) -> None:
        raise RuntimeError("a listener that fails")

    activity.listen(broken)  # does not keep the others from hearing
    activity.listen(listener)
    await replay(activity, pairing("phone"))
    assert [(row.state, row.version) for row in heard] == [
        (SessionState.CREATED, 1),
        (SessionState.QR, 2),
        (SessionState.AUTHENTICATED, 3),
        (SessionState.READY, 4),
    ]
    assert {(row.key, row.owner, row.name) for row in heard} == {("phone", "alice", "Phone")}


async def test_a_key_first_seen_mid_stream_is_read_once_then_projected() -> None:
    lookups = Lookups()
    activity = SessionActivity(Clock(), lookups)
    heard: list[SessionRow] = []

    async def listener(row: SessionRow) -> None:
        heard.append(row)

    activity.listen(listener)
    session = pairing("older")
    events = session.collect_events()  # recorded before this process started
    lookups.sessions["older"] = session
    session.disconnect(DisconnectReason.CONNECTION_LOST)
    for event in session.collect_events():
        await activity.recorded("older", event)
        await activity.recorded("older", event)  # again: already reflected, not heard
    assert lookups.asked == ["older"]
    assert [(row.state, row.reason, row.version) for row in heard] == [
        (SessionState.DISCONNECTED, DisconnectReason.CONNECTION_LOST, len(events) + 1)
    ]


async def test_the_last_hour_s_pairings_per_owner() -> None:
    clock = Clock()
    activity = SessionActivity(clock, Lookups())
    await replay(activity, pairing("a"))
    await replay(activity, pairing("b", scanned=False))
    await replay(activity, pairing("c", owner="bob"))
    recent = activity.recent("alice")
    assert (recent.started, recent.completed, recent.expired) == (2, 1, 1)
    assert recent.since == T0  # the process started less than an hour ago
    assert (activity.recent("bob").started, activity.recent("carol").started) == (1, 0)
    clock.at = datetime.now(UTC) + timedelta(hours=1, seconds=1)  # events carry their own time
    later = activity.recent("alice")
    assert (later.started, later.completed, later.expired) == (0, 0, 0)
    assert later.since == clock.at - timedelta(hours=1)


async def test_only_so_many_rows_are_remembered() -> None:
    lookups = Lookups()
    activity = SessionActivity(Clock(), lookups, remembered=2)
    sessions = [pairing(key) for key in ("a", "b", "c")]
    for session in sessions:
        await activity.recorded(session.key, session.collect_events()[0])
    lookups.sessions["a"] = sessions[0]
    sessions[0].disconnect(DisconnectReason.USER_LOGGED_OUT)
    await activity.recorded("a", sessions[0].collect_events()[0])
    assert lookups.asked == ["a"]  # forgotten as the oldest: read again


async def test_a_gap_in_the_versions_is_read_from_the_store() -> None:
    """Events recorded by another process (or not handed to this one) in between."""
    lookups = Lookups()
    activity = SessionActivity(Clock(), lookups)
    heard: list[SessionRow] = []

    async def listener(row: SessionRow) -> None:
        heard.append(row)

    activity.listen(listener)
    session = pairing("shared")
    created, _, _, ready = session.collect_events()
    await activity.recorded("shared", created)
    lookups.sessions["shared"] = session
    await activity.recorded("shared", ready)  # versions 2 and 3 never came here
    assert lookups.asked == ["shared"]
    assert [(row.state, row.version) for row in heard] == [
        (SessionState.CREATED, 1),
        (SessionState.READY, 4),
    ]


async def test_a_failing_lookup_is_logged_not_raised() -> None:
    async def broken(key: str) -> DeviceSession | None:
        raise OSError("the store is away")

    activity = SessionActivity(Clock(), broken)
    session = pairing("away")
    await activity.recorded("away", session.collect_events()[-1])  # no exception
    assert activity.recent("alice").completed == 0
