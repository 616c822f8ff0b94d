"""DeviceSessions driven by random commands: the store, the table and the protocol agree."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from adapters.socketio.projection import project
from domain.application.sessions import DeviceSessions, IntegrityError
from domain.model.errors import InvalidTransitionError, SessionNotFoundError
from domain.model.session import DeviceSession, DisconnectReason, SessionState, session_id
from tests.unit.expected import EVENT_OF

R = DisconnectReason
SEED_REASONS = {"user logged out", "qr expired", "connection lost", "session revoked"}
KEYS = st.sampled_from(["alpha", "beta"])
NAMES = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=8)
CODES = st.text(min_size=1, max_size=40)
TIMEOUTS = st.floats(min_value=0.01, max_value=600)
ENGINES = st.sampled_from(["baileys", "neonize", "simulator"])
NOWS = st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC))
# The table as this test reads PROTOCOL.md: trigger -> states it is allowed from.
ALLOWED_FROM = {
    "issue_qr": {"created", "qr"},
    "authenticate": {"created", "qr"},
    # Also from `disconnected` while credentials are held: a reconnect, and (for any reason
    # but a lost connection) the owner ending the offline link for good.
    "mark_ready": {"authenticated"},
    "disconnect": {"created", "qr", "authenticated", "ready"},
    "restart": {"disconnected"},
}
# Hypothesis leans towards the first choice of a sampled_from: put progress first, and the
# reason that keeps credentials first, so that deep lifecycles are common.
FORWARD = ["authenticate", "mark_ready", "disconnect", "restart", "issue_qr"]
REASONS = st.sampled_from([R.CONNECTION_LOST, R.USER_LOGGED_OUT, R.QR_EXPIRED, R.SESSION_REVOKED])
PAYLOAD_FIELDS = {
    "session.created": {"key", "message"},
    "session.qr": {"key", "qr", "timeout"},
    "session.authenticated": {"key"},
    "session.ready": {"key"},
    "session.disconnected": {"key", "reason"},
}


@dataclass(frozen=True)
class Expected:
    state: str = "created"
    credentials: bool = False
    reason: str | None = None


def observable(session: DeviceSession) -> tuple[Any, ...]:
    fields = "state holds_credentials qr_code qr_expires_at reason name engine owner version"
    return tuple(getattr(session, name) for name in fields.split())


def disconnected_is_followed_correctly(events: list[Any]) -> bool:
    """After Disconnected only Restarted; if the connection was lost while paired, also Ready
    (a reconnect) or a Disconnected for another reason (the owner ending the link)."""
    credentials = False
    for before, after in zip(events, events[1:], strict=False):
        kind, next_kind = type(before).__name__, type(after).__name__
        if kind in ("SessionCreated", "Restarted"):
            credentials = False
        elif kind == "Authenticated":
            credentials = True
        elif kind == "Disconnected":
            credentials = credentials and before.reason == "connection lost"
            ended = next_kind == "Disconnected" and after.reason != "connection lost"
            if next_kind != "Restarted" and not (credentials and (next_kind == "Ready" or ended)):
                return False
    return True


def check_emissions(runner: asyncio.Runner, key: str, event: Any) -> None:
    emissions = runner.run(project(key, event))
    assert len(emissions) == 1
    [(name, payload)] = emissions
    data = payload.model_dump()
    assert set(data) == PAYLOAD_FIELDS[name] and data["key"] == key
    if name == "session.created":
        assert data["message"] == "Session created"
    elif name == "session.qr":
        assert data["qr"].startswith("data:image/png;base64,")
        assert isinstance(data["timeout"], int) and data["timeout"] >= 1
    elif name == "session.disconnected":
        assert data["reason"] in SEED_REASONS


class DeviceSessionsMachine(RuleBasedStateMachine):
    keys = Bundle("keys")  # keys that have been created, so commands mostly reach a stream

    def __init__(self) -> None:
        super().__init__()
        self.sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.expected: dict[str, Expected] = {}
        self.live: dict[str, DeviceSession] = {}
        self.runner = asyncio.Runner()  # one event loop per run, for the async projection

    def teardown(self) -> None:
        self.runner.close()

    def stream(self, key: str) -> list[tuple[str, int]]:
        events = self.sessions.events.get(session_id(key))  # raw: also for keys never created
        return [(type(e).__name__, e.originator_version) for e in events]

    def allows(self, key: str, trigger: str, reason: DisconnectReason | None = None) -> bool:
        """Whether the table allows `trigger` on `key` (for disconnect: with `reason`, or
        with some reason if None)."""
        expected = self.expected[key]
        offline_link = expected.state == "disconnected" and expected.credentials
        if expected.state in ALLOWED_FROM[trigger]:
            return True
        if trigger == "disconnect":
            return offline_link and reason is not R.CONNECTION_LOST
        return trigger == "mark_ready" and offline_link

    def apply(
        self,
        key: str,
        trigger: str,
        command: Callable[[DeviceSession], None],
        after: Callable[[Expected], Expected],
        reason: DisconnectReason | None = None,
    ) -> bool:
        """Run `command` on `key`; True if the table allowed it (and it was stored)."""
        before = self.stream(key)
        expected = self.expected[key]
        if self.allows(key, trigger, reason):
            change = self.sessions.update(key, command)
            assert [type(e).__name__ for e in change.events] == [EVENT_OF[trigger]]
            assert self.stream(key)[:-1] == before
            self.expected[key] = after(expected)
            self.live[key] = change.session
            check_emissions(self.runner, key, change.events[0])
            return True
        with pytest.raises(InvalidTransitionError) as refused:
            self.sessions.update(key, command)
        assert refused.value.code == "invalid_transition"
        assert self.stream(key) == before
        return False

    @initialize(target=keys)
    def create_alpha(self) -> str:
        return self.create("alpha", "My Device", "baileys")

    @rule(target=keys, key=KEYS, name=NAMES, engine=ENGINES)
    def create(self, key: str, name: str, engine: str) -> Any:
        if key in self.expected:
            before = self.stream(key)
            with pytest.raises(IntegrityError):
                self.sessions.create(key, name, engine, "alice")
            assert self.stream(key) == before
            return multiple()
        change = self.sessions.create(key, name, engine, "alice")
        self.expected[key] = Expected()
        self.live[key] = change.session
        check_emissions(self.runner, key, change.events[0])
        return key

    @rule()
    def command_a_key_never_created(self) -> None:
        with pytest.raises(SessionNotFoundError):
            self.sessions.update("never-created", lambda s: s.authenticate())
        assert self.stream("never-created") == []

    @rule(key=keys, steps=st.integers(1, 6), data=st.data())
    def advance(self, key: str, steps: int, data: st.DataObject) -> None:
        """Take steps, half of them allowed ones, so long lifecycles (reconnects, restarts) and
        the commands refused in them come up often."""
        for _ in range(steps):
            allowed = [t for t in FORWARD if self.allows(key, t)]
            trigger = data.draw(st.sampled_from(allowed) | st.sampled_from(FORWARD))
            step = getattr(self, trigger)
            match trigger:
                case "issue_qr":
                    step(key, data.draw(CODES), data.draw(TIMEOUTS), data.draw(NOWS))
                case "disconnect":
                    step(key, data.draw(REASONS))
                case "restart":
                    step(key, data.draw(NAMES), data.draw(ENGINES))
                case _:
                    step(key)

    @rule(key=keys, code=CODES, timeout=TIMEOUTS, now=NOWS)
    def issue_qr(self, key: str, code: str, timeout: float, now: datetime) -> None:
        def command(session: DeviceSession) -> None:
            session.issue_qr(code, timeout, now)

        if self.apply(key, "issue_qr", command, lambda e: replace(e, state="qr")):
            [*_, issued] = self.sessions.history(key)
            assert (issued.code, issued.timeout) == (code, timeout)
            assert issued.expires_at == now + timedelta(seconds=timeout)

    @rule(key=keys)
    def authenticate(self, key: str) -> None:
        self.apply(
            key,
            "authenticate",
            lambda s: s.authenticate(),
            lambda e: replace(e, state="authenticated", credentials=True),
        )

    @rule(key=keys)
    def mark_ready(self, key: str) -> None:
        self.apply(
            key,
            "mark_ready",
            lambda s: s.mark_ready(),
            lambda e: replace(e, state="ready", reason=None),
        )

    @rule(key=keys, reason=REASONS)
    def disconnect(self, key: str, reason: DisconnectReason) -> None:
        self.apply(
            key,
            "disconnect",
            lambda s: s.disconnect(reason),
            lambda e: Expected(
                "disconnected", e.credentials and reason is R.CONNECTION_LOST, reason
            ),
            reason,
        )

    @rule(key=keys, name=NAMES, engine=ENGINES)
    def restart(self, key: str, name: str, engine: str) -> None:
        self.apply(key, "restart", lambda s: s.restart(name, engine), lambda e: Expected())

    @invariant()
    def replay_equals_live_and_model(self) -> None:
        for key, expected in self.expected.items():
            replayed = self.sessions.repository.get(session_id(key))
            assert isinstance(replayed.state, SessionState)
            assert observable(replayed) == observable(self.live[key])
            assert (replayed.state, replayed.holds_credentials, replayed.reason) == (
                expected.state,
                expected.credentials,
                expected.reason,
            )
            if replayed.reason is not None and replayed.reason.deletes_credentials:
                assert not replayed.holds_credentials

    @invariant()
    def every_stream_obeys_the_disconnect_rule(self) -> None:
        for key in self.expected:
            events = self.sessions.history(key)
            assert disconnected_is_followed_correctly(events)
            for event in events:
                if type(event).__name__ == "Disconnected":
                    assert event.reason in SEED_REASONS
                if type(event).__name__ == "QrIssued":
                    assert event.code and event.timeout > 0
                    assert event.expires_at.tzinfo is not None


TestDeviceSessions = DeviceSessionsMachine.TestCase
TestDeviceSessions.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    # The explain phase re-runs a failure under a tracer: minutes here, for a hint.
    phases=[phase for phase in Phase if phase is not Phase.explain],
)


def test_the_disconnect_rule_checker_can_fail() -> None:
    def check(*kinds: str) -> bool:
        """Stand-in events: "Disconnected:qr expired" is a Disconnected with that reason."""
        events = [kind.partition(":") for kind in kinds]
        stream = [type(name, (), {"reason": reason})() for name, _, reason in events]
        return disconnected_is_followed_correctly(stream)

    lost = ["SessionCreated", "Authenticated", "Disconnected:connection lost"]
    assert check(*lost, "Ready")
    assert check(*lost, "Disconnected:user logged out", "Restarted")
    assert check("SessionCreated", "Disconnected:qr expired", "Restarted")
    assert not check(*lost, "Disconnected:connection lost")
    assert not check(*lost, "Disconnected:qr expired", "Ready")
    assert not check(*lost, "Authenticated")
    assert not check("SessionCreated", "Authenticated", "Disconnected:qr expired", "Ready")
    assert not check("SessionCreated", "Disconnected:connection lost", "Ready")
