"""The read model's projection takes this process's saves from memory (RecentEvents)
instead of reading them back, and keeps the rows it wrote last: what it writes is what
projecting the log writes, also when another process (another projection on the same
store) moves the rows on in between, on each store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from eventsourcing.persistence import Notification, Recording

from adapters.store.config import open_store
from adapters.store.sealing import Sealer
from adapters.store.session_rows import session_rows
from domain.application.recent import RecentEvents
from domain.application.session_rows import Filters, SessionRowStore, SessionsProjection
from domain.application.sessions import DeviceSessions
from domain.model.session import SessionState
from entrypoints.settings import Settings

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def process(settings: Settings) -> tuple[DeviceSessions, SessionRowStore, SessionsProjection]:
    """What one pairgate process holds: its store, the rows, its projection of them."""
    config = settings.store_config()
    sessions = open_store(config)
    rows = session_rows(sessions, Sealer(config.cipher_key))
    return sessions, rows, SessionsProjection(sessions, rows)


def catch_up(projection: SessionsProjection) -> int:
    handled, total = projection.page, 0
    while handled >= projection.page:
        handled = projection.catch_up()
        total += handled
    return total


def row(rows: SessionRowStore, key: str, owner: str = "alice") -> tuple[object, ...]:
    [found] = [r for r in rows.select(Filters(owner), None, 100) if r.key == key]
    return (found.state, found.version, found.linked, found.reason)


def test_a_row_moved_on_by_another_process_is_read_again(settings: Settings) -> None:
    ours, our_rows, our_projection = process(settings)
    theirs, their_rows, their_projection = process(settings)
    try:
        ours.create("handoff-key", "Phone", "simulator", "alice")
        ours.update("handoff-key", lambda s: s.issue_qr("2@code", 60, NOW))
        assert catch_up(our_projection) == 2
        # Another process records the scan and projects it: the rows move on without us.
        theirs.update("handoff-key", lambda s: s.authenticate())
        assert catch_up(their_projection) == 1
        ours.update("handoff-key", lambda s: s.mark_ready())
        assert catch_up(our_projection) == 1
        # Built on the row as the other process left it (linked since the scan), not on
        # the one this projection wrote last.
        assert row(our_rows, "handoff-key") == (SessionState.READY, 4, True, None)
    finally:
        ours.close()
        theirs.close()


def test_handed_events_project_as_the_log_does(settings: Settings) -> None:
    sessions, rows, _ = process(settings)
    projection = SessionsProjection(sessions, rows, page=500)  # more than a log section
    keys = [f"handoff-{index}" for index in range(60)]
    try:
        for index, key in enumerate(keys):
            sessions.create(key, f"Phone {index}", "simulator", "alice")
            sessions.update(key, lambda s: s.issue_qr("2@code", 60, NOW))
            if index % 3:
                sessions.update(key, lambda s: s.authenticate())
        assert projection.catch_up() == 160  # handed over from memory
        handed = {key: row(rows, key) for key in keys}
        rows.reset()  # the same log, read back from the store this time: two sections
        sessions.recent = RecentEvents()
        assert projection.catch_up() == 160
        assert {key: row(rows, key) for key in keys} == handed
        assert handed["handoff-0"] == (SessionState.QR, 2, False, None)
        assert handed["handoff-1"] == (SessionState.AUTHENTICATED, 3, True, None)
    finally:
        sessions.close()


def test_recent_events_hand_only_runs_without_gaps() -> None:
    recent = RecentEvents(capacity=4)
    events = {position: object() for position in range(1, 8)}

    def saved(*positions: int) -> list[Recording[Any]]:
        """What the store's `put` returns for events saved at these positions."""
        return [
            Recording(
                events[p],
                Notification(
                    id=p, originator_id=uuid4(), originator_version=1, topic="t", state=b""
                ),
            )
            for p in positions
        ]

    assert recent.after(0, 10) is None  # nothing saved here: read the log
    recent.note(saved(1, 2))
    assert recent.after(0, 10) == [(1, events[1]), (2, events[2])]
    assert recent.after(0, 1) == [(1, events[1])]
    assert recent.after(2, 10) is None  # nothing after 2 here (another process's saves?)
    recent.note(saved(4))  # 3: another process's, or a rolled-back insert
    assert recent.after(0, 10) is None  # a gap before something noted: read the log
    assert recent.after(3, 10) == [(4, events[4])]
    recent.note(saved(5, 6))  # over capacity: 1 and 2 go
    assert recent.after(0, 10) is None
    assert recent.after(3, 2) == [(4, events[4]), (5, events[5])]
