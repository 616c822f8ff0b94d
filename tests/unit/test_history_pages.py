"""History pages: a page reads its own events (and a snapshot's worth), never the stream;
the CLI's table shows stored strings so that none can forge a cell, column or row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.store.config import StoreConfig, open_store
from domain.application.history import MAX_PAGE_SIZE, history_page, session_history
from domain.application.sessions import DeviceSessions
from domain.model.errors import InvalidPageError, VersionOutOfRangeError
from entrypoints.audit import shown
from entrypoints.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENTS = 2000
INTERVAL = 50


@pytest.fixture(scope="module")
def sessions() -> Iterator[DeviceSessions]:
    store = open_store(StoreConfig(kind="memory", snapshot_interval=INTERVAL))
    store.create("long", "Phone", "simulator", "alice")
    for number in range(EVENTS - 1):
        store.update("long", lambda s, n=number: s.issue_qr(f"code-{n}", 20, NOW))
    yield store
    store.close()


class RowsRead:
    """Counts the rows the store's recorders return (events and snapshots)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sessions: DeviceSessions) -> None:
        self.rows = 0
        assert sessions.snapshots is not None
        for recorder in (sessions.events.recorder, sessions.snapshots.recorder):
            monkeypatch.setattr(recorder, "select_events", self._counting(recorder.select_events))

    def _counting(self, select: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            rows = select(*args, **kwargs)
            self.rows += len(rows)
            return rows

        return counted


@pytest.mark.parametrize("after", [0, 1, 49, 50, 51, 999, 1899, 1950, 1999])
def test_a_page_reads_its_events_and_at_most_a_snapshot_interval_more(
    sessions: DeviceSessions, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    read = RowsRead(monkeypatch, sessions)
    page = history_page(sessions, "long", after=after, limit=100)
    returned = len(page.events)
    assert [r["version"] for r in page.events] == list(range(after + 1, after + returned + 1))
    # The page (and one more, to know whether another follows), the newest event, and
    # the session before the page: a snapshot and the events since it.
    assert read.rows <= returned + 1 + 1 + 1 + INTERVAL


def test_pages_join_up_to_the_whole_history(sessions: DeviceSessions) -> None:
    everything = session_history(sessions.history("long"))
    joined: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = history_page(sessions, "long", after=after, limit=333)
        joined += page.events
        after = page.next
    assert joined == everything
    assert history_page(sessions, "long", after=1990, limit=10).next is None
    assert history_page(sessions, "long", after=1989, limit=10).next == 1999
    at = history_page(sessions, "long", after=100, limit=100, at=150)
    assert (at.events, at.next) == (everything[100:150], None)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"limit": 0}, InvalidPageError),
        ({"limit": MAX_PAGE_SIZE + 1}, InvalidPageError),
        ({"after": -1}, VersionOutOfRangeError),
        ({"after": EVENTS + 1}, VersionOutOfRangeError),
        ({"at": 0}, VersionOutOfRangeError),
        ({"at": EVENTS + 1}, VersionOutOfRangeError),
    ],
)
def test_pages_that_cannot_be_read_are_refused(
    sessions: DeviceSessions, arguments: dict[str, int], error: type[Exception]
) -> None:
    with pytest.raises(error) as refused:
        history_page(sessions, "long", **arguments)
    assert getattr(refused.value, "code", None) == "invalid_payload"


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("baileys", "baileys"),
        (60.0, "60.0"),
        ("My Device", "'My Device'"),
        ("  engine=x  owner=y", "'  engine=x  owner=y'"),
        ("a=b", "'a=b'"),
        ("evil\u202egnp.exe", "'evil\\u202egnp.exe'"),
        ("one\u2028two\u2029three", "'one\\u2028two\\u2029three'"),
        ("tab\there", "'tab\\there'"),
        ("no\u00a0break", "'no\\xa0break'"),
        ("it's", '"it\'s"'),
        ("", "''"),
    ],
)
def test_the_table_shows_each_value_as_one_unmistakable_cell(value: object, cell: str) -> None:
    assert shown(value) == cell


def test_a_history_allowance_must_fit_the_largest_page() -> None:
    with pytest.raises(ValidationError, match="less than one page of 1000 records"):
        Settings(rate_limit_history="1000/second;500/minute")
    with pytest.raises(ValidationError):
        Settings(rate_limit_history="lots")
    assert Settings(rate_limit_history="").rate_limit_history == ""
    assert Settings().rate_limit_history == "1000/second;20000/minute"
