"""The DeviceSession aggregate against the transition table, written out here as data."""

from __future__ import annotations

import ast
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.payloads import SessionDisconnected
from domain.application.sessions import DeviceSessions
from domain.model.errors import InvalidTransitionError
from domain.model.session import DeviceSession, DisconnectReason, SessionState, session_id
from tests.unit.expected import EVENT_OF

Step = Callable[[DeviceSession], None]
R = DisconnectReason
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DOMAIN = Path(__file__).parents[2] / "domain"
SEED_REASONS = {"user logged out", "qr expired", "connection lost", "session revoked"}

# Independent of domain.model.session.TRANSITIONS: state -> {trigger: destination}, for sessions
# without credentials. A disconnected session that holds them can also be readied or ended
# for good: the conditional rows have their own tests below.
EXPECTED_TABLE: dict[str, dict[str, str]] = {
    "created": {"issue_qr": "qr", "authenticate": "authenticated", "disconnect": "disconnected"},
    "qr": {"issue_qr": "qr", "authenticate": "authenticated", "disconnect": "disconnected"},
    "authenticated": {"mark_ready": "ready", "disconnect": "disconnected"},
    "ready": {"disconnect": "disconnected"},
    "disconnected": {"restart": "created"},
}


def qr(session: DeviceSession) -> None:
    session.issue_qr("2@ref,noise,identity,adv", 60.0, NOW)


def disconnect(reason: DisconnectReason) -> Step:
    return lambda session: session.disconnect(reason)


TRIGGERS: dict[str, Step] = {
    "issue_qr": qr,
    "authenticate": lambda s: s.authenticate(),
    "mark_ready": lambda s: s.mark_ready(),
    "disconnect": disconnect(R.USER_LOGGED_OUT),
    "restart": lambda s: s.restart("Phone 2", "simulator"),
}
PATH_TO: dict[str, list[Step]] = {
    "created": [],
    "qr": [qr],
    "authenticated": [TRIGGERS["authenticate"]],
    "ready": [TRIGGERS["authenticate"], TRIGGERS["mark_ready"]],
    "disconnected": [disconnect(R.QR_EXPIRED)],
}
PAIRED = [TRIGGERS["authenticate"], TRIGGERS["mark_ready"]]
OFFLINE = [*PAIRED, disconnect(R.CONNECTION_LOST)]  # disconnected, still holding credentials


def session_after(steps: list[Step]) -> DeviceSession:
    session = DeviceSession(key="device123", name="My Device", engine="baileys", owner="alice")
    for step in steps:
        step(session)
    session.collect_events()
    return session


def observable(session: DeviceSession) -> dict[str, Any]:
    fields = "state holds_credentials qr_code qr_expires_at reason name engine owner version"
    return {name: getattr(session, name) for name in fields.split()}


def test_the_expected_table_covers_every_state() -> None:
    assert set(EXPECTED_TABLE) == {state.value for state in SessionState}


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
@pytest.mark.parametrize("state", sorted(EXPECTED_TABLE))
def test_each_trigger_is_allowed_exactly_where_the_table_says(state: str, trigger: str) -> None:
    session = session_after(PATH_TO[state])
    assert session.state == state
    before = observable(session)
    destination = EXPECTED_TABLE[state].get(trigger)

    if destination is None:
        assert not session.can(trigger)
        with pytest.raises(InvalidTransitionError) as refused:
            TRIGGERS[trigger](session)
        assert (refused.value.code, refused.value.state) == ("invalid_transition", state)
        assert session.collect_events() == []
        assert observable(session) == before
    else:
        assert session.can(trigger)
        TRIGGERS[trigger](session)
        assert [type(e).__name__ for e in session.collect_events()] == [EVENT_OF[trigger]]
        assert session.state == destination
        assert session.version == before["version"] + 1


