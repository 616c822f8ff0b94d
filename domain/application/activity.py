"""What an operator's console watches: each event of the log as its session's row after
it (handed to listeners: the console's Socket.IO feed), and how many pairings each owner
started, completed and let expire in the last hour.

A projection of the log, not a handler of this process's saves: the sessions read model's
follower hands it each page's events with the rows it just wrote (SessionsProjection's
`changes`), so it costs a pairing nothing, and every process hears every process's
events (each console is fed by the process it is connected to). The hour's counts are
of the events this process has followed since it started.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.application.ports import Clock, SessionRow
from domain.application.sessions import Event
from domain.model.session import DeviceSession, DisconnectReason

log = logging.getLogger(__name__)

Listener = Callable[[SessionRow], Awaitable[None]]
WINDOW = timedelta(hours=1)
KINDS = ("started", "completed", "expired")


@dataclass(frozen=True)
class RecentPairings:
    """An owner's pairings in the window: started (a session created or restarted),
    completed (a code scanned or typed: authenticated), expired (`qr expired`)."""

    started: int
    completed: int
    expired: int
    since: datetime  # where the counted window begins (the process's start, if later)


def kind_of(event: Event) -> str | None:
    match event:
        case DeviceSession.SessionCreated() | DeviceSession.Restarted():
            return "started"
        case DeviceSession.Authenticated():
            return "completed"
        case DeviceSession.Disconnected(reason=reason):
            expired = DisconnectReason(reason) is DisconnectReason.QR_EXPIRED
            return "expired" if expired else None
    return None


class SessionActivity:
    """Fed by the sessions read model's follower (`observe`, on the event loop): each
    event of the log with its session's row after it, in the log's order."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._listeners: list[Listener] = []
        self._recent: dict[str, deque[tuple[datetime, str]]] = {}
        self._started = clock.now()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def observe(self, changes: Iterable[tuple[Event, SessionRow]]) -> None:
        for event, row in changes:
            if (kind := kind_of(event)) is not None:
                self._recent.setdefault(row.owner, deque()).append((row.updated_at, kind))
                self._prune(row.owner)
            for listener in self._listeners:
                try:
                    await listener(row)
                except Exception:  # one listener's failure is not the others' nor the log's
                    log.exception("a session activity listener failed", extra={"key": row.key})

    def recent(self, owner: str) -> RecentPairings:
        self._prune(owner)
        counted = dict.fromkeys(KINDS, 0)
        for _, kind in self._recent.get(owner, ()):
            counted[kind] += 1
        since = max(self._started, self._clock.now() - WINDOW)
        return RecentPairings(**counted, since=since)

    def _prune(self, owner: str) -> None:
        recent = self._recent.get(owner)
        horizon = self._clock.now() - WINDOW
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if recent is not None and not recent:
            del self._recent[owner]
