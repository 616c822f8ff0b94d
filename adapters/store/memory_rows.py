"""The sessions read model's rows for a memory store (tests, experiments): a dict, with
the contract of the database-backed ones (adapters/store/session_rows.py)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.application.ports import SessionRow
from domain.application.session_rows import TRACKING_NAME, Filters, needs_an_engine
from domain.model.session import SessionState, session_id


class MemorySessionRows:
    """The rows of a memory store (tests): a dict, with the same contract."""

    def __init__(self) -> None:
        self._rows: dict[UUID, SessionRow] = {}
        self._position = 0
        self._lock = threading.Lock()

    def position(self) -> int:
        return self._position

    def rows(self, ids: Collection[UUID]) -> dict[UUID, SessionRow]:
        with self._lock:
            return {i: self._rows[i] for i in ids if i in self._rows}

    def save(
        self, rows: Sequence[SessionRow], previous: int, position: int, extra: Sequence[Any] = ()
    ) -> None:
        with self._lock:
            if self._position != previous:
                raise IntegrityError(f"{TRACKING_NAME} moved past {previous}")
            self._rows.update((session_id(row.key), row) for row in rows)
            self._position = position

    def select(
        self, filters: Filters, before: tuple[datetime, str] | None, limit: int
    ) -> list[SessionRow]:
        with self._lock:
            rows = [r for r in self._rows.values() if _matches(r, filters, before)]
        rows.sort(key=lambda r: (r.updated_at, r.key), reverse=True)
        return rows[:limit]

    def counts(self, owner: str) -> dict[str, int]:
        with self._lock:
            states = [r.state.value for r in self._rows.values() if r.owner == owner]
        return dict(Counter(states))

    def live(self) -> dict[str, SessionState]:
        with self._lock:
            return {row.key: row.state for row in self._rows.values() if needs_an_engine(row)}

    def reset(self) -> None:
        with self._lock:
            self._rows, self._position = {}, 0


def _matches(row: SessionRow, filters: Filters, before: tuple[datetime, str] | None) -> bool:
    return (
        row.owner == filters.owner
        and filters.state in (None, row.state.value)
        and filters.engine in (None, row.engine)
        and (
            filters.search is None
            or row.key.startswith(filters.search)
            or row.name.startswith(filters.search)
        )  # fmt: skip
        and (before is None or (row.updated_at, row.key) < before)
    )
