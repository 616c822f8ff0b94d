"""A session's history as an auditor reads it: each recorded event and the state it left.

One query serves the CLI, the HTTP API and `session.history`, a page at a time: a key may
have any number of events, and a reply, its memory and its CPU must not grow with them.
QR texts are pairing secrets: history shows each code's timeout, expiry and a short
fingerprint, never the code; a proxy shows as `scheme://host:port`, never its credentials.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import AggregateEvent, DomainEventProtocol

from domain.application.sessions import DeviceSessions
from domain.model.errors import InvalidPageError
from domain.model.proxy import public_proxy
from domain.model.session import DeviceSession, tenure_version

Record = dict[str, Any]
# Bookkeeping every stored event carries; records show it as version/type/timestamp.
_ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp"})
# Fields events gained with extensions (a session's proxy, a disconnection's cause).
_SHOWN_WHEN_SET = ("proxy", "cause")
# Events per page when the reader does not say, and the most a reader may ask for.
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True)
class HistoryPage:
    """Some of a key's records, oldest first, and `next`: the `after` that reads the page
    that follows (None: this page reaches the last version, or `at`)."""

    events: list[Record]
    next: int | None


def qr_fingerprint(code: str) -> str:
    """Enough to tell codes apart, nothing to rebuild one from."""
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def event_record(
    event: DomainEventProtocol[UUID], *, tenure_from: int = 1, key: str = "", **extra: Any
) -> Record:
    """JSON-ready: `version`, `type`, `timestamp`, any `extra`, then the event's fields.

    Versions count from `tenure_from`, the event that gave the key (`key`) to its present
    owner, as 1; that event (a `Restarted` on a key someone else had) reads as the
    `SessionCreated` it is to them. An owner learns nothing of a key's earlier owners, not
    even that there were any; the auditor's view (tenure_from 1) shows the stream as stored.
    """
    fields = {k: _json(v) for k, v in vars(event).items() if k not in _ENVELOPE}
    kind = type(event).__name__
    first_of_tenure = tenure_from > 1 and event.originator_version == tenure_from
    if first_of_tenure and isinstance(event, DeviceSession.Restarted):
        kind, fields = DeviceSession.SessionCreated.__name__, {"key": key, **fields}
    if "code" in fields:
        fields["fingerprint"] = qr_fingerprint(fields.pop("code"))
    if fields.get("proxy") is not None:  # its credentials are secrets
        fields["proxy"] = public_proxy(fields["proxy"])
    for extension in _SHOWN_WHEN_SET:  # none: the record reads as before the extension
        if extension in fields and fields[extension] is None:
            del fields[extension]
    return {
        "version": tenure_version(event.originator_version, tenure_from),
        "type": kind,
        "timestamp": _json(event.timestamp),  # type: ignore[attr-defined]
        **extra,
        **fields,
    }


def history_page(
    sessions: DeviceSessions,
    key: str,
    *,
    after: int = 0,
    limit: int = PAGE_SIZE,
    at: int | None = None,
    tenure_from: int = 1,
) -> HistoryPage:
    """Up to `limit` records after version `after` (up to version `at`, if given), the
    versions counted from `tenure_from` as 1 (see event_record).

    Reads the page's events and, for the state column, the session as it was before them
    (from the latest snapshot before the page, plus the events since): never the whole
    stream, so a page costs the same at the start of a long history and at its end.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidPageError(f"limit must be 1 to {MAX_PAGE_SIZE} events, not {limit}", key=key)
    # The stream's versions: the owner's `after` and `at`, moved to where their tenure starts.
    offset = tenure_from - 1
    first, last = after + offset, None if at is None else at + offset
    # One more than asked for tells, without counting, whether another page follows.
    events = sessions.history(key, last, after=first, limit=limit + 1)
    follows = len(events) > limit
    events = events[:limit]
    before = sessions.state_at(key, first) if first and events else None
    records = session_history(events, before, tenure_from)
    return HistoryPage(records, after + limit if follows else None)


def session_history(
    events: Iterable[DomainEventProtocol[UUID]],
    before: DeviceSession | None = None,
    tenure_from: int = 1,
) -> list[Record]:
    """Replay `events` in order, starting from the session as it was `before` them (None:
    from the first event); each record also says the session's state after it."""
    records = []
    session: Any = before
    for event in events:
        assert isinstance(event, AggregateEvent)
        session = event.mutate(session)
        assert isinstance(session, DeviceSession)
        state = session.state.value
        records.append(event_record(event, tenure_from=tenure_from, key=session.key, state=state))
    return records


def export_records(sessions: DeviceSessions, since: int = 0) -> Iterator[Record]:
    """Every event of every session in recorded order, each with its global `position`
    and, as in a history, the session's `state` after it."""
    latest: dict[UUID, DeviceSession] = {}  # each session as the export has left it
    for position, event in sessions.notifications(since):
        assert isinstance(event, AggregateEvent)
        session: Any = latest.get(event.originator_id)
        if session is None:
            created = next(iter(sessions.events.get(event.originator_id, lte=1)))
            key = created.key  # type: ignore[attr-defined]
            version = event.originator_version
            session = sessions.state_at(key, version - 1) if version > 1 else None
        session = event.mutate(session)
        assert isinstance(session, DeviceSession)
        latest[event.originator_id] = session
        record = event_record(event, state=session.state.value)
        yield {"position": position, "key": session.key, **record}


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
