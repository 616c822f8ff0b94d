"""The DeviceSession aggregate: one WhatsApp device being linked. Its lifecycle (states,
reasons, the transition table) is domain.model.lifecycle; names are re-exported here."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.model.errors import InvalidTransitionError
from domain.model.lifecycle import (
    INITIAL_STATE,
    LIVE_STATES,
    PAIRING_STATES,
    SETTLED_STATES,
    TRANSITION_TABLE,
    TRANSITIONS,
    DisconnectReason,
    SessionState,
    allowed_destination,
    destination,
)

__all__ = [
    "LIVE_STATES",
    "PAIRING_STATES",
    "SETTLED_STATES",
    "TRANSITIONS",
    "TRANSITION_TABLE",
    "DeviceSession",
    "DisconnectReason",
    "SessionState",
    "allowed_destination",
    "session_id",
]

SESSION_NAMESPACE = uuid5(NAMESPACE_URL, "https://pairgate.dev/sessions")
S = SessionState


def session_id(key: str) -> UUID:
    """One key, one event stream: creating a key twice is a store integrity error."""
    return uuid5(SESSION_NAMESPACE, key)


class DeviceSession(Aggregate):
    """A device's pairing lifecycle. Commands check the table; `@event` bodies only assign."""

    # Class defaults: snapshots taken before these attributes existed still load.
    pair_code: str | None = None
    pair_code_expires_at: datetime | None = None
    # The version from which the current owner holds the key: a key that another identity
    # took over after it ended shows its new owner nothing from before (see `restart`).
    tenure_from: int = 1

    @staticmethod
    def create_id(key: str) -> UUID:
        return session_id(key)

    # -- the events it records: the store keeps their names and fields -----------------

    class SessionCreated(Aggregate.Created):
        key: str
        name: str
        engine: str
        owner: str

    class QrIssued(Aggregate.Event):
        code: str
        timeout: float
        expires_at: datetime

    class PairCodeIssued(Aggregate.Event):
        code: str
        timeout: float
        expires_at: datetime

    class Authenticated(Aggregate.Event):
        pass

    class Ready(Aggregate.Event):
        pass

    class Disconnected(Aggregate.Event):
        reason: str

    class Restarted(Aggregate.Event):
        name: str
        engine: str
        owner: str | None = None  # none in events recorded before keys could change hands

    @event(SessionCreated)
    def __init__(self, key: str, name: str, engine: str, owner: str) -> None:
        self.key = key
        self.name = name
        self.engine = engine
        self.owner = owner
        self._state = INITIAL_STATE.value
        self.holds_credentials = False
        self.qr_code: str | None = None
        self.qr_expires_at: datetime | None = None
        self._reason: str | None = None

    # -- commands ---------------------------------------------------------------------

    def issue_qr(self, code: str, timeout: float, now: datetime) -> None:
        if timeout <= 0:
            raise ValueError(f"a QR code's timeout must be positive, not {timeout}")
        self._require("issue_qr", "show a QR code")
        self._qr_issued(code=code, timeout=timeout, expires_at=now + timedelta(seconds=timeout))

    def issue_pair_code(self, code: str, timeout: float, now: datetime) -> None:
        if timeout <= 0:
            raise ValueError(f"a pairing code's timeout must be positive, not {timeout}")
        self._require("issue_pair_code", "show a pairing code")
        expires_at = now + timedelta(seconds=timeout)
        self._pair_code_issued(code=code, timeout=timeout, expires_at=expires_at)

    def authenticate(self) -> None:
        self._require("authenticate", "authenticate")
        self._authenticated()

    def mark_ready(self) -> None:
        self._require("mark_ready", "mark the device ready")
        self._ready()

    def disconnect(self, reason: DisconnectReason) -> None:
        facts = {"deletes_credentials": reason.deletes_credentials}
        self._require("disconnect", f"end it ({reason})", facts)
        self._disconnected(reason=reason.value)

    def restart(self, name: str, engine: str, owner: str | None = None) -> None:
        """A new pairing on the key, for `owner` (by default its present owner). Another
        identity may take over only a key that ended holding nothing: no live device,
        no credentials."""
        self._require("restart", "start a new pairing")
        owner = owner or self.owner
        if owner != self.owner and self.holds_credentials:
            raise InvalidTransitionError(self.key, "hand it to another identity", "linked")
        self._restarted(name=name, engine=engine, owner=owner)

    # -- queries ----------------------------------------------------------------------

    # State and reason are kept as their plain values: snapshots store an aggregate's
    # attributes as JSON, which would bring a str enum back as a bare str.
    @property
    def state(self) -> SessionState:
        return _STATE_OF[self._state]  # SessionState(...) without the enum call's cost

    @property
    def reason(self) -> DisconnectReason | None:
        return DisconnectReason(self._reason) if self._reason is not None else None

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    def qr_seconds_left(self, now: datetime) -> float:
        """Seconds the current QR code has left (0 if none)."""
        return _seconds_left(self.qr_expires_at if self.state is S.QR else None, now)

    def pair_code_seconds_left(self, now: datetime) -> float:
        return _seconds_left(self.pair_code_expires_at if self.state is S.QR else None, now)

    def pairing_seconds_left(self, now: datetime) -> float:
        """Seconds until neither the QR code nor the pairing code can be used."""
        return max(self.qr_seconds_left(now), self.pair_code_seconds_left(now))

    @property
    def claimable(self) -> bool:
        """Ended, holding nothing (deleted, logged out, expired): free for anyone to take."""
        return self.state is S.DISCONNECTED and not self.holds_credentials

    @property
    def offline_linked(self) -> bool:
        """A paired device that is offline with its credentials: it may come back online."""
        return not self.is_live and self.can("mark_ready")

    @property
    def needs_an_engine(self) -> bool:
        """Live, or a paired device offline with its credentials: some process should run it."""
        return self.is_live or self.offline_linked

    def can(self, trigger: str) -> bool:
        return allowed_destination(self, trigger) is not None

    # -- events: pure assignments, replayed from the store ----------------------------
    # Each enters the state the table gives its trigger from the state it finds, so the
    # table is the only place a destination is written (stored events carry none).

    @event(QrIssued)
    def _qr_issued(self, code: str, timeout: float, expires_at: datetime) -> None:
        self._enter("issue_qr")
        self.qr_code = code
        self.qr_expires_at = expires_at

    @event(PairCodeIssued)
    def _pair_code_issued(self, code: str, timeout: float, expires_at: datetime) -> None:
        self._enter("issue_pair_code")
        self.pair_code = code
        self.pair_code_expires_at = expires_at

    @event(Authenticated)
    def _authenticated(self) -> None:
        self._enter("authenticate")
        self.holds_credentials = True
        self._forget_qr()

    @event(Ready)
    def _ready(self) -> None:
        self._enter("mark_ready")
        self._reason = None

    @event(Disconnected)
    def _disconnected(self, reason: str) -> None:
        self._enter("disconnect")
        self._reason = reason
        if DisconnectReason(reason).deletes_credentials:
            self.holds_credentials = False
        self._forget_qr()

    @event(Restarted)
    def _restarted(self, name: str, engine: str, owner: str | None = None) -> None:
        if owner is not None and owner != self.owner:
            self.owner = owner
            self.tenure_from = self.version + 1  # this event's: versions are applied after
        self._enter("restart")
        self.name = name
        self.engine = engine
        self._reason = None
        # A restart is a new pairing: any credentials left by a lost connection are dropped.
        self.holds_credentials = False

    def _enter(self, trigger: str) -> None:
        self._state = destination(trigger, self.state).value

    def _forget_qr(self) -> None:
        self.qr_code = None
        self.qr_expires_at = None
        self.pair_code = None
        self.pair_code_expires_at = None

    def _require(self, trigger: str, action: str, facts: dict[str, bool] | None = None) -> None:
        """`action` says, in the client's words, what was refused."""
        if allowed_destination(self, trigger, facts) is None:
            raise InvalidTransitionError(self.key, action, self.state.value)


_STATE_OF: dict[str, SessionState] = {state.value: state for state in SessionState}


def _seconds_left(deadline: datetime | None, now: datetime) -> float:
    return 0.0 if deadline is None else max(0.0, (deadline - now).total_seconds())
