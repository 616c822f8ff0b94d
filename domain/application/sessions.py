"""DeviceSessions: the event-sourced application that records every device session."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import CanMutateAggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import Environment, get_topic

from domain.application.recent import RecentEvents
from domain.model.errors import SessionNotFoundError, VersionOutOfRangeError
from domain.model.session import DeviceSession, session_id

Event = DomainEventProtocol[UUID]
Pending = CanMutateAggregate[UUID]  # an event collected from a session, not yet saved


class Streams(Protocol):
    """Many sessions' streams in one read (an adapter's: the store's own SQL)."""

    def latest(
        self, ids: Sequence[UUID]
    ) -> Mapping[UUID, tuple[StoredEvent | None, Sequence[StoredEvent]]]:
        """Each stream that exists: its latest snapshot (None: none, or no snapshots
        kept), and its events after it, in order."""
        ...


@dataclass(frozen=True)
class Change:
    """A session after a command, and the events that command recorded (already saved)."""

    session: DeviceSession
    events: list[Event] = field(default_factory=list)


class DeviceSessions(Application[UUID]):
    """Synchronous and thread-safe, as eventsourcing applications are.

    Every command loads the session, applies one aggregate command and saves; the
    events returned are exactly the ones stored, so projecting them can never disagree
    with what an auditor replays.

    Sessions this process is the only writer of (it runs their engine, under a lease
    when several processes share the store) may be *held*: their last saved state stays
    in memory, so a command on them skips loading the stream. Everything else is read
    from the store, where another process may have moved it on.
    """

    name = "pairgate"
    log_section_size = 100
    SNAPSHOT_INTERVAL = "SNAPSHOT_INTERVAL"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        # Every N events a snapshot is saved, so loading a long history replays < N events.
        interval = int(self.env.get(self.SNAPSHOT_INTERVAL) or 0)
        self._snapshot_interval = interval if self.snapshots is not None else 0
        # Held sessions, as last saved. Never mutated: readers get copies.
        self._held: dict[str, DeviceSession] = {}
        # What was saved last, by log position: the log's followers need not read it back.
        self.recent = RecentEvents()
        self.streams: Streams | None = None  # many streams in one read, where the store can

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        """The configuration given, never the process environment: there pairgate's own
        PAIRGATE_* variables would read as eventsourcing's (PAIRGATE_CIPHER_KEY as
        CIPHER_KEY) and override it. adapters.store.config builds it from the settings."""
        return Environment(name, {**type(self).env, **(env or {})})

    def hold(self, session: DeviceSession) -> None:
        """From now on only this process records the session's events: keep it in memory."""
        self._held[session.key] = session

    def release(self, key: str) -> None:
        """Another process may record the key's events from now on: read it from the store."""
        self._held.pop(key, None)

    def find(self, key: str) -> DeviceSession | None:
        held = self._held.get(key)
        if held is not None:
            return _working_copy(held)  # commands mutate what they are given
        return self.stored(key)

    def holds(self, key: str) -> bool:
        """Whether the key's session is held in memory (see `hold`)."""
        return key in self._held

    def stored(self, key: str) -> DeviceSession | None:
        """The session as the store has it, never from memory: what a key not held costs."""
        try:
            session: object = self.repository.get(session_id(key))
        except AggregateNotFoundError:
            return None
        assert isinstance(session, DeviceSession)
        return session

    def get(self, key: str) -> DeviceSession:
        session = self.find(key)
        if session is None:
            raise SessionNotFoundError(key)
        return session

    def state_at(self, key: str, version: int) -> DeviceSession:
        """The session as it was right after its event number `version`."""
        last = self.last_version(key)
        if not 1 <= version <= last:
            raise VersionOutOfRangeError(key, version, last)
        session: object = self.repository.get(session_id(key), version=version)
        assert isinstance(session, DeviceSession)
        return session

    def create(
        self, key: str, name: str, engine: str, owner: str, proxy: str | None = None
    ) -> Change:
        """Record a new session. IntegrityError if the key already has a stream."""
        session = DeviceSession(key=key, name=name, engine=engine, owner=owner, proxy=proxy)
        return self._save(session)

    def update(self, key: str, command: Callable[[DeviceSession], None]) -> Change:
        session = self.get(key)
        command(session)
        return self._save(session)

    def find_many(self, keys: Iterable[str]) -> dict[str, DeviceSession]:
        """The sessions of these keys that exist (a batch, for recovery: on a thread),
        those not held in one read of the store when it can (`streams`)."""
        found: dict[str, DeviceSession | None] = {}
        unheld: dict[UUID, str] = {}
        for key in keys:
            if key in self._held or self.streams is None:
                found[key] = self.find(key)
            else:
                unheld[session_id(key)] = key
        if unheld and self.streams is not None:
            for stream, (snapshot, stored) in self.streams.latest(list(unheld)).items():
                events = [self.mapper.to_domain_event(event) for event in stored]
                if snapshot is not None:
                    events.insert(0, self.mapper.to_domain_event(snapshot))
                session = project_aggregate(None, events)
                if isinstance(session, DeviceSession):
                    found[unheld[stream]] = session
        return {key: session for key, session in found.items() if session is not None}

    def update_many(
        self, sessions: Iterable[DeviceSession], command: Callable[[DeviceSession], None]
    ) -> list[Change]:
        """`command` applied to each of these sessions (as just read), whatever they
        record saved in one transaction: a batch costs one commit, not one per session."""
        changed = []
        for session in sessions:
            command(session)
            changed.append((session, session.collect_events()))
        return self._save_many(changed)

    def update_each(
        self, commands: Sequence[tuple[str, Callable[[DeviceSession], None]]]
    ) -> list[Change | Exception]:
        """Each key's command (keys distinct), what they record saved in one transaction:
        for each, its change or what it raised. A command that raises records nothing,
        and the others are saved; if the transaction fails (a stream another process
        wrote), each is saved alone, so that the failure is only its key's."""
        results: list[Change | Exception | None] = []
        changed: list[tuple[int, DeviceSession, Sequence[Pending]]] = []
        for key, command in commands:
            try:
                session = self.get(key)
                command(session)
            except Exception as refused:
                results.append(refused)
            else:
                changed.append((len(results), session, session.collect_events()))
                results.append(None)
        try:
            saved = self._save_many([(session, events) for _, session, events in changed])
        except Exception:
            for index, session, events in changed:
                try:
                    results[index] = self._save_many([(session, events)])[0]
                except Exception as failed:
                    self._held.pop(session.key, None)  # what was saved is no longer certain
                    results[index] = failed
        else:
            for (index, _, _), change in zip(changed, saved, strict=True):
                results[index] = change
        return [result for result in results if result is not None]

    def _save_many(
        self, changed: Sequence[tuple[DeviceSession, Sequence[Pending]]]
    ) -> list[Change]:
        pending = [event for _, events in changed for event in events]
        recorded = self.events.put(pending) if pending else []
        self.recent.note(recorded)
        saved = iter(recording.domain_event for recording in recorded)
        changes = []
        for session, events in changed:
            if session.key in self._held:
                self._held[session.key] = session
            change = Change(session, [next(saved) for _ in events])
            if self._snapshot_interval:
                for event in change.events:
                    if event.originator_version % self._snapshot_interval == 0:
                        self.take_snapshot(session.id, version=event.originator_version)
            changes.append(change)
        return changes

    def history(
        self, key: str, at: int | None = None, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The key's events in order after version `after` and up to version `at` (the
        last if None), at most `limit` of them (all if None). Only those are read: a page
        of a long history costs its own length, not the history's."""
        last = self.last_version(key)
        for version, lowest in ((at, 1), (after, 0)):
            if version is not None and not lowest <= version <= last:
                raise VersionOutOfRangeError(key, version, last)
        end = last if at is None else at
        if limit is not None:
            end = min(end, after + limit)
        if end <= after:
            return []
        return list(self.events.get(session_id(key), gt=after, lte=end))

    def last_version(self, key: str) -> int:
        """The version of the key's newest event (versions run 1, 2, 3 ... without gaps),
        from one row of the store however long the history is."""
        newest = list(self.events.get(session_id(key), desc=True, limit=1))
        if not newest:
            raise SessionNotFoundError(key)
        return newest[0].originator_version

    def notifications(
        self, since: int = 0, page: int = 100, topics: Sequence[str] = ()
    ) -> Iterator[tuple[int, Event]]:
        """Every recorded event of every session in global order, after position `since`
        (only events of the given topics, when some are named)."""
        while section := self.notification_log.select(
            start=since, limit=page, topics=topics, inclusive_of_start=False
        ):
            for notification in section:
                yield notification.id, self.mapper.to_domain_event(notification)
            since = section[-1].id

    def notification_page(self, since: int, limit: int) -> list[tuple[int, Event]]:
        """At most `limit` recorded events after position `since`, in global order."""
        section = self.notification_log.select(start=since, limit=limit, inclusive_of_start=False)
        return [(n.id, self.mapper.to_domain_event(n)) for n in section]

    def keys(self) -> list[str]:
        """Every key ever created, in creation order."""
        created = get_topic(DeviceSession.SessionCreated)
        return [event.key for _, event in self.notifications(topics=[created])]  # type: ignore[attr-defined]

    def _save(self, session: DeviceSession) -> Change:
        """The session's new events, appended to the event store in one transaction.

        Straight to the event store (`Application.events.put`), not through `save`: that
        generic path checks each object against two runtime `Protocol`s first (≈ 25 µs
        per call on Python 3.11) and serves hooks (cache, snapshot intervals, `_notify`)
        this application leaves unused; snapshots are taken below."""
        try:
            recordings = self.events.put(session.collect_events())
        except Exception:
            self._held.pop(session.key, None)  # what was saved is no longer certain
            raise
        self.recent.note(recordings)
        if session.key in self._held:
            self._held[session.key] = session
        events = [recording.domain_event for recording in recordings]
        if self._snapshot_interval:
            for event in events:
                if event.originator_version % self._snapshot_interval == 0:
                    self.take_snapshot(session.id, version=event.originator_version)
        return Change(session, events)


def _working_copy(session: DeviceSession) -> DeviceSession:
    """A copy of a held session that a command may change without touching the original.

    Its attributes are immutable values (strings, enums, datetimes, numbers, UUIDs), so a
    shallow copy is a whole one (a tenth of `deepcopy`'s time), except for eventsourcing's
    list of pending events, which must be the copy's own (eventsourcing's snapshots treat
    `_pending_events` the same way)."""
    clone = object.__new__(type(session))  # what copy() does, without its generic steps
    vars(clone).update(vars(session), _pending_events=[])
    return clone


__all__ = ["Change", "DeviceSessions", "IntegrityError"]
