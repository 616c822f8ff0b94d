"""What each neonize (whatsmeow) event means for pairgate.

whatsmeow's events, as neonize hands them over, become one of a few signals; the engine
turns signals into EngineEvents reports. Kept apart from the engine so that the mapping
is one table to read (and to test with real neonize event objects).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

from adapters.engines.neonize import library
from domain.model.session import DisconnectReason

log = logging.getLogger(__name__)


class Signal(enum.Enum):
    PAIRED = "paired"  # the phone scanned a code (or typed the pairing code)
    PAIR_FAILED = "pair failed"  # logged; whatsmeow keeps pairing or drops the connection
    CONNECTED = "connected"  # online with credentials (after pairing or a reconnect)
    RESTORED = "restored"  # keep-alive answers again: online, if it was reported lost
    LOST = "lost"  # the connection dropped; whatsmeow reconnects a paired device
    LOGGED_OUT = "logged out"  # the phone removed the linked device
    REVOKED = "revoked"  # WhatsApp rejects these credentials, or this client


# ConnectFailure reasons that end the link: the credentials (or this client) are refused.
# The others (generic, 5xx, experimental) are transient and whatsmeow retries them.
REVOKING_FAILURES = frozenset(
    {
        "LOGGED_OUT",
        "TEMP_BANNED",
        "MAIN_DEVICE_GONE",
        "UNKNOWN_LOGOUT",
        "CLIENT_OUTDATED",
        "BAD_USER_AGENT",
    }
)

REASONS = {
    Signal.LOST: DisconnectReason.CONNECTION_LOST,
    Signal.LOGGED_OUT: DisconnectReason.USER_LOGGED_OUT,
    Signal.REVOKED: DisconnectReason.SESSION_REVOKED,
}


def _pair_status(event: Any) -> Signal:
    success = library.proto().PairStatus.PStatus.Value("SUCCESS")
    return Signal.PAIRED if event.Status == success else Signal.PAIR_FAILED


def _connect_failure(event: Any) -> Signal:
    reason = library.proto().ConnectFailureReason.Name(event.Reason)
    return Signal.REVOKED if reason in REVOKING_FAILURES else Signal.LOST


def translators() -> dict[type[Any], Callable[[Any], Signal]]:
    """Each neonize event class the engine registers, with what it means."""
    ev = library.events()

    def always(signal: Signal) -> Callable[[Any], Signal]:
        return lambda _event: signal

    return {
        ev.PairStatusEv: _pair_status,
        ev.ConnectedEv: always(Signal.CONNECTED),
        ev.LoggedOutEv: always(Signal.LOGGED_OUT),
        ev.DisconnectedEv: always(Signal.LOST),
        ev.StreamReplacedEv: always(Signal.REVOKED),  # another client took the credentials
        ev.TemporaryBanEv: always(Signal.REVOKED),
        ev.ConnectFailureEv: _connect_failure,
        ev.ClientOutdatedEv: always(Signal.REVOKED),
        ev.KeepAliveTimeoutEv: always(Signal.LOST),
        ev.KeepAliveRestoredEv: always(Signal.RESTORED),
        # Unknown stream errors; whatsmeow then drops the socket and reconnects.
        ev.StreamErrorEv: always(Signal.LOST),
    }


def translate(event: Any) -> Signal:
    """The signal of one neonize event object (KeyError for a class not listed)."""
    return translators()[type(event)](event)


def describe(event: Any) -> str:
    """A one-line account of an event for the log (protobuf text, no raw nodes)."""
    fields = ", ".join(
        f"{field.name}={value}" for field, value in event.ListFields() if not field.message_type
    )
    return f"{type(event).__name__}({fields})"
