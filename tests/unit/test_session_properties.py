"""The application driven by random client requests and engine reports.

PairingService (the face the Socket.IO and HTTP adapters use) runs over the real
DeviceSessions in memory, with a recording engine and a recording notifier behind its
ports. After every step: replaying the store gives the live state, which is what the
lifecycle in docs/protocol.md says it should be; every recorded event was published once,
in order, and its emission has the payload docs/protocol.md gives; and a session ended for
a reason that deletes credentials holds none and had its engine's credentials deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import event as tally
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
from domain.application.dispatch import EventBus
from domain.application.pairing import PairingService, Timeouts
from domain.application.sessions import DeviceSessions
from domain.application.store_calls import StoreAccess
from domain.model.errors import (
    InvalidTransitionError,
    SessionNotFoundError,
    UnknownEngineError,
)
from domain.model.session import DeviceSession, DisconnectReason, session_id
from tests.unit.fakes import FakeEngine

R = DisconnectReason
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SEED_REASONS = {"user logged out", "qr expired", "connection lost", "session revoked"}
KEYS = st.sampled_from(["alpha", "beta"])
OWNERS = st.sampled_from(["alice", "bob"])
NAMES = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=8)
CODES = st.text(min_size=1, max_size=40)
TIMEOUTS = st.floats(min_value=0.01, max_value=600)
KNOWN_ENGINES = ("baileys", "neonize", "simulator")
ENGINES = st.sampled_from([*KNOWN_ENGINES, "carrier-pigeon"])  # the last one is unknown
PHONES = st.none() | st.just("628123456789")
# Progress first (hypothesis leans towards the first choice), the reason that keeps
# credentials first, so that deep lifecycles (reconnects, restarts) are common.
REPORTS = ["qr_issued", "paired", "connected", "disconnected", "pair_code_issued", "qr_expired",
           "passkey_required", "passkey_rejected"]  # fmt: skip
# Reports that move a session on from each stage of its lifecycle.
ONWARDS = {
    "created": ("qr_issued", "paired", "pair_code_issued"),
    "qr": ("qr_issued", "paired", "pair_code_issued", "passkey_required"),
    "authenticated": ("connected",),
    "ready": ("disconnected",),
    "offline": ("connected", "disconnected"),
}
REASONS = st.sampled_from([R.CONNECTION_LOST, R.USER_LOGGED_OUT, R.QR_EXPIRED, R.SESSION_REVOKED])
# docs/protocol.md, written out here: each server event's fields.
PAYLOAD_FIELDS = {
    "session.created": {"key", "message"},
    "session.qr": {"key", "qr", "timeout"},
    "session.pair_code": {"key", "code", "timeout"},
    "session.authenticated": {"key"},
    "session.ready": {"key"},
    "session.disconnected": {"key", "reason"},
    "session.passkey_required": {"key", "options", "timeout"},  # extension events
    "session.passkey_failed": {"key", "cause"},
}
PASSKEY_OPTIONS = st.fixed_dictionaries(
    {"challenge": st.text(min_size=1, max_size=20), "rpId": st.just("whatsapp.com")}
)
TEARDOWNS = {"logout", "discard"}  # what deletes an engine's credentials for a key


@dataclass
class Catalog:
    engine: FakeEngine

    def resolve(self, name: str) -> FakeEngine:
        if name not in KNOWN_ENGINES:
            raise UnknownEngineError(f"engine {name!r} is not available")
        return self.engine


@dataclass
class RecordingNotifier:
    published: dict[str, list[Any]] = field(default_factory=dict)

    async def subscribe(self, key: str, subscriber: str) -> None:
        pass

    async def recorded(self, key: str, event: Any) -> None:
        """A handler of recorded events, as the Socket.IO projection is one."""
        self.published.setdefault(key, []).append(event)

    async def unsubscribe_all(self, key: str) -> None:
        pass


class FixedClock:
    def now(self) -> datetime:
        return NOW


def pairing_service(
    sessions: DeviceSessions, engine: FakeEngine, notifier: RecordingNotifier
) -> PairingService:
    """The application, built as bootstrap builds it but with fakes behind its ports. Its
    watchdog never fires within a run: engines here are never quiet, they are driven."""
    bus = EventBus()
    service = PairingService(
        StoreAccess(sessions),
        Catalog(engine),
        notifier,
        FixedClock(),
        bus=bus,
        timeouts=Timeouts(expiry_grace=3600, start_timeout=3600),
    )
    bus.register(
        {
            DeviceSession.Disconnected: [service.link_ended],
            DeviceSession.Event: [notifier.recorded],
        }
    )
    return service


@dataclass(frozen=True)
class Expected:
    """A session as docs/protocol.md's lifecycle says it must be."""

    owner: str
    state: str = "created"
    credentials: bool = False
    reason: str | None = None
    passkey: bool = False  # WhatsApp waits for the account's passkey (always in "qr")

    @property
    def live(self) -> bool:
        return self.state != "disconnected"

    @property
    def offline_link(self) -> bool:
        return self.state == "disconnected" and self.credentials

    @property
    def running(self) -> bool:
        """An engine runs it: live, or a paired device reconnecting."""
        return self.live or self.offline_link

    def ended(self, reason: DisconnectReason) -> Expected:
        if reason is R.QR_EXPIRED and self.passkey:  # scanned, never "qr expired"
            reason = R.SESSION_REVOKED
        keeps = self.credentials and reason is R.CONNECTION_LOST
        ended = replace(self, state="disconnected", credentials=keeps, passkey=False)
        return replace(ended, reason=reason.value)


