"""Fakes behind the application's ports, shared by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain.application.ports import (
    EngineEvents,
)


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
