"""The sessions read model: every session as of its last recorded event, one row each,
kept by a projection of the notification log (the `SessionIndex` port answers from it).

The projection applies each event to the session as its row holds it, with the
aggregate's own `@event` bodies, so the lifecycle table stays the one place a state is
decided. Rows and the log position they reflect are written in one transaction
(eventsourcing's tracking recorders), so the model is never ahead of or behind its own
position, whatever stops the process; and it is rebuilt by starting again from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import AggregateEvent

from domain.application.ports import (
    LIST_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    SessionRow,
    SessionRowPage,
)
from domain.application.sessions import DeviceSessions, Event
from domain.application.store_calls import StoreAccess
from domain.model.errors import InvalidPageError
from domain.model.session import DeviceSession, SessionState

TRACKING_NAME = "pairgate:sessions"  # the projection's row in the tracking table
CURSOR_SEPARATOR = "~"


@dataclass(frozen=True)
class Filters:
    owner: str
    state: str | None = None
    engine: str | None = None
    search: str | None = None  # a prefix of the key or of the name


class SessionRowStore(Protocol):
    """Where the rows live (the events' database), with the position they reflect.
    Synchronous, like the event store: called on a thread."""

    def position(self) -> int:
        """The log position the rows reflect (0: none yet)."""
        ...

    def rows(self, ids: Collection[UUID]) -> dict[UUID, SessionRow]:
        """The rows of these sessions (by `session_id`), those that have one."""
        ...

    def save(
        self, rows: Sequence[SessionRow], previous: int, position: int, extra: Sequence[Any] = ()
    ) -> None:
        """Write `rows` (and what the projection adds, `extra`) and move the position
        from `previous` to `position`, in one transaction; eventsourcing's IntegrityError
        (nothing written) if the position is no longer `previous` (another process or a
        reindex got there first)."""
        ...

    def select(
        self, filters: Filters, before: tuple[datetime, str] | None, limit: int
    ) -> list[SessionRow]:
        """The filtered rows changed before `before` (time, then key), newest first."""
        ...

    def counts(self, owner: str) -> dict[str, int]:
        """How many of the owner's rows are in each state (states with none: absent)."""
        ...

    def reset(self) -> None:
        """Forget every row and the position: the projection starts again from the log's
        beginning."""
        ...

    def live(self) -> list[str]:
        """The keys of the rows whose session may need an engine (live, or offline and
        linked, or not known to be unlinked), read through an index on the state."""
        ...


def project(row: SessionRow | None, event: Event) -> SessionRow | None:
    """The row after `event`; None for an event the row already reflects."""
    if row is not None and event.originator_version <= row.version:
        return None
    assert isinstance(event, AggregateEvent)
    session = event.mutate(None if row is None else _session(row, event.originator_id))
    assert isinstance(session, DeviceSession)
    return SessionRow(
        key=session.key,
        owner=session.owner,
        name=session.name,
        engine=session.engine,
        state=session.state,
        reason=session.reason,
        version=session.version,
        updated_at=event.timestamp,
        linked=session.holds_credentials,
    )


def _session(row: SessionRow, id_: UUID) -> DeviceSession:
    """The session a row describes (`id_`: its id, `session_id(row.key)`), enough for the
    next event's `@event` body."""
    session = object.__new__(DeviceSession)
    vars(session).update(
        _id=id_,
        _version=row.version,
        _created_on=row.updated_at,
        _modified_on=row.updated_at,
        _pending_events=[],
        key=row.key,
        name=row.name,
        engine=row.engine,
        owner=row.owner,
        _state=row.state.value,
        _reason=None if row.reason is None else row.reason.value,
        holds_credentials=_linked(row),
        qr_code=None,
        qr_expires_at=None,
    )
    return session


def _linked(row: SessionRow) -> bool:
    """Whether the row's session holds credentials; a row kept before this was known
    counts as linked where it may be (a superset: recovery reads the session itself)."""
    if row.linked is not None:
        return row.linked
    return row.state in (SessionState.AUTHENTICATED, SessionState.READY, SessionState.DISCONNECTED)


def needs_an_engine(row: SessionRow) -> bool:
    """What `live` selects, for a row in hand (the memory store's rows)."""
    return row.state is not SessionState.DISCONNECTED or _linked(row)


class SessionsProjection:
    """Moves the rows on from their position, a page of the log at a time."""

    def __init__(
        self,
        sessions: DeviceSessions,
        rows: SessionRowStore,
        page: int | None = None,
        also: Callable[[Event, SessionRow], Sequence[Any]] | None = None,
        changes: deque[tuple[Event, SessionRow]] | None = None,
    ) -> None:
        """`also`: what else each event makes, from the event and its session's row
        after it (the webhooks' deliveries), saved with the rows. `changes`: where each
        saved page's events go with their rows after them, for whoever reads them next
        (the console's feed)."""
        self._sessions = sessions
        self._rows = rows
        self._also = also
        self._changes = changes
        self.page = min(page or sessions.log_section_size, sessions.log_section_size)

    def catch_up(self) -> int:
        """Project the next page of the log (`page` events at most); how many events it
        held (fewer than `page`: it reached the log's head)."""
        previous = self._rows.position()
        notifications = self._sessions.notification_page(previous, self.page)
        if not notifications:
            return 0
        rows = self._rows.rows({event.originator_id for _, event in notifications})
        changed: dict[UUID, SessionRow] = {}
        extra: list[Any] = []
        steps: list[tuple[Event, SessionRow]] = []
        for _, event in notifications:
            row = project(rows.get(event.originator_id), event)
            if row is not None:
                rows[event.originator_id] = changed[event.originator_id] = row
                steps.append((event, row))
                if self._also is not None:
                    extra += self._also(event, row)
        self._rows.save(list(changed.values()), previous, notifications[-1][0], extra)
        if self._changes is not None:
            self._changes.extend(steps)  # only once saved: a retried page is not told twice
        return len(notifications)

    def rebuild(self) -> int:
        """Forget the rows and project the whole log again; the rows it then holds."""
        self._rows.reset()
        while self.catch_up():
            pass
        return self._rows.position()


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

    async def live_keys(self) -> list[str]:
        """Every key whose session may need an engine (a superset: the caller reads each
        session): the rows' index, and the sessions of the log's events the rows do not
        reflect yet (another process's, or this one's last run's), so a key whose last
        event is not projected yet is never missed. On a thread."""
        return await self._store.read(self._live_keys)

    def _live_keys(self) -> list[str]:
        position = self._rows.position()
        keys = dict.fromkeys(self._rows.live())
        sessions = self._store.sessions
        ids: set[UUID] = set()
        created: dict[UUID, str] = {}
        while page := sessions.notification_page(position, sessions.log_section_size):
            position = page[-1][0]
            for _, event in page:
                ids.add(event.originator_id)
                if isinstance(event, DeviceSession.SessionCreated):
                    created[event.originator_id] = event.key
        keys.update(dict.fromkeys(created.values()))
        missing = list(ids - created.keys())
        for start in range(0, len(missing), 500):  # (bounded IN lists)
            known = self._rows.rows(missing[start : start + 500])
            keys.update(dict.fromkeys(row.key for row in known.values()))
        return list(keys)


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


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """How the stores keep a time: whole microseconds since the epoch (exact order)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
