"""SessionView: what a DeviceSession's recorded state says, derived and read-only (no
commands, no events): its state and reason, whether it is live, how long its codes last.
A mixin of the aggregate (domain.model.session), which records the attributes it reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.model.lifecycle import LIVE_STATES, DisconnectReason, SessionState, allowed_destination

S = SessionState


class SessionView:
    # Recorded by the aggregate's events (domain.model.session).
    _state: str
    _reason: str | None
    holds_credentials: bool
    qr_expires_at: datetime | None
    pair_code_expires_at: datetime | None
    passkey_options: dict[str, Any] | None
    passkey_expires_at: datetime | None

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
        """Seconds until no code can be used and no passkey answered."""
        passkey = _seconds_left(self.passkey_expires_at if self.passkey_pending else None, now)
        return max(self.qr_seconds_left(now), self.pair_code_seconds_left(now), passkey)

    @property
    def passkey_pending(self) -> bool:
        """WhatsApp waits for the account's passkey before it links the device."""
        return self.state is S.QR and self.passkey_options is not None

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


_STATE_OF: dict[str, SessionState] = {state.value: state for state in SessionState}


def _seconds_left(deadline: datetime | None, now: datetime) -> float:
    return 0.0 if deadline is None else max(0.0, (deadline - now).total_seconds())
