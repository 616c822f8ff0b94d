"""A session's history as an auditor reads it: each recorded event and the state it left.

QR texts are pairing secrets: history shows each code's timeout, expiry and a short
fingerprint, never the code itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import AggregateEvent, DomainEventProtocol

from domain.session import DeviceSession

# Bookkeeping every stored event carries; entries show it as version/type/timestamp.
_ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp"})


@dataclass(frozen=True)
class HistoryEntry:
    version: int
    type: str
    timestamp: datetime
    state: str
    fields: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: `version`, `type`, `timestamp`, `state`, then the event's fields."""
        fields = {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in self.fields.items()
        }
        return {
            "version": self.version,
            "type": self.type,
            "timestamp": self.timestamp.isoformat(),
            "state": self.state,
            **fields,
        }


def qr_fingerprint(code: str) -> str:
    """Enough to tell codes apart, nothing to rebuild one from."""
    return hashlib.sha256(code.encode()).hexdigest()[:12]


def session_history(events: Iterable[DomainEventProtocol[UUID]]) -> list[HistoryEntry]:
    """Replay `events` in order, noting the state after each one."""
    entries = []
    session: Any = None
    for event in events:
        assert isinstance(event, AggregateEvent)
        session = event.mutate(session)
        assert isinstance(session, DeviceSession)
        entries.append(
            HistoryEntry(
                version=event.originator_version,
                type=type(event).__name__,
                timestamp=event.timestamp,
                state=session.state.value,
                fields=_public_fields(event),
            )
        )
    return entries


def _public_fields(event: DomainEventProtocol[UUID]) -> dict[str, Any]:
    fields = {k: v for k, v in vars(event).items() if k not in _ENVELOPE}
    if "code" in fields:
        fields["fingerprint"] = qr_fingerprint(fields.pop("code"))
    return fields
