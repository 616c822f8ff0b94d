"""RecentEvents: the events this process saved last, by their position in the log.

The log's followers (the sessions read model, the webhooks' outbox) would otherwise read
back from the store, and decode, every event this process has just written: a query and a
transcoding per event, the largest share of a follower's cost. The store hands each save's
recordings (event and position) here; a follower takes the run that starts right after
its position when nothing is missing from it, and reads the log itself otherwise (another
process's events on a shared store, a gap a rolled-back insert left, a follower further
behind than the buffer reaches).

Only committed events are noted (after the store's `put` returned), so a run without a
gap is exactly what the log holds at those positions. Thread-safe: saves run on the event
loop or on the store's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from itertools import islice
from uuid import UUID

from eventsourcing.persistence import Recording

from domain.application.dispatch import Event

CAPACITY = 4096  # ~8 s of events at 100 pairings/s; the oldest go first


class RecentEvents:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._events: dict[int, Event] = {}
        self._highest = 0
        self._lock = threading.Lock()

    def note(self, recordings: Iterable[Recording[UUID]]) -> None:
        """A save's recordings (committed): each event at its position in the log."""
        with self._lock:
            for recording in recordings:
                position = recording.notification.id
                self._events[position] = recording.domain_event
                self._highest = max(self._highest, position)
            excess = len(self._events) - self._capacity
            if excess > 0:  # noted roughly in position order: the oldest first
                for position in list(islice(self._events, excess)):
                    del self._events[position]

    def after(self, position: int, limit: int) -> list[tuple[int, Event]] | None:
        """The events at `position` + 1, + 2, ... (at most `limit`), or None when the
        log must be read: the next one is not here (nothing new from this process, or
        only from others), or a gap lies between the run and an event noted later."""
        with self._lock:
            run: list[tuple[int, Event]] = []
            at = position + 1
            while len(run) < limit and (event := self._events.get(at)) is not None:
                run.append((at, event))
                at += 1
            if not run or (len(run) < limit and at <= self._highest):
                return None  # nothing here, or something noted lies beyond a gap
            return run