def observable(session: DeviceSession) -> tuple[Any, ...]:
    fields = (
        "state holds_credentials qr_code qr_expires_at pair_code pair_code_expires_at reason "
        "name engine owner version tenure_from passkey_options passkey_expires_at"
    )
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


def check_emission(key: str, event: Any, emissions: list[tuple[str, Any]]) -> None:
    if getattr(event, "cause", None) is not None:  # a passkey step that failed, then the end
        (failed, payload), *emissions = emissions
        assert failed == "session.passkey_failed" and payload.model_dump() == {
            "key": key,
            "cause": event.cause,
        }
    assert len(emissions) == 1, (type(event).__name__, emissions)
    [(name, payload)] = emissions
    data = payload.model_dump()
    assert set(data) == PAYLOAD_FIELDS[name] and data["key"] == key
    if name == "session.created":
        assert data["message"] == "Session created"
    elif name == "session.qr":
        assert data["qr"].startswith("data:image/png;base64,")
        assert isinstance(data["timeout"], int) and data["timeout"] >= 1
    elif name == "session.pair_code":
        assert data["code"] == event.code
        assert isinstance(data["timeout"], int) and data["timeout"] >= 1
    elif name == "session.disconnected":
        assert data["reason"] in SEED_REASONS and data["reason"] == event.reason
    elif name == "session.passkey_required":
        assert data["options"] == event.options and data["timeout"] >= 1


