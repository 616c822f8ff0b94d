"""Snapshots: a long history loads from the latest snapshot, to the same session."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from adapters.store.config import StoreConfig, open_store
from domain.model.session import DisconnectReason, SessionState, session_id

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_snapshots_every_n_events_load_the_same_session(tmp_path: Path) -> None:
    writer = open_store(StoreConfig(data_dir=tmp_path, snapshot_interval=10))
    writer.create("long", "Phone", "simulator", "alice")
    for number in range(24):
        writer.update("long", lambda s, n=number: s.issue_qr(f"code-{n}", 20, NOW))
    writer.update("long", lambda s: s.disconnect(DisconnectReason.QR_EXPIRED))

    snapshots = list(writer.snapshots.get(session_id("long")))  # type: ignore[union-attr]
    assert [s.originator_version for s in snapshots] == [10, 20]

    replayer = open_store(StoreConfig(data_dir=tmp_path, snapshot_interval=0))
    from_snapshot, replayed = writer.get("long"), replayer.get("long")
    for session in (from_snapshot, replayed):
        assert session.version == 26
        assert session.state is SessionState.DISCONNECTED  # an enum again, not a bare str
        assert session.reason is DisconnectReason.QR_EXPIRED
    assert vars(from_snapshot) == vars(replayed)

    at_twenty = writer.state_at("long", 20)
    assert at_twenty.state is SessionState.QR and at_twenty.qr_code == "code-18"
    writer.close()
    replayer.close()
