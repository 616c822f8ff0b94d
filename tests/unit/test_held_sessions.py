"""Held sessions: the sessions a process runs stay in memory, and never go stale."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from adapters.store.config import StoreConfig, open_store
from domain.application.sessions import IntegrityError
from domain.model.session import DisconnectReason, SessionState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_commands_on_a_held_session_skip_loading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = open_store(StoreConfig(data_dir=tmp_path))
    sessions.hold(sessions.create("dev", "Phone", "simulator", "alice").session)
    loads = 0
    select_events = sessions.recorder.select_events  # what loading a stream reads

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal loads
        loads += 1
        return select_events(*args, **kwargs)

    monkeypatch.setattr(sessions.recorder, "select_events", counted)
    sessions.update("dev", lambda s: s.issue_qr("code", 20, NOW))
    sessions.update("dev", lambda s: s.authenticate())
    assert loads == 0

    # What is held is what is stored: a reader with nothing held agrees, event for event.
    reader = open_store(StoreConfig(data_dir=tmp_path))
    assert vars(reader.get("dev")) == vars(sessions.get("dev"))
    assert [type(e).__name__ for e in reader.history("dev")] == [
        "SessionCreated",
        "QrIssued",
        "Authenticated",
    ]
    sessions.release("dev")
    sessions.get("dev")
    assert loads == 1  # released: read from the store again
    reader.close()
    sessions.close()


def test_readers_of_a_held_session_get_copies(tmp_path: Path) -> None:
    sessions = open_store(StoreConfig(data_dir=tmp_path))
    sessions.hold(sessions.create("dev", "Phone", "simulator", "alice").session)
    found = sessions.get("dev")
    found.issue_qr("never saved", 20, NOW)
    assert sessions.get("dev").state is SessionState.CREATED

    def refused(session: object) -> None:
        raise ValueError("a command that fails half-way")

    with pytest.raises(ValueError):
        sessions.update("dev", lambda s: (s.issue_qr("half", 20, NOW), refused(s)))
    assert sessions.get("dev").qr_code is None
    sessions.close()


def test_a_held_session_written_elsewhere_is_refused_then_reread(tmp_path: Path) -> None:
    """Another writer (a lease lost unnoticed): the save conflicts and nothing stale stays."""
    sessions = open_store(StoreConfig(data_dir=tmp_path))
    sessions.hold(sessions.create("dev", "Phone", "simulator", "alice").session)
    other = open_store(StoreConfig(data_dir=tmp_path))
    other.update("dev", lambda s: s.disconnect(DisconnectReason.CONNECTION_LOST))

    with pytest.raises(IntegrityError):
        sessions.update("dev", lambda s: s.issue_qr("code", 20, NOW))
    assert sessions.get("dev").state is SessionState.DISCONNECTED
    assert sessions.update("dev", lambda s: s.restart("Phone", "simulator")).session.version == 3
    other.close()
    sessions.close()


IMMUTABLE = (str, int, float, bool, type(None), datetime, UUID, enum.Enum)


def test_a_session_holds_only_immutable_values(tmp_path: Path) -> None:
    """Why a shallow copy of a held session is a safe working copy: nothing in it but its
    list of pending events can change in place. A mutable attribute added one day fails
    here rather than leaking changes into the held session."""
    sessions = open_store(StoreConfig(data_dir=tmp_path))
    sessions.hold(sessions.create("dev", "Phone", "simulator", "alice").session)
    moves = [
        lambda s: s.issue_qr("code", 20, NOW),
        lambda s: s.issue_pair_code("ABCD-EFGH", 60, NOW),
        lambda s: s.authenticate(),
        lambda s: s.mark_ready(),
        lambda s: s.disconnect(DisconnectReason.CONNECTION_LOST),
    ]
    for move in moves:
        session = sessions.update("dev", move).session
        values = dict(vars(session))
        assert values.pop("_pending_events") == []
        mutable = {n: type(v).__name__ for n, v in values.items() if not isinstance(v, IMMUTABLE)}
        assert mutable == {}, f"after {session.state}: mutable attributes {mutable}"
    sessions.close()
