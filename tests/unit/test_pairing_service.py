"""PairingService with fakes behind every port and a real DeviceSessions in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.application.dispatch import EventBus, Handler
from domain.application.pairing import PairingService, Standing, Timeouts
from domain.application.ports import DeviceLeases, EngineEvents
from domain.application.sessions import DeviceSessions
from domain.application.store_calls import StoreAccess
from domain.model.errors import (
    EngineUnavailableError,
    InvalidTransitionError,
    SessionNotFoundError,
    UnknownEngineError,
)
from domain.model.session import DeviceSession, DisconnectReason, SessionState
from tests.unit.fakes import FakeEngine

R = DisconnectReason
KEY = "device123"


@dataclass
class FakeCatalog:
    engines: dict[str, FakeEngine]

    def resolve(self, name: str) -> FakeEngine:
        if name not in self.engines:
            raise UnknownEngineError(f"engine {name!r} is not available")
        return self.engines[name]

    async def dialable(self, proxy: str) -> str:
        return proxy  # (which proxies may be dialed: tests/integration/test_proxy.py)


@dataclass
class FakeNotifier:
    """Subscriptions, and a handler of every recorded event (as SocketIoNotifier is)."""

    log: list[tuple[str, str, Any]] = field(default_factory=list)

    async def subscribe(self, key: str, subscriber: str) -> None:
        self.log.append(("subscribe", key, subscriber))

    async def recorded(self, key: str, event: Any) -> None:
        self.log.append(("recorded", key, _describe(event)))

    async def unsubscribe_all(self, key: str) -> None:
        self.log.append(("unsubscribe_all", key, None))

    def published(self, key: str = KEY) -> list[str]:
        return [event for kind, k, event in self.log if kind == "recorded" and k == key]


def _describe(event: Any) -> str:
    name = type(event).__name__
    return f"{name}({event.reason})" if name == "Disconnected" else name


@dataclass
class FakeClock:
    current: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current


@dataclass
class World:
    service: PairingService
    engine: FakeEngine  # serves "baileys"
    other: FakeEngine  # serves "simulator"
    notifier: FakeNotifier
    clock: FakeClock
    sessions: DeviceSessions

    def history(self, key: str = KEY) -> list[str]:
        return [_describe(e) for e in self.sessions.history(key)]

    def state(self, key: str = KEY) -> SessionState:
        return self.sessions.get(key).state


def build(
    expiry_grace: float = 5.0,
    start_timeout: float = 60.0,
    leases: DeviceLeases | None = None,
    handlers: Sequence[Handler] = (),
    link_ended: bool = True,
    default_proxy: str | None = None,
) -> World:
    engine, other, notifier, clock = FakeEngine(), FakeEngine("other"), FakeNotifier(), FakeClock()
    sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    catalog = FakeCatalog({"baileys": engine, "simulator": other})
    bus = EventBus()
    service = PairingService(
        StoreAccess(sessions),
        catalog,
        notifier,
        clock,
        bus=bus,
        timeouts=Timeouts(expiry_grace, start_timeout),
        leases=leases,
        default_proxy=default_proxy,
    )
    bus.register(  # as bootstrap's recorded_event_handlers does
        {
            DeviceSession.Disconnected: [service.link_ended] if link_ended else [],
            DeviceSession.Event: [notifier.recorded, *handlers],
        }
    )
    return World(service, engine, other, notifier, clock, sessions)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    built = build()
    yield built
    await built.service.shutdown()


@pytest.fixture
async def impatient() -> AsyncIterator[World]:
    """A world whose watchdog fires 0.05 s after a code expires or a start shows no code."""
    built = build(expiry_grace=0.05, start_timeout=0.05)
    yield built
    await built.service.shutdown()


async def create(world: World, key: str = KEY, owner: str = "alice", sid: str = "sid-1") -> Any:
    return await world.service.create(key, "My Device", "baileys", owner, sid)


async def pair(world: World, key: str = KEY) -> None:
    await create(world, key)
    await world.engine.events[key].qr_issued(key, "code-1", 60)
    await world.engine.events[key].paired(key)
    await world.engine.events[key].connected(key)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `condition` until true, failing after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_create_subscribes_then_publishes_then_starts_one_engine(world: World) -> None:
    outcome = await create(world)

    assert outcome.joined is False and outcome.session.state is SessionState.CREATED
    assert world.history() == ["SessionCreated"]
    assert world.notifier.log == [
        ("subscribe", KEY, "sid-1"),
        ("recorded", KEY, "SessionCreated"),
    ]
    assert world.engine.told(KEY) == ["start"]
    assert world.engine.events[KEY] is world.service.reports
    assert world.service.running_keys == {KEY}


async def test_an_engine_qr_is_recorded_and_published(world: World) -> None:
    await create(world)
    world.clock.current = datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC)
    await world.engine.events[KEY].qr_issued(KEY, "code-1", 60)

    assert world.notifier.published() == ["SessionCreated", "QrIssued"]
    session = world.sessions.get(KEY)
    assert (session.state, session.qr_code) == (SessionState.QR, "code-1")
    assert session.qr_expires_at == datetime(2031, 2, 3, 4, 6, 6, tzinfo=UTC)


async def test_the_owner_joins_a_live_key_without_a_second_engine(world: World) -> None:
    await create(world, sid="sid-1")
    outcome = await create(world, sid="sid-2")
    joined = await world.service.join(KEY, "alice", "sid-3")

    assert outcome.joined is True and joined.state is SessionState.CREATED
    assert [entry[2] for entry in world.notifier.log[-2:]] == ["sid-2", "sid-3"]
    assert world.engine.told(KEY) == ["start"]
    assert world.history() == ["SessionCreated"]
    with pytest.raises(SessionNotFoundError) as refused:
        await world.service.join("nobody", "alice", "sid-2")
    assert refused.value.code == "not_found"


INTRUSIONS: dict[str, Callable[[World], Awaitable[Any]]] = {
    "create": lambda world: create(world, owner="mallory", sid="sid-m"),
    "join": lambda world: world.service.join(KEY, "mallory", "sid-m"),
    "logout": lambda world: world.service.logout(KEY, "mallory"),
    "delete": lambda world: world.service.delete(KEY, "mallory"),
}


@pytest.mark.parametrize("request_", INTRUSIONS)
async def test_another_owners_key_is_not_found(world: World, request_: str) -> None:
    await pair(world)
    log = list(world.notifier.log)

    with pytest.raises(SessionNotFoundError) as refused:
        await INTRUSIONS[request_](world)

    assert refused.value.code == "not_found"
    assert refused.value.message == SessionNotFoundError(KEY).message
    assert world.history() == ["SessionCreated", "QrIssued", "Authenticated", "Ready"]
    assert world.notifier.log == log
    assert world.engine.told(KEY) == ["start"]


async def test_an_expired_qr_ends_the_pairing_and_discards_the_engine(world: World) -> None:
    await create(world)
    await world.engine.events[KEY].qr_issued(KEY, "code-1", 60)
    await world.engine.events[KEY].qr_expired(KEY)

    assert world.notifier.published()[-1] == "Disconnected(qr expired)"
    assert world.engine.told(KEY) == ["start", "discard"]
    assert world.service.running_keys == set()
    assert world.service.watched_keys == set()


async def test_pairing_authenticates_then_readies(world: World) -> None:
    await pair(world)

    assert world.notifier.published() == ["SessionCreated", "QrIssued", "Authenticated", "Ready"]
    session = world.sessions.get(KEY)
    assert session.state is SessionState.READY and session.holds_credentials


async def test_standing_of_a_running_key_matches_the_store_without_reading_it(
    world: World,
) -> None:
    """Every state a running device passes through, as the store would tell it; only keys
    this service does not run are read from the store."""
    reads = 0
    find = world.sessions.find

    def counted(key: str) -> Any:
        nonlocal reads
        reads += 1
        return find(key)

    world.sessions.find = counted  # type: ignore[method-assign]
    moves = [
        lambda events: events.qr_issued(KEY, "code-1", 60),
        lambda events: events.paired(KEY),
        lambda events: events.connected(KEY),
        lambda events: events.disconnected(KEY, R.CONNECTION_LOST),
    ]
    await create(world)
    for move in [None, *moves]:
        if move is not None:
            await move(world.engine.events[KEY])
        before = reads
        standing = await world.service.standing(KEY)
        assert reads == before
        stored = find(KEY)
        assert stored is not None and standing == Standing(stored.owner, stored.state)
        assert dict(world.service.running_states) == {KEY: stored.state}

    await world.service.logout(KEY, "alice")  # no longer runs here: read from the store
    assert dict(world.service.running_states) == {}
    before = reads
    assert await world.service.standing(KEY) == Standing("alice", SessionState.DISCONNECTED)
    assert await world.service.standing("nobody") is None
    assert reads == before + 2


async def test_a_paired_device_keeps_its_engine_through_a_lost_connection(world: World) -> None:
    await pair(world)
    await world.engine.events[KEY].disconnected(KEY, R.CONNECTION_LOST)

    assert world.state() is SessionState.DISCONNECTED
    assert world.engine.told(KEY) == ["start"]
    assert KEY in world.service.running_keys

    await world.engine.events[KEY].connected(KEY)
    assert world.notifier.published()[-2:] == ["Disconnected(connection lost)", "Ready"]
    assert world.state() is SessionState.READY


@pytest.mark.parametrize("reason", [R.CONNECTION_LOST, R.USER_LOGGED_OUT])
async def test_an_unpaired_or_unlinked_device_is_discarded(world: World, reason: R) -> None:
    await create(world)
    await world.engine.events[KEY].qr_issued(KEY, "code-1", 60)
    await world.engine.events[KEY].disconnected(KEY, reason)

    assert world.history()[-1] == f"Disconnected({reason})"
    assert world.engine.told(KEY) == ["start", "discard"]
    assert world.service.running_keys == set()


@pytest.mark.parametrize(
    ("end", "reason"), [("logout", R.USER_LOGGED_OUT), ("delete", R.SESSION_REVOKED)]
)
async def test_the_owner_ending_a_session_unlinks_it(world: World, end: str, reason: R) -> None:
    await pair(world)
    session = await getattr(world.service, end)(KEY, "alice")

    assert (session.state, session.reason) == (SessionState.DISCONNECTED, reason)
    assert world.notifier.published()[-1] == f"Disconnected({reason})"
    assert world.engine.told(KEY) == ["start", "logout"]
    assert world.service.running_keys == set()

    with pytest.raises(InvalidTransitionError) as refused:
        await getattr(world.service, end)(KEY, "alice")
    assert refused.value.code == "invalid_transition"
    assert world.history()[-1] == f"Disconnected({reason})"


@pytest.mark.parametrize(
    ("end", "reason"), [("logout", R.USER_LOGGED_OUT), ("delete", R.SESSION_REVOKED)]
)
async def test_the_owner_can_end_a_device_while_it_reconnects(
    world: World, end: str, reason: R
) -> None:
    await pair(world)
    await world.engine.events[KEY].disconnected(KEY, R.CONNECTION_LOST)
    assert KEY in world.service.running_keys  # still linked, and reconnecting

    session = await getattr(world.service, end)(KEY, "alice")

    assert (session.reason, session.holds_credentials) == (reason, False)
    assert world.history()[-2:] == ["Disconnected(connection lost)", f"Disconnected({reason})"]
    assert world.engine.told(KEY) == ["start", "logout"]
    assert world.service.running_keys == set()


@pytest.mark.parametrize(("engine", "told"), [("baileys", ["logout"]), ("gone-engine", [])])
async def test_ending_a_key_no_engine_runs_here_still_unlinks_it(
    world: World, engine: str, told: list[str]
) -> None:
    world.sessions.create(KEY, "My Device", engine, "alice")  # by a process that has gone
    world.sessions.update(KEY, lambda session: session.authenticate())

    await world.service.logout(KEY, "alice")

    assert world.history()[-1] == "Disconnected(user logged out)"
    assert world.engine.told(KEY) == told
    assert world.service.running_keys == set()


async def test_an_engine_that_cannot_start_leaves_a_lost_connection(world: World) -> None:
    world.engine.fail_start = OSError("no network")

    with pytest.raises(EngineUnavailableError) as refused:
        await create(world)

    assert refused.value.code == "engine_unavailable"
    assert world.history() == ["SessionCreated", "Disconnected(connection lost)"]
    assert world.notifier.published() == world.history()
    assert world.engine.told(KEY) == ["start", "discard"]
    assert world.service.running_keys == set()


async def test_the_watchdog_expires_a_qr_the_engine_went_quiet_on(impatient: World) -> None:
    world = impatient
    await create(world, key="quiet")
    await create(world, key="rotating")
    await world.engine.events["rotating"].qr_issued("rotating", "old", 0.05)
    await world.engine.events["rotating"].qr_issued("rotating", "new", 60)
    await world.engine.events["quiet"].qr_issued("quiet", "only", 0.05)

    await eventually(lambda: "Disconnected(qr expired)" in world.notifier.published("quiet"))

    assert world.history("quiet") == ["SessionCreated", "QrIssued", "Disconnected(qr expired)"]
    assert world.engine.told("quiet") == ["start", "discard"]
    assert world.sessions.get("rotating").qr_code == "new"
    assert world.state("rotating") is SessionState.QR


async def test_engine_reports_out_of_turn_are_ignored(world: World) -> None:
    await create(world)
    await world.engine.events[KEY].connected(KEY)  # the table refuses created -> ready
    assert world.history() == ["SessionCreated"] and KEY in world.service.running_keys

    await world.engine.events[KEY].qr_expired(KEY)
    await world.service.reports.paired(KEY)  # the key no longer runs here
    assert world.history() == ["SessionCreated", "Disconnected(qr expired)"]


async def test_reports_for_a_live_key_this_service_does_not_run_are_ignored(world: World) -> None:
    world.sessions.create(KEY, "My Device", "baileys", "alice")  # by another process

    await world.service.reports.qr_issued(KEY, "code", 60)
    await world.service.reports.paired(KEY)
    await world.service.reports.qr_issued("never-created", "code", 60)

    assert world.history() == ["SessionCreated"]
    assert world.notifier.log == []


async def test_create_on_a_disconnected_key_restarts_it(world: World) -> None:
    await create(world)
    await world.engine.events[KEY].qr_expired(KEY)
    outcome = await world.service.create(KEY, "Renamed", "simulator", "alice", "sid-2")

    assert outcome.joined is False
    assert (outcome.session.state, outcome.session.name) == (SessionState.CREATED, "Renamed")
    assert outcome.session.engine == "simulator"
    assert world.history() == ["SessionCreated", "Disconnected(qr expired)", "Restarted"]
    assert world.notifier.log[-2:] == [
        ("subscribe", KEY, "sid-2"),
        ("recorded", KEY, "Restarted"),
    ]
    assert world.engine.told(KEY) == ["start", "discard"]
    # A restart is a new pairing: the engine forgets any old link before it starts.
    assert world.other.told(KEY) == ["discard", "start"]
    assert world.service.running_keys == {KEY}


@pytest.mark.parametrize(("engine", "old", "new"), [
    ("baileys", ["start", "discard", "start"], []),
    ("simulator", ["start", "discard"], ["discard", "start"]),
], ids=["same-engine", "other-engine"])  # fmt: skip
async def test_create_after_a_lost_connection_forgets_the_old_link(
    world: World, engine: str, old: list[str], new: list[str]
) -> None:
    await pair(world)
    await world.engine.events[KEY].disconnected(KEY, R.CONNECTION_LOST)

    await world.service.create(KEY, "My Device", engine, "alice", "sid-1", relink=True)

    session = world.sessions.get(KEY)
    assert (session.state, session.holds_credentials) == (SessionState.CREATED, False)
    assert world.history()[-2:] == ["Disconnected(connection lost)", "Restarted"]
    assert (world.engine.told(KEY), world.other.told(KEY)) == (old, new)


async def test_create_on_a_linked_key_is_refused_without_relink(world: World) -> None:
    """A page load asks for a key (the Scan page's ?key=): that alone must not unlink."""
    await pair(world)
    await world.engine.events[KEY].disconnected(KEY, R.CONNECTION_LOST)
    recorded, told = world.history(), world.engine.told(KEY)

    with pytest.raises(InvalidTransitionError, match='"relink": true'):
        await create(world)

    assert world.history() == recorded
    assert world.engine.told(KEY) == told  # no discard: the credentials stay
    assert world.sessions.get(KEY).holds_credentials


async def test_a_linked_key_left_live_by_a_gone_process_needs_relink_too(world: World) -> None:
    world.sessions.create(KEY, "My Device", "baileys", "alice")
    world.sessions.update(KEY, lambda session: session.authenticate())

    with pytest.raises(InvalidTransitionError, match='"relink": true'):
        await create(world)

    assert world.history() == ["SessionCreated", "Authenticated"]
    assert world.engine.told(KEY) == []
    assert KEY not in world.service.running_keys


async def test_create_on_a_key_left_live_by_a_gone_process_restarts_it(world: World) -> None:
    world.sessions.create(KEY, "My Device", "baileys", "alice")
    world.sessions.update(KEY, lambda session: session.authenticate())

    outcome = await world.service.create(KEY, "My Device", "baileys", "alice", "sid-1", relink=True)

    assert outcome.joined is False and outcome.session.state is SessionState.CREATED
    expected = ["Disconnected(connection lost)", "Restarted"]
    assert world.history() == ["SessionCreated", "Authenticated", *expected]
    assert world.notifier.log == [
        ("subscribe", KEY, "sid-1"),
        *[("recorded", KEY, event) for event in expected],
    ]
    assert world.engine.told(KEY) == ["discard", "start"]


async def test_shutdown_stops_every_engine_and_records_lost_connections() -> None:
    world = build()
    await create(world, key="pairing")
    await world.engine.events["pairing"].qr_issued("pairing", "code", 60)
    await pair(world, key="paired")
    await pair(world, key="offline")
    await world.engine.events["offline"].disconnected("offline", R.CONNECTION_LOST)

    await world.service.shutdown()

    stopped = sorted(key for call, key in world.engine.calls if call == "stop")
    assert stopped == ["offline", "paired", "pairing"]
    for key in ("pairing", "paired", "offline"):
        assert world.history(key)[-1] == "Disconnected(connection lost)"
        assert world.notifier.published(key)[-1] == "Disconnected(connection lost)"
    assert world.history("offline").count("Disconnected(connection lost)") == 1
    assert world.service.running_keys == set()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_the_watchdog_ends_a_start_that_never_shows_a_code(impatient: World) -> None:
    world = impatient
    await create(world)  # the engine starts, then says nothing at all
    await eventually(lambda: world.state() is SessionState.DISCONNECTED)
    assert world.history() == ["SessionCreated", "Disconnected(connection lost)"]
    assert world.engine.told(KEY) == ["start", "discard"]
    assert KEY not in world.service.running_keys


async def test_a_qr_code_without_a_positive_timeout_is_refused(world: World) -> None:
    await create(world)
    await world.engine.events[KEY].qr_issued(KEY, "code-1", 0)
    assert world.history() == ["SessionCreated"]


@dataclass
class LeasesTakenAway:
    """DeviceLeases where another process takes the key's lease once ours was released."""

    released: list[str] = field(default_factory=list)

    async def acquire(self, key: str) -> bool:
        return not self.released

    async def acquire_many(self, keys: Collection[str]) -> set[str]:
        return set() if self.released else set(keys)

    async def release(self, key: str) -> None:
        self.released.append(key)

    async def release_many(self, keys: Collection[str]) -> None:
        self.released += keys

    async def forward(self, key: str, command: str, args: dict[str, str]) -> None:
        raise AssertionError("nothing is forwarded here")


async def test_losing_a_create_race_to_another_process_neither_restarts_nor_starts() -> None:
    """Another process records the key just before this one's insert, and runs it: this
    process gives the lease back, reads the key and follows that process's session."""
    leases = LeasesTakenAway()
    world = build(leases=leases)
    real_create = world.sessions.create

    def lose_the_race(key: str, *args: Any) -> Any:
        real_create(key, "Theirs", "baileys", "alice")
        return real_create(key, *args)  # refused: the key has a stream now

    world.sessions.create = lose_the_race  # type: ignore[method-assign]
    outcome = await create(world)
    assert outcome.joined and outcome.session.name == "Theirs"
    assert leases.released == [KEY]
    assert world.history() == ["SessionCreated"]
    assert world.engine.told(KEY) == []
    assert world.notifier.published() == []  # nothing recorded here, nothing projected


async def test_a_key_with_a_history_is_read_and_restarted_not_created_again(world: World) -> None:
    """Re-pairing a key that exists: its insert is refused, then it is read and restarted."""
    await create(world)
    await world.engine.events[KEY].qr_issued(KEY, "code-1", 60)
    await world.service.logout(KEY, "alice")
    world.sessions.release(KEY)
    outcome = await create(world)
    assert not outcome.joined and outcome.session.state is SessionState.CREATED
    assert world.history() == [
        "SessionCreated",
        "QrIssued",
        "Disconnected(user logged out)",
        "Restarted",
    ]


async def test_an_engine_reporting_from_inside_start_waits_for_the_request() -> None:
    """The key's lock is held while its engine starts: a report made from inside `start`
    is recorded once the request is done, after the request's own events."""
    world = build()

    async def start_and_report(
        key: str, events: EngineEvents, *, phone: str | None = None, proxy: str | None = None
    ) -> None:
        world.engine.calls.append(("start", key))
        world.engine.events[key] = events
        await events.qr_issued(key, "code-1", 60)

    world.engine.start = start_and_report  # type: ignore[method-assign]
    await asyncio.wait_for(create(world), 5)
    await eventually(lambda: world.history() == ["SessionCreated", "QrIssued"])
    await eventually(lambda: world.notifier.published() == ["SessionCreated", "QrIssued"])
    await world.service.shutdown()


async def test_a_slow_consumer_holds_no_lock_and_sees_a_keys_events_in_order() -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def slow(key: str, event: Any) -> None:
        if type(event).__name__ == "SessionCreated":
            await release.wait()
        seen.append(_describe(event))

    world = build(handlers=[slow])
    creating = asyncio.ensure_future(create(world))
    await eventually(lambda: KEY in world.engine.events)
    reporting = asyncio.ensure_future(world.engine.events[KEY].qr_issued(KEY, "code-1", 60))
    # Recorded while the consumer still holds on to the key's first event.
    await eventually(lambda: world.history() == ["SessionCreated", "QrIssued"])
    assert seen == [] and not creating.done()
    release.set()
    await asyncio.gather(creating, reporting)
    assert seen == ["SessionCreated", "QrIssued"]
    await world.service.shutdown()


async def test_an_ended_links_engine_goes_after_the_keys_lock_and_before_its_next_pairing(
    world: World,
) -> None:
    """Tearing an engine down may be slow (a logout reaches WhatsApp): it holds no lock,
    yet a new pairing of the key starts only once the old link's engine is gone."""
    in_logout, proceed = asyncio.Event(), asyncio.Event()

    async def slow_logout(key: str) -> None:
        in_logout.set()
        await proceed.wait()
        world.engine.calls.append(("logout", key))

    world.engine.logout = slow_logout  # type: ignore[method-assign]
    await pair(world)
    logging_out = asyncio.ensure_future(world.service.logout(KEY, "alice"))
    await asyncio.wait_for(in_logout.wait(), 5)
    # The key's lock is free meanwhile: a command on it is answered (refused: it ended).
    with pytest.raises(InvalidTransitionError):
        await asyncio.wait_for(world.service.delete(KEY, "alice"), 5)
    relinking = asyncio.ensure_future(
        world.service.create(KEY, "My Device", "baileys", "alice", "sid-1")
    )
    await asyncio.sleep(0.05)
    assert world.engine.told(KEY) == ["start"] and not relinking.done()
    proceed.set()
    await asyncio.gather(logging_out, relinking)
    assert world.engine.told(KEY) == ["start", "logout", "discard", "start"]
    assert world.history()[-2:] == ["Disconnected(user logged out)", "Restarted"]


async def test_a_teardown_no_handler_delivered_is_done_before_the_next_pairing() -> None:
    """Without its handler (a cancelled delivery, a composition root that forgot it), an
    ended link's engine still goes before the key is paired again."""
    world = build(link_ended=False)
    await pair(world)
    await world.service.delete(KEY, "alice")
    assert world.engine.told(KEY) == ["start"]
    await create(world)
    assert world.engine.told(KEY) == ["start", "logout", "discard", "start"]
    await world.service.shutdown()


async def test_an_engine_report_is_not_held_up_by_a_slow_consumer() -> None:
    """An engine reports from its own loop (one reader for all its keys, in a sidecar's
    case): a report is recorded and returns while earlier events of its key are still
    being delivered; its own events follow them, in order."""
    seen: list[str] = []
    release = asyncio.Event()

    async def slow(key: str, event: Any) -> None:
        if type(event).__name__ == "SessionCreated":
            await release.wait()
        seen.append(_describe(event))

    world = build(handlers=[slow])
    creating = asyncio.ensure_future(create(world))
    await eventually(lambda: KEY in world.engine.events)
    await asyncio.wait_for(world.engine.events[KEY].qr_issued(KEY, "code-1", 60), 5)
    assert world.history() == ["SessionCreated", "QrIssued"] and seen == []
    release.set()
    await creating
    await eventually(lambda: seen == ["SessionCreated", "QrIssued"])
    await world.service.shutdown()


async def test_a_failing_consumer_fails_neither_the_request_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(key: str, event: Any) -> None:
        raise RuntimeError("consumer down")

    world = build(handlers=[broken])
    outcome = await create(world)
    assert outcome.session.state is SessionState.CREATED
    assert world.notifier.published() == ["SessionCreated"]
    assert "consumer down" in caplog.text
    await world.service.shutdown()
