"""Many sessions' streams in one read from PostgreSQL (`DeviceSessions.streams`).

eventsourcing reads one stream per query (two with snapshots: the latest snapshot, then
the events after it). A takeover reads every session a dead process ran: here that is
two queries whatever their number, on the tables eventsourcing made (their names and
schema are its recorders'), in one read-only transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg.sql import SQL, Identifier

from domain.application.sessions import DeviceSessions

Latest = dict[UUID, tuple[StoredEvent | None, list[StoredEvent]]]


class PostgresStreams:
    def __init__(
        self, events: PostgresAggregateRecorder, snapshots: PostgresAggregateRecorder | None
    ) -> None:
        self._datastore = events.datastore
        schema = Identifier(events.datastore.schema)
        ids = SQL("%s::{}[]").format(Identifier(events.datastore.originator_id_type))
        self._events = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest({ids}, %s::bigint[]) AS s(id, after) "
            "JOIN {schema}.{table} AS e ON e.originator_id = s.id "
            "AND e.originator_version > s.after "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(ids=ids, schema=schema, table=Identifier(events.events_table_name))
        self._snapshots = None
        if snapshots is not None:
            self._snapshots = SQL(
                "SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, "
                "state FROM {schema}.{table} WHERE originator_id = ANY({ids}) "
                "ORDER BY originator_id, originator_version DESC"
            ).format(ids=ids, schema=schema, table=Identifier(snapshots.events_table_name))

    def latest(self, ids: Sequence[UUID]) -> Latest:
        found: Latest = {}
        with self._datastore.transaction(commit=False) as cursor:
            if self._snapshots is not None:
                cursor.execute(self._snapshots, (list(ids),))
                for row in cursor.fetchall():
                    found[row["originator_id"]] = (_stored(row), [])
            snapshot_at = {i: s.originator_version for i, (s, _) in found.items() if s}
            after = [snapshot_at.get(i, 0) for i in ids]
            cursor.execute(self._events, (list(ids), after))
            for row in cursor.fetchall():
                found.setdefault(row["originator_id"], (None, []))[1].append(_stored(row))
        return found


def postgres_streams(sessions: DeviceSessions) -> PostgresStreams | None:
    """The store's streams in one read, if it is PostgreSQL's with UUID ids (as made)."""
    recorder = sessions.recorder
    if not isinstance(recorder, PostgresAggregateRecorder):
        return None
    if recorder.datastore.originator_id_type != "uuid":
        return None
    snapshots = sessions.snapshots.recorder if sessions.snapshots is not None else None
    assert snapshots is None or isinstance(snapshots, PostgresAggregateRecorder)
    return PostgresStreams(recorder, snapshots)


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
