"""The sessions read model's reads: `SessionRowsIndex` answers the `SessionIndex` port
(lists, counts, the keys that may need an engine) from the rows the projection keeps
(domain/application/session_rows.py), on a thread, never the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

from domain.application.ports import (
    LIST_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    RecoveryCandidates,
    SessionRowPage,
)
from domain.application.session_rows import (
    CURSOR_SEPARATOR,
    Filters,
    SessionRowStore,
    from_micros,
    to_micros,
)
from domain.application.sessions import Event
from domain.application.store_calls import StoreAccess
from domain.model.errors import InvalidPageError
from domain.model.session import DeviceSession, DisconnectReason, SessionState

OFFLINE = SessionState.DISCONNECTED


class SessionRowsIndex:
    """ports.SessionIndex, answered from the rows on a thread (never the event loop).

    `caught_up` (the projection's follower's): a page waits, up to FRESHNESS seconds, for
    the rows to reflect every event this process has saved, so a client that changed a
    session sees the change in the list it asks for next."""

    FRESHNESS = 2.0

    def __init__(
        self,
        rows: SessionRowStore,
        store: StoreAccess,
        caught_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._rows = rows
        self._store = store
        self.caught_up = caught_up

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
        filters = Filters(owner, None if state is None else state.value, engine, search)
        before = None if after is None else read_cursor(after)
        await self._fresh()
        # One row more than asked: whether a next page exists, without a second query.
        rows = await self._store.read(self._rows.select, filters, before, limit + 1)
        if len(rows) <= limit:
            return SessionRowPage(rows, None)
        last = rows[limit - 1]
        return SessionRowPage(rows[:limit], make_cursor(last.updated_at, last.key))

    async def counts(self, owner: str) -> dict[SessionState, int]:
        await self._fresh()
        found = await self._store.read(self._rows.counts, owner)
        return {state: found.get(state.value, 0) for state in SessionState}

    async def _fresh(self) -> None:
        if self.caught_up is not None:
            with contextlib.suppress(TimeoutError):  # then as fresh as it is
                await asyncio.wait_for(self.caught_up(), self.FRESHNESS)

    async def live_keys(self) -> RecoveryCandidates:
        """Every key whose session may need an engine (a superset: the caller reads each
        session), by what is known of it: the rows' index, and the sessions of the log's
        events the rows do not reflect yet (another process's, or this one's last run's),
        so a key whose last event is not projected yet is never missed. On a thread."""
        return await self._store.read(self._live_keys)

    def _live_keys(self) -> RecoveryCandidates:
        position = self._rows.position()
        rows = self._rows.live()
        sessions = self._store.sessions
        last: dict[UUID, Event] = {}  # the tail's sessions: their last event
        keys: dict[UUID, str] = {}
        while page := sessions.notification_page(position, sessions.log_section_size):
            position = page[-1][0]
            for _, event in page:
                last[event.originator_id] = event
                if isinstance(event, DeviceSession.SessionCreated):
                    keys[event.originator_id] = event.key
        missing = [id_ for id_ in last if id_ not in keys]
        for start in range(0, len(missing), 500):  # (bounded IN lists)
            known = self._rows.rows(missing[start : start + 500])
            keys.update((id_, row.key) for id_, row in known.items())
        # Each key: whether it is recorded offline. A key of the tail is as its last event
        # left it, whatever its row says: offline after a Disconnected (the lifecycle's
        # `disconnect` has no other destination), not to be run again if that ended the
        # link, else maybe still live.
        named = set(keys.values())
        offline = {key: state is OFFLINE for key, state in rows.items() if key not in named}
        for id_, event in last.items():
            if (key := keys.get(id_)) is None:
                continue
            if not isinstance(event, DeviceSession.Disconnected):
                offline[key] = False
            elif not DisconnectReason(event.reason).deletes_credentials:
                offline[key] = True
        return RecoveryCandidates(
            [key for key, off in offline.items() if not off],
            [key for key, off in offline.items() if off],
        )


def make_cursor(updated_at: datetime, key: str) -> str:
    """`<microseconds since the epoch>~<key>` (keys have no tilde): URL-safe as it is."""
    return f"{to_micros(updated_at)}{CURSOR_SEPARATOR}{key}"


def read_cursor(cursor: str) -> tuple[datetime, str]:
    micros, separator, key = cursor.partition(CURSOR_SEPARATOR)
    if not (separator and micros.isascii() and micros.isdecimal() and len(micros) <= 18):
        raise InvalidPageError("this cursor was not made by this list")
    if not key or len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidPageError("this cursor was not made by this list")
    try:
        return from_micros(int(micros)), key
    except (OverflowError, ValueError):
        raise InvalidPageError("this cursor was not made by this list") from None
