"""The console's Socket.IO extension (docs/protocol.md, Part 2, Consoles): `console.watch`
and the `session.changed` it brings. The seed's events and payloads are untouched: a
console hears its identity's sessions through one room of their own, without joining each
key's room (and so without their QR images)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adapters.payloads import Emission, EngineName, ReasonValue, Request, StateValue
from domain.application.ports import SessionRow


class WatchRequest(Request):
    """`console.watch`: no fields. Hear every session of this connection's identity."""


class WatchAccepted(Emission):
    ok: Literal[True]


class SessionChanged(Emission):
    """A session of the watching identity, as of a change just recorded: the row
    GET /api/sessions lists (field names as the seed's payloads)."""

    key: str
    name: str
    engine: EngineName
    state: StateValue
    reason: ReasonValue | None = Field(description="Only while disconnected")
    version: int = Field(description="The session's version after the change")
    updated_at: str = Field(description="When the change was recorded (ISO 8601, UTC)")


def changed(row: SessionRow) -> SessionChanged:
    return SessionChanged(
        key=row.key,
        name=row.name,
        engine=row.engine,
        state=row.state.value,
        reason=None if row.reason is None else row.reason.value,
        version=row.tenure_version,
        updated_at=row.updated_at.isoformat(),
    )


def console_room(identity: str) -> str:
    """The identity's console room. Key rooms are `session:<key>` and sid rooms have no
    colon: this prefix is a namespace of its own."""
    return f"console:{identity}"