@pytest.mark.parametrize(
    "path",
    [
        [TRIGGERS["authenticate"], disconnect(R.CONNECTION_LOST)],
        OFFLINE,
        [*OFFLINE, TRIGGERS["mark_ready"], disconnect(R.CONNECTION_LOST)],
    ],
    ids=["authenticated", "ready", "ready-again"],
)
def test_a_paired_session_reconnects_after_a_lost_connection(path: list[Step]) -> None:
    session = session_after(path)
    assert session.holds_credentials and session.reason is R.CONNECTION_LOST

    session.mark_ready()

    assert session.state is SessionState.READY
    assert session.reason is None
    assert [type(e).__name__ for e in session.collect_events()] == ["Ready"]


@pytest.mark.parametrize(
    "path",
    [
        [*PAIRED, disconnect(R.QR_EXPIRED)],
        [*PAIRED, disconnect(R.USER_LOGGED_OUT)],
        [*PAIRED, disconnect(R.SESSION_REVOKED)],
        [disconnect(R.CONNECTION_LOST)],
        [qr, disconnect(R.CONNECTION_LOST)],
        [
            *PAIRED,
            disconnect(R.CONNECTION_LOST),
            TRIGGERS["restart"],
            disconnect(R.CONNECTION_LOST),
        ],
    ],
    ids=[
        "qr-expired",
        "logged-out",
        "revoked",
        "lost-unpaired",
        "lost-in-qr",
        "lost-after-restart",
    ],
)
def test_no_reconnect_without_credentials(path: list[Step]) -> None:
    session = session_after(path)
    assert session.state is SessionState.DISCONNECTED
    assert not session.holds_credentials

    with pytest.raises(InvalidTransitionError):
        session.mark_ready()
    assert session.collect_events() == []


@pytest.mark.parametrize("reason", list(DisconnectReason))
@pytest.mark.parametrize(
    ("path", "paired"),
    [
        (OFFLINE, True),
        ([*PAIRED, disconnect(R.USER_LOGGED_OUT)], False),
        ([qr, disconnect(R.CONNECTION_LOST)], False),
    ],
    ids=["lost-while-paired", "logged-out", "lost-unpaired"],
)
def test_only_an_offline_paired_session_can_be_ended_again(
    path: list[Step], paired: bool, reason: DisconnectReason
) -> None:
    session = session_after(path)

    if paired and reason.deletes_credentials:
        session.disconnect(reason)
        assert [type(e).__name__ for e in session.collect_events()] == ["Disconnected"]
        assert (session.state, session.reason) == (SessionState.DISCONNECTED, reason)
        assert not session.holds_credentials
    else:
        with pytest.raises(InvalidTransitionError):
            session.disconnect(reason)
        assert session.collect_events() == []


def test_disconnect_reasons_are_the_seed_strings() -> None:
    assert {reason.value for reason in DisconnectReason} == SEED_REASONS
    reason_field = SessionDisconnected.model_fields["reason"].annotation
    assert set(typing.get_args(reason_field)) == SEED_REASONS


@pytest.mark.parametrize("reason", list(DisconnectReason))
def test_terminal_reasons_delete_credentials(reason: DisconnectReason) -> None:
    session = session_after([*PAIRED, disconnect(reason)])

    keeps = reason is R.CONNECTION_LOST
    assert session.holds_credentials is keeps
    assert reason.deletes_credentials is not keeps
    assert (session.state, session.reason) == (SessionState.DISCONNECTED, reason)


@given(
    now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    timeout=st.floats(min_value=0.001, max_value=3600, allow_nan=False),
    aware=st.booleans(),
)
def test_a_qr_expires_timeout_seconds_after_the_now_passed_in(
    now: datetime, timeout: float, aware: bool
) -> None:
    now = now.replace(tzinfo=UTC) if aware else now
    session = session_after([])

    session.issue_qr("code", timeout, now)

    [issued] = session.collect_events()
    assert issued.expires_at == now + timedelta(seconds=timeout)  # type: ignore[attr-defined]
    assert (issued.code, issued.timeout) == ("code", timeout)  # type: ignore[attr-defined]
    assert session.qr_expires_at == issued.expires_at  # type: ignore[attr-defined]
    assert session.qr_seconds_left(now + timedelta(seconds=timeout + 1)) == 0.0


