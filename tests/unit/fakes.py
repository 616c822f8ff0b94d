"""Fakes behind the application's ports, shared by the unit tests."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.application.ports import (
    LIST_PAGE_SIZE,
    EngineEvents,
    SessionRow,
    SessionRowPage,
)
from domain.model.errors import InvalidPageError
from domain.model.session import SessionState


@dataclass
class FakeEngine:
    """A WhatsAppEngine that records what it is told; tests speak for it through `events`."""

    name: str = "fake"
    calls: list[tuple[str, str]] = field(default_factory=list)
    events: dict[str, EngineEvents] = field(default_factory=dict)
    fail_start: Exception | None = None
    proxies: dict[str, str | None] = field(default_factory=dict)  # each key's at its start

    async def start(
        self,
        key: str,
        events: EngineEvents,
        *,
        phone: str | None = None,
        proxy: str | None = None,
    ) -> None:
        self.calls.append(("start", key))
        self.proxies[key] = proxy
        if self.fail_start is not None:
            raise self.fail_start
        self.events[key] = events

    async def answer_passkey(self, key: str, response: dict[str, Any]) -> None:
        self.calls.append(("answer_passkey", key))

    async def stop(self, key: str) -> None:
        self.calls.append(("stop", key))

    async def logout(self, key: str) -> None:
        self.calls.append(("logout", key))

    async def discard(self, key: str) -> None:
        self.calls.append(("discard", key))

    async def close(self) -> None:
        self.calls.append(("close", ""))

    def told(self, key: str) -> list[str]:
        return [call for call, k in self.calls if k == key]

    def since_last_start(self, key: str) -> list[str]:
        told = self.told(key)
        last_start = max((i for i, call in enumerate(told) if call == "start"), default=-1)
        return told[last_start + 1 :]


class InMemorySessionIndex:
    """SessionIndex over a list of rows (the read model itself lives in adapters/store)."""

    def __init__(self, rows: list[SessionRow]) -> None:
        self.rows = rows

    async def page(
        self,
        owner: str,
        *,
        state: SessionState | None = None,
        engine: str | None = None,
        after: str | None = None,
        limit: int = LIST_PAGE_SIZE,
        search: str | None = None,
    ) -> SessionRowPage:
        ordered = sorted(
            (r for r in self.rows if r.owner == owner and state in (None, r.state)),
            key=lambda r: (r.updated_at, r.key),
            reverse=True,
        )
        ordered = [r for r in ordered if engine in (None, r.engine)]
        if search is not None:
            ordered = [r for r in ordered if r.key.startswith(search) or r.name.startswith(search)]
        if after is not None:
            try:
                stamp, _, key = base64.urlsafe_b64decode(after).decode().partition("|")
                position = (datetime.fromisoformat(stamp), key)
            except ValueError:
                raise InvalidPageError(f"not a cursor: {after!r}") from None
            ordered = [r for r in ordered if (r.updated_at, r.key) < position]
        rows = ordered[:limit]
        last = rows[-1] if len(ordered) > limit else None
        if last is None:
            return SessionRowPage(rows, None)
        cursor = f"{last.updated_at.isoformat()}|{last.key}".encode()
        return SessionRowPage(rows, base64.urlsafe_b64encode(cursor).decode())

    async def counts(self, owner: str) -> dict[SessionState, int]:
        states = [r.state for r in self.rows if r.owner == owner]
        return {state: states.count(state) for state in SessionState}
