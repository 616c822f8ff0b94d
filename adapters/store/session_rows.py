"""The sessions read model's rows, in the events' own database, tracked by eventsourcing's
tracking recorders (`SQLiteTrackingRecorder`, `PostgresTrackingRecorder`): the rows and the
log position they reflect are written in one transaction.

Rows are found by session id (events other than SessionCreated carry no key) and listed
per owner through indexes on (owner[, state | engine], updated_at, key), newest first: a
page costs its own rows, however many sessions there are.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from psycopg.sql import SQL, Composable, Identifier

from adapters.store.memory_rows import MemorySessionRows
from domain.application.ports import SessionRow
from domain.application.session_rows import (
    TRACKING_NAME,
    Filters,
    SessionRowStore,
    from_micros,
    to_micros,
)
from domain.application.sessions import DeviceSessions
from domain.model.session import DisconnectReason, SessionState, session_id

TABLE = "pairgate_sessions"
COLUMNS = ("key", "owner", "name", "engine", "state", "reason", "version", "updated_at")
# Listing indexes: by owner, and by owner with either filter.
INDEXES = {"owner": ("owner",), "state": ("owner", "state"), "engine": ("owner", "engine")}


def _values(row: SessionRow) -> tuple[Any, ...]:
    reason = None if row.reason is None else row.reason.value
    return (
        str(session_id(row.key)),
        row.key,
        row.owner,
        row.name,
        row.engine,
        row.state.value,
        reason,
        row.version,
        to_micros(row.updated_at),
    )


def _row(values: Sequence[Any]) -> SessionRow:
    key, owner, name, engine, state, reason, version, updated_at = values
    return SessionRow(
        key=key,
        owner=owner,
        name=name,
        engine=engine,
        state=SessionState(state),
        reason=None if reason is None else DisconnectReason(reason),
        version=int(version),
        updated_at=from_micros(int(updated_at)),
    )


def _where(filters: Filters, before: tuple[datetime, str] | None) -> tuple[str, list[Any]]:
    """The listing's conditions, with `?` for each parameter."""
    clauses: list[str] = ["owner = ?"]
    params: list[Any] = [filters.owner]
    for column in ("state", "engine"):
        value = getattr(filters, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if before is not None:
        clauses.append("(updated_at, key) < (?, ?)")
        params += [to_micros(before[0]), before[1]]
    return " AND ".join(clauses), params


class SQLiteSessionRows(SQLiteTrackingRecorder):
    """`table` and `tracking`: whose rows (each follower of the log may keep its own)."""

    def __init__(
        self, datastore: SQLiteDatastore, table: str = TABLE, tracking: str = TRACKING_NAME
    ) -> None:
        self.table, self.tracking = table, tracking  # the base class's __init__ reads them
        super().__init__(datastore)
        self._upsert = _upsert_statement(table, "?")

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *_create_statements(self.table)]

    def position(self) -> int:
        return self.max_tracking_id(self.tracking) or 0

    def rows(self, ids: Collection[UUID]) -> dict[UUID, SessionRow]:
        marks = ",".join("?" * len(ids))
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE id IN ({marks})",
                [str(i) for i in ids],
            )
            found = [_row(tuple(values)) for values in c.fetchall()]
        return {session_id(row.key): row for row in found}

    def save(
        self, rows: Sequence[SessionRow], previous: int, position: int, extra: Sequence[Any] = ()
    ) -> None:
        with self.datastore.transaction(commit=True) as c:
            # A write first: the transaction holds the write lock before it reads.
            c.execute(
                "UPDATE tracking SET notification_id = notification_id WHERE application_name = ?",
                (self.tracking,),
            )
            if (self._max_tracking_id(self.tracking, c) or 0) != previous:
                raise IntegrityError(f"{self.tracking} moved past {previous}")
            self._insert_tracking(c, Tracking(self.tracking, position))
            for row in rows:
                c.execute(self._upsert, _values(row))
            self.write_extra(c, extra)

    def write_extra(self, cursor: Any, extra: Sequence[Any]) -> None:
        """What a subclass writes with the rows, in their transaction."""

    def select(
        self, filters: Filters, before: tuple[datetime, str] | None, limit: int
    ) -> list[SessionRow]:
        where, params = _where(filters, before)
        query = (
            f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE {where} "
            "ORDER BY updated_at DESC, key DESC LIMIT ?"
        )
        with self.datastore.transaction(commit=False) as c:
            c.execute(query, [*params, limit])
            return [_row(tuple(values)) for values in c.fetchall()]

    def reset(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.table}")
            c.execute("DELETE FROM tracking WHERE application_name = ?", (self.tracking,))


