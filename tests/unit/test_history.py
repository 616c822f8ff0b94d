"""A session's history: every event in order, the state it left, and no QR secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from domain.application.history import qr_fingerprint, session_history
from domain.application.sessions import DeviceSessions
from domain.model.session import DisconnectReason

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_history_lists_each_event_with_the_state_after_it() -> None:
    sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    sessions.create("device123", "My Device", "baileys", "alice")
    sessions.update("device123", lambda s: s.issue_qr("2@secret,k1,k2,k3", 60, NOW))
    sessions.update("device123", lambda s: s.authenticate())
    sessions.update("device123", lambda s: s.mark_ready())
    sessions.update("device123", lambda s: s.disconnect(DisconnectReason.USER_LOGGED_OUT))
    sessions.update("device123", lambda s: s.restart("New name", "neonize"))

    entries = session_history(sessions.history("device123"))

    assert [(e["version"], e["type"], e["state"]) for e in entries] == [
        (1, "SessionCreated", "created"),
        (2, "QrIssued", "qr"),
        (3, "Authenticated", "authenticated"),
        (4, "Ready", "ready"),
        (5, "Disconnected", "disconnected"),
        (6, "Restarted", "created"),
    ]
    created, qr, *_, disconnected, restarted = entries
    assert {k: created[k] for k in ("key", "name", "engine", "owner")} == {
        "key": "device123",
        "name": "My Device",
        "engine": "baileys",
        "owner": "alice",
    }
    assert qr["timeout"] == 60
    assert qr["expires_at"] == (NOW + timedelta(seconds=60)).isoformat()
    assert qr["fingerprint"] == qr_fingerprint("2@secret,k1,k2,k3")
    assert disconnected["reason"] == "user logged out"
    assert (restarted["name"], restarted["engine"]) == ("New name", "neonize")
    assert all(datetime.fromisoformat(e["timestamp"]).tzinfo is not None for e in entries)

    serialized = json.dumps(entries)
    assert "2@secret" not in serialized and '"code"' not in serialized
    assert "originator" not in serialized


def test_fingerprints_tell_codes_apart_without_revealing_them() -> None:
    first, second = qr_fingerprint("2@a,b,c,d"), qr_fingerprint("2@a,b,c,e")
    assert first != second and len(first) == 12
    assert "2@" not in first
