"""The sessions read model: every session as of its last recorded event, one row each,
kept by a projection of the notification log (the `SessionIndex` port answers from it).

The projection applies each event to the session as its row holds it, with the
aggregate's own `@event` bodies, so the lifecycle table stays the one place a state is
decided. Rows and the log position they reflect are written in one transaction
(eventsourcing's tracking recorders), so the model is never ahead of or behind its own
position, whatever stops the process; and it is rebuilt by starting again from zero.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import AggregateEvent

from domain.application.ports import SessionRow
from domain.application.sessions import DeviceSessions, Event
from domain.model.session import DeviceSession, SessionState

TRACKING_NAME = "pairgate:sessions"  # the projection's row in the tracking table
KNOWN_ROWS = 4096  # rows a projection keeps of what it wrote last (sessions active lately)
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

    def live(self) -> dict[str, SessionState]:
        """The rows whose session may need an engine (live, or offline and linked, or not
        known to be unlinked), read through an index on the state: each key's state."""
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
        tenure_from=session.tenure_from,
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
        tenure_from=row.tenure_start,
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
        self.page = page or sessions.log_section_size
        # The rows this projection wrote last, as of position `_known_at`: valid while
        # the position is still the one it saved (no other process, nor a reindex, has
        # moved the rows on since).
        self._known: OrderedDict[UUID, SessionRow] = OrderedDict()
        self._known_at = -1

    def catch_up(self) -> int:
        """Project the next page of the log (`page` events at most); how many events it
        held (fewer than `page`: it reached the log's head)."""
        previous = self._rows.position()
        notifications = self._sessions.recent.after(previous, self.page)
        if notifications is None:  # not (only) this process's last saves: the log has them
            notifications = self._log_after(previous)
        if not notifications:
            return 0
        rows = self._rows_before(previous, notifications)
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
        self._remember(changed, notifications[-1][0])
        if self._changes is not None:
            self._changes.extend(steps)  # only once saved: a retried page is not told twice
        return len(notifications)

    def _log_after(self, position: int) -> list[tuple[int, Event]]:
        """At most `page` events of the log after `position`, a section at a time."""
        found: list[tuple[int, Event]] = []
        while (wanted := min(self.page - len(found), self._sessions.log_section_size)) > 0:
            section = self._sessions.notification_page(position, wanted)
            found += section
            if len(section) < wanted:
                break  # the log's head
            position = section[-1][0]
        return found

    def _rows_before(
        self, position: int, notifications: Sequence[tuple[int, Event]]
    ) -> dict[UUID, SessionRow]:
        """The rows of the page's sessions as they are at `position`: those this
        projection wrote last when nothing has moved the rows since, the store's
        otherwise. A session whose page starts with its first event has none yet."""
        if position != self._known_at:
            self._known.clear()
        rows: dict[UUID, SessionRow] = {}
        missing: set[UUID] = set()
        for _, event in notifications:
            id_ = event.originator_id
            if id_ in rows or id_ in missing:
                continue
            if (row := self._known.get(id_)) is not None:
                rows[id_] = row
            elif event.originator_version != 1:
                missing.add(id_)
        if missing:
            rows.update(self._rows.rows(missing))
        return rows

    def _remember(self, changed: dict[UUID, SessionRow], position: int) -> None:
        known = self._known
        for id_, row in changed.items():
            known[id_] = row
            known.move_to_end(id_)
        while len(known) > KNOWN_ROWS:
            known.popitem(last=False)
        self._known_at = position

    def rebuild(self) -> int:
        """Forget the rows and project the whole log again; the rows it then holds."""
        self._rows.reset()
        while self.catch_up():
            pass
        return self._rows.position()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """How the stores keep a time: whole microseconds since the epoch (exact order)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
