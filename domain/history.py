"""A session's history as an auditor reads it: each recorded event and the state it left.

One query serves the CLI, the HTTP API and `session.history`. QR texts are pairing
secrets: history shows each code's timeout, expiry and a short fingerprint, never the code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import AggregateEvent, DomainEventProtocol

from domain.services import DeviceSessions
from domain.session import DeviceSession

Record = dict[str, Any]
# Bookkeeping every stored event carries; records show it as version/type/timestamp.
_ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp"})


def qr_fingerprint(code: str) -> str:
    """Enough to tell codes apart, nothing to rebuild one from."""
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def event_record(event: DomainEventProtocol[UUID], **extra: Any) -> Record:
    """JSON-ready: `version`, `type`, `timestamp`, any `extra`, then the event's fields."""
    fields = {k: _json(v) for k, v in vars(event).items() if k not in _ENVELOPE}
    if "code" in fields:
        fields["fingerprint"] = qr_fingerprint(fields.pop("code"))
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "timestamp": _json(event.timestamp),  # type: ignore[attr-defined]
        **extra,
        **fields,
    }


def session_history(events: Iterable[DomainEventProtocol[UUID]]) -> list[Record]:
    """Replay `events` in order; each record also says the session's state after it."""
    records = []
    session: Any = None
    for event in events:
        assert isinstance(event, AggregateEvent)
        session = event.mutate(session)
        assert isinstance(session, DeviceSession)
        records.append(event_record(event, state=session.state.value))
    return records


def export_records(sessions: DeviceSessions, since: int = 0) -> Iterator[Record]:
    """Every event of every session in recorded order, each with its global `position`."""
    keys: dict[UUID, str] = {}
    for position, event in sessions.notifications(since):
        key = keys.get(event.originator_id)
        if key is None:
            created = next(iter(sessions.events.get(event.originator_id, lte=1)))
            key = keys[event.originator_id] = created.key  # type: ignore[attr-defined]
        yield {"position": position, "key": key, **event_record(event)}


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
