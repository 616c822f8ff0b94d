"""What an operator's console watches, as recorded events happen in this process: each
event as its session's row after it (handed to listeners: the console's Socket.IO feed),
and how many pairings each owner started, completed and let expire in the last hour.

A handler of recorded events like the others (the bus hands it a key's events in order,
after the key's lock). Rows are moved on with the read model's own `project` (the
aggregate's `@event` bodies), from the last row this process saw of the key; a key it has
not seen yet is read once from the store. The hour's counts are this process's since it
started (several processes: each counts what it recorded).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.application.ports import Clock, SessionRow
from domain.application.session_rows import project
from domain.application.sessions import Event
from domain.model.session import DeviceSession, DisconnectReason

log = logging.getLogger(__name__)

Listener = Callable[[SessionRow], Awaitable[None]]
Lookup = Callable[[str], Awaitable[DeviceSession | None]]
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
    """`lookup`: the session of a key not seen yet (after its event was saved)."""

    def __init__(self, clock: Clock, lookup: Lookup, remembered: int = 10_000) -> None:
        self._clock = clock
        self._lookup = lookup
        self._remembered = remembered
        self._rows: OrderedDict[str, SessionRow] = OrderedDict()
        self._listeners: list[Listener] = []
        self._recent: dict[str, deque[tuple[datetime, str]]] = {}
        self._started = clock.now()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def recorded(self, key: str, event: Event) -> None:
        try:
            row = await self._row_after(key, event)
        except Exception:  # the console misses a change; pairings go on
            self._rows.pop(key, None)  # read afresh next time
            log.exception("session activity could not follow an event", extra={"key": key})
            return
        if row is None:
            return  # already reflected (a lookup read past this event)
        if (kind := kind_of(event)) is not None:
            self._recent.setdefault(row.owner, deque()).append((row.updated_at, kind))
            self._prune(row.owner)
        for listener in self._listeners:
            try:
                await listener(row)
            except Exception:  # one listener's failure is not the others' nor the saver's
                log.exception("a session activity listener failed", extra={"key": key})

    def recent(self, owner: str) -> RecentPairings:
        self._prune(owner)
        counted = dict.fromkeys(KINDS, 0)
        for _, kind in self._recent.get(owner, ()):
            counted[kind] += 1
        since = max(self._started, self._clock.now() - WINDOW)
        return RecentPairings(**counted, since=since)

    async def _row_after(self, key: str, event: Event) -> SessionRow | None:
        """The row after `event`: moved on from the last one seen when it is the event
        right after it; else (a key not seen yet, or events recorded elsewhere or not
        handed to this process in between) read from the store."""
        known = self._rows.get(key)
        version = event.originator_version
        if known is not None and version <= known.version:
            return None
        follows = version == 1 if known is None else version == known.version + 1
        row: SessionRow | None
        if follows and (known is not None or isinstance(event, DeviceSession.SessionCreated)):
            row = project(known, event)
        else:
            session = await self._lookup(key)
            if session is None:
                return None
            row = row_of(session)
        if row is not None:
            self._rows[key] = row
            self._rows.move_to_end(key)
            while len(self._rows) > self._remembered:
                self._rows.popitem(last=False)
        return row

    def _prune(self, owner: str) -> None:
        recent = self._recent.get(owner)
        horizon = self._clock.now() - WINDOW
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if recent is not None and not recent:
            del self._recent[owner]


def row_of(session: DeviceSession) -> SessionRow:
    return SessionRow(
        key=session.key,
        owner=session.owner,
        name=session.name,
        engine=session.engine,
        state=session.state,
        reason=session.reason,
        version=session.version,
        updated_at=session.modified_on,
    )
