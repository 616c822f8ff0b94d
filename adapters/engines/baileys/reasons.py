"""What a closed Baileys socket means for pairgate: the one table from status to outcome.

Baileys ends every socket with `connection.update {connection: "close"}` and a Boom error
whose `output.statusCode` says why (its `DisconnectReason` enum). The sidecar forwards
the status and message as they are; this module decides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from domain.model.session import DisconnectReason


class BaileysStatus(enum.IntEnum):
    """Baileys' `DisconnectReason` values (408 is both `connectionLost` and `timedOut`)."""

    LOGGED_OUT = 401
    FORBIDDEN = 403
    TIMED_OUT = 408
    MULTIDEVICE_MISMATCH = 411
    CONNECTION_CLOSED = 428
    CONNECTION_REPLACED = 440
    BAD_SESSION = 500
    UNAVAILABLE_SERVICE = 503
    RESTART_REQUIRED = 515


# Baileys' message when the server's QR refs are used up: the last code timed out.
QR_REFS_ENDED = "QR refs attempts ended"


class Next(enum.Enum):
    RESTART = "restart"  # part of pairing: reconnect at once with the saved credentials
    QR_EXPIRED = "qr expired"  # the last QR code timed out unscanned
    END = "end"  # report `reason`; a paired device reconnects after a lost connection


@dataclass(frozen=True)
class Outcome:
    next: Next
    reason: DisconnectReason | None = None


_ENDS: dict[int, DisconnectReason] = {
    BaileysStatus.LOGGED_OUT: DisconnectReason.USER_LOGGED_OUT,
    BaileysStatus.CONNECTION_REPLACED: DisconnectReason.SESSION_REVOKED,
    BaileysStatus.FORBIDDEN: DisconnectReason.SESSION_REVOKED,
    BaileysStatus.MULTIDEVICE_MISMATCH: DisconnectReason.SESSION_REVOKED,
}


def outcome(status: int | None, message: str) -> Outcome:
    """What to do when a socket closed with `status` (None: no status, e.g. the sidecar died).

    Everything not listed (428, 408, 500, 503, unknown, none) is a lost connection.
    """
    if status == BaileysStatus.RESTART_REQUIRED:
        return Outcome(Next.RESTART)
    if status == BaileysStatus.TIMED_OUT and QR_REFS_ENDED in message:
        return Outcome(Next.QR_EXPIRED, DisconnectReason.QR_EXPIRED)
    lost = DisconnectReason.CONNECTION_LOST
    return Outcome(Next.END, lost if status is None else _ENDS.get(status, lost))