class PostgresSessionRows(PostgresTrackingRecorder):
    def __init__(
        self, datastore: PostgresDatastore, table: str = TABLE, tracking: str = TRACKING_NAME
    ) -> None:
        super().__init__(datastore, tracking_table_name="pairgate_tracking")
        self.tracking = tracking
        schema = Identifier(datastore.schema)
        self._table = SQL("{}.{}").format(schema, Identifier(table))
        self._tracking = SQL("{}.{}").format(schema, Identifier(self.tracking_table_name))
        for statement in _create_statements("{table}", table):
            self.sql_create_statements.append(SQL(statement).format(table=self._table))
        self._upsert_sql = SQL(_upsert_statement("{table}", "%s")).format(table=self._table)

    def position(self) -> int:
        return self.max_tracking_id(self.tracking) or 0

    def rows(self, ids: Collection[UUID]) -> dict[UUID, SessionRow]:
        query = SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(_columns(), self._table)
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(query, ([str(i) for i in ids],))
            found = [_row([r[c] for c in COLUMNS]) for r in curs.fetchall()]
        return {session_id(row.key): row for row in found}

    def save(
        self, rows: Sequence[SessionRow], previous: int, position: int, extra: Sequence[Any] = ()
    ) -> None:
        lock = SQL("SELECT notification_id FROM {} WHERE application_name = %s FOR UPDATE")
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(lock.format(self._tracking), (self.tracking,))
            found = curs.fetchone()
            if (found["notification_id"] if found else 0) != previous:
                raise IntegrityError(f"{self.tracking} moved past {previous}")
            self._insert_tracking(curs, Tracking(self.tracking, position))
            for row in rows:
                curs.execute(self._upsert_sql, _values(row))
            self.write_extra(curs, extra)

    def write_extra(self, cursor: Any, extra: Sequence[Any]) -> None:
        """What a subclass writes with the rows, in their transaction."""

    def select(
        self, filters: Filters, before: tuple[datetime, str] | None, limit: int
    ) -> list[SessionRow]:
        where, params = _where(filters, before)
        query = SQL(
            "SELECT {} FROM {} WHERE "
            + where.replace("?", "%s")
            + " ORDER BY updated_at DESC, key DESC LIMIT %s"
        ).format(_columns(), self._table)
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(query, [*params, limit])
            return [_row([r[c] for c in COLUMNS]) for r in curs.fetchall()]

    def reset(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {}").format(self._table))
            curs.execute(
                SQL("DELETE FROM {} WHERE application_name = %s").format(self._tracking),
                (self.tracking,),
            )


def _columns() -> Composable:
    return SQL(", ").join(Identifier(c) for c in COLUMNS)


def _create_statements(table: str, name: str = TABLE) -> list[str]:
    """`table` (called `name`, unqualified) and the indexes the listing reads."""
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, key TEXT NOT NULL, "
        "owner TEXT NOT NULL, name TEXT NOT NULL, engine TEXT NOT NULL, state TEXT NOT NULL, "
        "reason TEXT, version BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
    ]
    for index, columns in INDEXES.items():
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {name}_by_{index} ON {table} "
            f"({', '.join(columns)}, updated_at DESC, key DESC)"
        )
    return statements


def _upsert_statement(table: str, mark: str) -> str:
    """Insert a row, or replace an older one (by version: a replay never goes back)."""
    names = ("id", *COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {table}.version < excluded.version"
    )


def session_rows(sessions: DeviceSessions) -> SessionRowStore:
    """The rows beside the events of `sessions`, their tables created if missing."""
    datastore = getattr(sessions.recorder, "datastore", None)
    store: SQLiteSessionRows | PostgresSessionRows
    if isinstance(datastore, SQLiteDatastore):
        store = SQLiteSessionRows(datastore)
    elif isinstance(datastore, PostgresDatastore):
        store = PostgresSessionRows(datastore)
    else:
        return MemorySessionRows()
    store.create_table()
    return store
