"""The DeviceSession aggregate: one WhatsApp device being linked. Its lifecycle (states,
reasons, the transition table) is domain.model.lifecycle; names are re-exported here.
What is derived from its state (queries, no events) is domain.model.session_view."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
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
    DisconnectCause,
    DisconnectReason,
    SessionState,
    allowed_destination,
    destination,
)
from domain.model.session_view import SessionView

__all__ = [
    "LIVE_STATES",
    "PAIRING_STATES",
    "SETTLED_STATES",
    "TRANSITIONS",
    "TRANSITION_TABLE",
    "DeviceSession",
    "DisconnectCause",
    "DisconnectReason",
    "SessionState",
    "allowed_destination",
    "session_id",
    "tenure_version",
]

SESSION_NAMESPACE = uuid5(NAMESPACE_URL, "https://pairgate.dev/sessions")


def tenure_version(version: int, tenure_from: int) -> int:
    """A stream's version as the key's present owner counts it: 1 at `tenure_from`, the
    event that gave them the key (a key another identity had tells them nothing of that)."""
    return version - tenure_from + 1


@lru_cache(maxsize=8192)  # a SHA-1 each; every command and report on a key asks for it
def session_id(key: str) -> UUID:
    """One key, one event stream: creating a key twice is a store integrity error."""
    return uuid5(SESSION_NAMESPACE, key)


class DeviceSession(SessionView, Aggregate):
    """A device's pairing lifecycle. Commands check the table; `@event` bodies only assign."""

    # Class defaults: snapshots taken before these attributes existed still load.
    pair_code: str | None = None
    pair_code_expires_at: datetime | None = None
    # The version from which the current owner holds the key: a key that another identity
    # took over after it ended shows its new owner nothing from before (see `restart`).
    tenure_from: int = 1
    # The proxy its engine dials through (with its credentials: see domain.model.proxy).
    proxy: str | None = None
    passkey_options: dict[str, Any] | None = None
    passkey_expires_at: datetime | None = None

    @staticmethod
    def create_id(key: str) -> UUID:
        return session_id(key)

    # -- the events it records: the store keeps their names and fields -----------------

    class SessionCreated(Aggregate.Created):
        key: str
        name: str
        engine: str
        owner: str
        proxy: str | None = None  # none in events recorded before sessions had proxies

    class QrIssued(Aggregate.Event):
        code: str
        timeout: float
        expires_at: datetime

    class PairCodeIssued(Aggregate.Event):
        code: str
        timeout: float
        expires_at: datetime

    class PasskeyRequested(Aggregate.Event):
        options: dict[str, Any]
        timeout: float
        expires_at: datetime

    class Authenticated(Aggregate.Event):
        pass

    class Ready(Aggregate.Event):
        pass

    class Disconnected(Aggregate.Event):
        reason: str
        cause: str | None = None  # a DisconnectCause, when the reason alone is not the truth

    class Restarted(Aggregate.Event):
        name: str
        engine: str
        owner: str | None = None  # none in events recorded before keys could change hands
        proxy: str | None = None

    @event(SessionCreated)
    def __init__(
        self, key: str, name: str, engine: str, owner: str, proxy: str | None = None
    ) -> None:
        self.key = key
        self.name = name
        self.engine = engine
        self.owner = owner
        self.proxy = proxy
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

    def request_passkey(self, options: dict[str, Any], timeout: float, now: datetime) -> None:
        if timeout <= 0:
            raise ValueError(f"a passkey request's timeout must be positive, not {timeout}")
        self._require("request_passkey", "ask for a passkey")
        expires_at = now + timedelta(seconds=timeout)
        self._passkey_requested(options=options, timeout=timeout, expires_at=expires_at)

    def authenticate(self) -> None:
        self._require("authenticate", "authenticate")
        self._authenticated()

    def mark_ready(self) -> None:
        self._require("mark_ready", "mark the device ready")
        self._ready()

    def disconnect(self, reason: DisconnectReason, cause: DisconnectCause | None = None) -> None:
        if reason is DisconnectReason.QR_EXPIRED and self.passkey_pending:  # scanned, not expired
            reason, cause = DisconnectReason.SESSION_REVOKED, DisconnectCause.PASSKEY_UNANSWERED
        facts = {"deletes_credentials": reason.deletes_credentials}
        self._require("disconnect", f"end it ({reason})", facts)
        self._disconnected(reason=reason.value, cause=cause.value if cause else None)

    def restart(
        self, name: str, engine: str, owner: str | None = None, proxy: str | None = None
    ) -> None:
        """A new pairing on the key, for `owner` (by default its present owner), through
        `proxy` (none: direct). Another identity may take over only a key that ended
        holding nothing: no live device, no credentials."""
        self._require("restart", "start a new pairing")
        owner = owner or self.owner
        if owner != self.owner and self.holds_credentials:
            raise InvalidTransitionError(self.key, "hand it to another identity", "linked")
        self._restarted(name=name, engine=engine, owner=owner, proxy=proxy)

    # -- versions as the owner counts them ---------------------------------------------

    @property
    def tenure_version(self) -> int:
        """The version its owner sees (see the function `tenure_version`)."""
        return tenure_version(self.version, self.tenure_from)

    def stored_version(self, tenure_version: int) -> int:
        """The stream's version of the owner's `tenure_version`."""
        return tenure_version + self.tenure_from - 1

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

    @event(PasskeyRequested)
    def _passkey_requested(
        self, options: dict[str, Any], timeout: float, expires_at: datetime
    ) -> None:
        self._enter("request_passkey")
        self._forget_qr()  # scanned: no code is shown any more
        self.passkey_options = options
        self.passkey_expires_at = expires_at

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
    def _disconnected(self, reason: str, cause: str | None = None) -> None:
        self._enter("disconnect")
        self._reason = reason
        if DisconnectReason(reason).deletes_credentials:
            self.holds_credentials = False
        self._forget_qr()

    @event(Restarted)
    def _restarted(
        self, name: str, engine: str, owner: str | None = None, proxy: str | None = None
    ) -> None:
        if owner is not None and owner != self.owner:
            self.owner = owner
            self.tenure_from = self.version + 1  # this event's: versions are applied after
        self._enter("restart")
        self.name = name
        self.engine = engine
        self.proxy = proxy
        self._reason = None
        # A restart is a new pairing: any credentials left by a lost connection are dropped.
        self.holds_credentials = False

    def _enter(self, trigger: str) -> None:
        self._state = destination(trigger, self.state).value

    def _forget_qr(self) -> None:
        self.qr_code = self.pair_code = None
        self.qr_expires_at = self.pair_code_expires_at = self.passkey_expires_at = None
        self.passkey_options = None

    def _require(self, trigger: str, action: str, facts: dict[str, bool] | None = None) -> None:
        """`action` says, in the client's words, what was refused."""
        if allowed_destination(self, trigger, facts) is None:
            raise InvalidTransitionError(self.key, action, self.state.value)