# -- purity ---------------------------------------------------------------------------

IMPURE_CALLS = {
    "now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter", "sleep",
    "uuid1", "uuid4", "random", "randint", "randrange", "choice", "shuffle",
    "token_bytes", "token_hex", "token_urlsafe", "urandom", "getenv", "open", "print",
}  # fmt: skip
IO_MODULES = {
    "adapters", "entrypoints", "socketio", "engineio", "starlette", "uvicorn", "sqlite3",
    "psycopg", "psycopg_pool", "segno", "pydantic", "pydantic_settings", "httpx", "aiohttp",
    "neonize", "os", "socket", "subprocess", "random", "secrets", "time",
}  # fmt: skip


def impure_calls_in_events(source: str) -> set[str]:
    """Names called by `@event(...)` bodies, following `self._helper()` calls in the module."""
    tree = ast.parse(source)
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}

    def is_event(f: ast.FunctionDef) -> bool:
        calls = [d.func for d in f.decorator_list if isinstance(d, ast.Call)]
        return any(getattr(c, "id", getattr(c, "attr", None)) == "event" for c in calls)

    todo = [f for f in functions.values() if is_event(f)]
    assert todo, "no @event methods found: the parser no longer matches the module"
    seen: set[str] = set()
    called: set[str] = set()
    while todo:
        function = todo.pop()
        seen.add(function.name)
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            called.add(name)
            if name in functions and name not in seen:
                todo.append(functions[name])
    return called & IMPURE_CALLS


def test_event_bodies_read_no_clock_and_no_randomness() -> None:
    assert impure_calls_in_events((DOMAIN / "model" / "session.py").read_text()) == set()


def test_the_purity_check_catches_a_clock_in_an_event_helper() -> None:
    source = (
        "class A:\n"
        "    @event('Stamped')\n"
        "    def _stamped(self):\n"
        "        self._touch()\n"
        "    def _touch(self):\n"
        "        self.at = datetime.now(UTC)\n"
        "        self.id = uuid.uuid4()\n"
    )
    assert impure_calls_in_events(source) == {"now", "uuid4"}


@pytest.mark.parametrize("module", sorted(str(p.relative_to(DOMAIN)) for p in DOMAIN.rglob("*.py")))
def test_domain_modules_import_no_adapter_or_io_library(module: str) -> None:
    tree = ast.parse((DOMAIN / module).read_text())
    imported = {
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    }
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} & IO_MODULES == set()


# -- replay ---------------------------------------------------------------------------

REPLAYED_PATHS = {
    "created": [],
    "qr": [qr, qr],
    "ready": PAIRED,
    "reconnected": [*PAIRED, disconnect(R.CONNECTION_LOST), TRIGGERS["mark_ready"]],
    "lost": OFFLINE,
    "ended-offline": [*OFFLINE, disconnect(R.SESSION_REVOKED)],
    "expired": [qr, disconnect(R.QR_EXPIRED)],
    "restarted": [*PAIRED, disconnect(R.SESSION_REVOKED), TRIGGERS["restart"], qr],
}


@pytest.mark.parametrize("path", REPLAYED_PATHS.values(), ids=REPLAYED_PATHS.keys())
def test_replaying_the_stored_events_rebuilds_the_live_session(path: list[Step]) -> None:
    sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    live = DeviceSession(key="device123", name="My Device", engine="baileys", owner="alice")
    for step in path:
        step(live)
    sessions.save(live)

    replayed = sessions.repository.get(session_id("device123"))

    assert observable(replayed) == observable(live)
    assert isinstance(replayed.state, SessionState)
    assert replayed.reason is None or isinstance(replayed.reason, DisconnectReason)
