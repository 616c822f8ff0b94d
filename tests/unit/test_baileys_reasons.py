"""The one table from a closed Baileys socket to what pairgate does about it."""

from __future__ import annotations

import pytest

from adapters.engines.baileys.reasons import QR_REFS_ENDED, Next, outcome
from domain.model.session import DisconnectReason as Reason

OFFLINE = "WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)"


@pytest.mark.parametrize(
    ("status", "message", "next_step", "reason"),
    [
        (515, "Stream Errored (restart required)", Next.RESTART, None),
        (408, QR_REFS_ENDED, Next.QR_EXPIRED, Reason.QR_EXPIRED),
        (401, "Intentional Logout", Next.END, Reason.USER_LOGGED_OUT),
        (440, "Stream Errored (conflict)", Next.END, Reason.SESSION_REVOKED),
        (403, "Forbidden", Next.END, Reason.SESSION_REVOKED),
        (411, "Multidevice mismatch", Next.END, Reason.SESSION_REVOKED),
        (428, "Connection Closed", Next.END, Reason.CONNECTION_LOST),
        (408, OFFLINE, Next.END, Reason.CONNECTION_LOST),
        (500, "Bad session", Next.END, Reason.CONNECTION_LOST),
        (503, "Service unavailable", Next.END, Reason.CONNECTION_LOST),
        (599, "a status Baileys does not name", Next.END, Reason.CONNECTION_LOST),
        (None, "the Baileys sidecar exited", Next.END, Reason.CONNECTION_LOST),
    ],
)
def test_a_closed_socket_means(
    status: int | None, message: str, next_step: Next, reason: Reason | None
) -> None:
    result = outcome(status, message)
    assert (result.next, result.reason) == (next_step, reason)