class PairingMachine(RuleBasedStateMachine):
    keys = Bundle("keys")  # keys that have been created, so most steps reach a stream

    def __init__(self) -> None:
        super().__init__()
        self.sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.engine, self.notifier = FakeEngine(), RecordingNotifier()
        self.service = pairing_service(self.sessions, self.engine, self.notifier)
        self.expected: dict[str, Expected] = {}
        self.projected: dict[str, int] = {}  # per key, how many published events were checked
        self.runner = asyncio.Runner()  # one event loop per run

    def teardown(self) -> None:
        self.run(self.service.shutdown())
        self.runner.close()

    def run(self, step: Coroutine[Any, Any, Any]) -> Any:
        return self.runner.run(step)

    def stream(self, key: str) -> list[str]:
        return [type(e).__name__ for e in self.sessions.events.get(session_id(key))]

    def expect(self, key: str, step: Coroutine[Any, Any, Any], recorded: list[str]) -> Any:
        """Run `step`; it must record exactly the events named in `recorded`."""
        before = self.stream(key)
        result = self.run(step)
        assert self.stream(key) == before + recorded
        return result

    def refused(self, key: str, error: type[Exception], step: Coroutine[Any, Any, Any]) -> None:
        """`step` must raise `error` and record nothing."""
        before, told = self.stream(key), list(self.engine.calls)
        with pytest.raises(error):
            self.run(step)
        assert (self.stream(key), self.engine.calls) == (before, told)

    # -- client requests --------------------------------------------------------------

    @initialize(target=keys)
    def create_alpha(self) -> str:
        return self.create("alpha", "My Device", "baileys", "alice", None, False)

    @rule(
        target=keys,
        key=KEYS,
        name=NAMES,
        engine=ENGINES,
        owner=OWNERS,
        phone=PHONES,
        relink=st.booleans(),
    )
    def create(
        self, key: str, name: str, engine: str, owner: str, phone: str | None, relink: bool
    ) -> Any:
        request = self.service.create(key, name, engine, owner, "sid", phone=phone, relink=relink)
        expected = self.expected.get(key)
        if engine not in KNOWN_ENGINES:
            self.refused(key, UnknownEngineError, request)
            return key if expected is not None else multiple()
        if expected is None:
            outcome = self.expect(key, request, ["SessionCreated"])
            assert not outcome.joined
            self.expected[key] = Expected(owner)
            assert self.engine.since_last_start(key) == []
        elif expected.owner != owner and (expected.live or expected.credentials):
            self.refused(key, SessionNotFoundError, request)  # another's key reads as missing
        elif expected.live:
            assert self.expect(key, request, []).joined
        elif expected.credentials and not relink:
            tally("create: refused, would unlink")
            self.refused(key, InvalidTransitionError, request)
        else:
            tally("create: restarted" + (" a linked device" if expected.credentials else ""))
            outcome = self.expect(key, request, ["Restarted"])
            assert not outcome.joined and outcome.session.owner == owner
            self.expected[key] = Expected(owner)
            told = [call for call, k in self.engine.calls if k == key]
            assert told[-2:] == ["discard", "start"]  # no engine resumes the old link
        return key

    @rule(key=keys, relink=st.booleans())
    def create_again(self, key: str, relink: bool) -> None:
        """The owner asks for the key again, as the Scan page does on every load."""
        self.create(key, "My Device", "simulator", self.expected[key].owner, None, relink)

    @rule(key=keys, owner=OWNERS, reason=st.sampled_from([R.USER_LOGGED_OUT, R.SESSION_REVOKED]))
    def end_by_owner(self, key: str, owner: str, reason: DisconnectReason) -> None:
        """session.logout (user logged out) or session.delete (session revoked)."""
        end = self.service.logout if reason is R.USER_LOGGED_OUT else self.service.delete
        expected = self.expected[key]
        if expected.owner != owner:
            self.refused(key, SessionNotFoundError, end(key, owner))
        elif expected.running:
            tally(f"end by owner: {expected.state}" + (" linked" if expected.credentials else ""))
            session = self.expect(key, end(key, owner), ["Disconnected"])
            assert session.reason is reason
            self.expected[key] = expected.ended(reason)
            assert self.engine.since_last_start(key)[-1:] == ["logout"]  # unlinked
        else:
            self.refused(key, InvalidTransitionError, end(key, owner))

    @rule(key=keys, owner=OWNERS)
    def join(self, key: str, owner: str) -> None:
        if self.expected[key].owner != owner:
            self.refused(key, SessionNotFoundError, self.service.join(key, owner, "sid"))
        else:
            assert self.expect(key, self.service.join(key, owner, "sid"), []).key == key

    @rule(key=keys, owner=OWNERS)
    def answer_passkey(self, key: str, owner: str) -> None:
        """session.passkey_response: handed to the engine while WhatsApp waits for it;
        it records nothing (WhatsApp's verdict comes back as the engine's reports)."""
        expected = self.expected[key]
        answer = self.service.answer_passkey(key, owner, {"id": "credential"})
        if expected.owner != owner:
            self.refused(key, SessionNotFoundError, answer)
        elif expected.passkey:
            tally("passkey answered")
            self.expect(key, answer, [])
            assert self.engine.since_last_start(key)[-1:] == ["answer_passkey"]
        else:
            self.refused(key, InvalidTransitionError, answer)

    # -- engine reports ---------------------------------------------------------------

    @rule(key=keys, steps=st.integers(1, 8), data=st.data())
    def engine_reports(self, key: str, steps: int, data: st.DataObject) -> None:
        """Reports as an engine makes them, to what it was given at start (the service);
        some come late (the session ended) or out of turn, and must change nothing."""
        events = self.engine.events[key]
        for _ in range(steps):
            expected = self.expected[key]
            pairing = expected.running and expected.state in ("created", "qr")
            # Mostly reports that move the lifecycle on, so that deep lifecycles are common.
            onwards = st.sampled_from(ONWARDS.get(self.stage(key)) or REPORTS)
            report = data.draw(st.one_of(onwards, onwards, onwards, st.sampled_from(REPORTS)))
            match report:
                case "qr_issued" | "pair_code_issued":
                    code, timeout = data.draw(CODES), data.draw(TIMEOUTS)
                    issue = getattr(events, report)(key, code, timeout)
                    issued = replace(expected, state="qr")
                    kind = "QrIssued" if report == "qr_issued" else "PairCodeIssued"
                    self.report(key, issue, kind if pairing else None, issued)
                case "paired":
                    paired = replace(
                        expected, state="authenticated", credentials=True, passkey=False
                    )
                    recorded = "Authenticated" if pairing else None
                    self.report(key, events.paired(key), recorded, paired)
                case "connected":
                    back = expected.running and (
                        expected.state == "authenticated" or expected.offline_link
                    )
                    ready = replace(expected, state="ready", reason=None)
                    self.report(key, events.connected(key), "Ready" if back else None, ready)
                case "disconnected":
                    reason = data.draw(st.just(R.CONNECTION_LOST) | REASONS)  # mostly kept
                    ends = expected.live or (
                        expected.offline_link and reason is not R.CONNECTION_LOST
                    )
                    gone = events.disconnected(key, reason)
                    recorded = "Disconnected" if ends else None
                    self.report(key, gone, recorded, expected.ended(reason))
                case "qr_expired":
                    expired = expected.ended(R.QR_EXPIRED)
                    recorded = "Disconnected" if pairing else None
                    self.report(key, events.qr_expired(key), recorded, expired)
                case "passkey_required":
                    options, timeout = data.draw(PASSKEY_OPTIONS), data.draw(TIMEOUTS)
                    asked = expected.running and expected.state == "qr"
                    recorded = "PasskeyRequested" if asked else None
                    waiting = replace(expected, passkey=True)
                    self.report(
                        key, events.passkey_required(key, options, timeout), recorded, waiting
                    )
                case "passkey_rejected":
                    refused = expected.ended(R.SESSION_REVOKED)
                    recorded = "Disconnected" if expected.running else None
                    self.report(key, events.passkey_rejected(key), recorded, refused)

    def stage(self, key: str) -> str:
        expected = self.expected[key]
        if not expected.running:
            return "ended"
        return "offline" if expected.offline_link else expected.state

    def report(
        self, key: str, report: Coroutine[Any, Any, None], recorded: str | None, after: Expected
    ) -> None:
        """An engine report: recorded as the event `recorded` (leading to `after`), or
        ignored (None): late, or out of turn."""
        tally(f"report: {recorded}")
        if recorded is not None:
            self.expect(key, report, [recorded])
            self.expected[key] = after
        else:
            self.expect(key, report, [])

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def replay_equals_live_and_the_lifecycle(self) -> None:
        for key, expected in self.expected.items():
            replayed = self.sessions.repository.get(session_id(key))  # from the store
            live = self.run(self.service.find(key))  # as the service sees it (held or not)
            assert observable(replayed) == observable(live)
            assert (replayed.owner, replayed.state, replayed.holds_credentials) == (
                expected.owner,
                expected.state,
                expected.credentials,
            )
            assert replayed.reason == expected.reason
            assert replayed.passkey_pending == expected.passkey
        running = {key for key, expected in self.expected.items() if expected.running}
        assert self.service.running_keys == running

    @invariant()
    def every_recorded_event_is_published_once_in_order(self) -> None:
        for key in self.expected:
            recorded = [
                (type(e).__name__, e.originator_version) for e in self.sessions.history(key)
            ]
            published = self.notifier.published.get(key, [])
            assert [(type(e).__name__, e.originator_version) for e in published] == recorded

    @invariant()
    def every_emitted_payload_matches_the_protocol(self) -> None:
        for key, published in self.notifier.published.items():
            for event in published[self.projected.get(key, 0) :]:
                check_emission(key, event, self.run(project(key, event)))
            self.projected[key] = len(published)

    @invariant()
    def terminal_reasons_delete_credentials(self) -> None:
        for key, expected in self.expected.items():
            session = self.sessions.repository.get(session_id(key))
            if session.reason is not None and session.reason.deletes_credentials:
                assert not session.holds_credentials
            if expected.running:  # nothing stopped its engine (it may have had answers)
                told = self.engine.since_last_start(key)
                assert [c for c in told if c != "answer_passkey"] == []
            else:
                # Ended holding nothing: the engine deleted what it had stored, once.
                assert sum(c in TEARDOWNS for c in self.engine.since_last_start(key)) == 1

    @invariant()
    def every_stream_obeys_the_disconnect_rule(self) -> None:
        for key in self.expected:
            events = self.sessions.history(key)
            assert disconnected_is_followed_correctly(events)
            asked = False  # a passkey was asked for since the last code was scanned
            for event in events:
                kind = type(event).__name__
                if kind == "PasskeyRequested":
                    asked = True
                if kind == "Disconnected":
                    assert event.reason in SEED_REASONS
                    # A scan the phone accepted never ends as "qr expired".
                    assert not (asked and event.reason == "qr expired")
                    assert event.cause is None or event.reason == "session revoked"
                if kind in ("Authenticated", "Disconnected"):
                    asked = False
                if type(event).__name__ in ("QrIssued", "PairCodeIssued"):
                    assert event.code and event.timeout > 0
                    assert event.expires_at == NOW + timedelta(seconds=event.timeout)


TestPairing = PairingMachine.TestCase
TestPairing.settings = settings(
    max_examples=150,
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
