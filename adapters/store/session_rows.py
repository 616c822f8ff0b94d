"""The sessions read model's rows, in the events' own database, tracked by eventsourcing's
tracking recorders (`SQLiteTrackingRecorder`, `PostgresTrackingRecorder`): the rows and the
log position they reflect are written in one transaction.

Rows are found by session id (events other than SessionCreated carry no key) and listed
per owner through indexes on (owner[, state | engine], updated_at, tie), newest first: a
page costs its own rows, however many sessions there are. `tie` orders sessions changed
in the same microsecond: the key, or with PAIRGATE_CIPHER_KEY its blinded form (keys,
names and reasons are then stored encrypted, like the events: adapters/store/sealing.py).
The SQL is written once, with `?` marks and a `{table}`; PostgreSQL gets `%s` marks and
schema-qualified names.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteDatastore, SQLiteTrackingRecorder
from psycopg.sql import SQL

from adapters.store.memory_rows import MemorySessionRows
from adapters.store.sealing import Sealer
from adapters.store.session_rows_schema import (
    ADDED_COLUMNS,
    COLUMNS,
    LIVE_WHERE,
    TABLE,
    added_columns,
    create_statements,
)
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


class RowQueries:
    """The rows' statements for either database (a mixin of its tracking recorder)."""

    datastore: Any
    tracking: str
    sealer: Sealer
    tables: dict[str, str]  # `{name}` in a statement → the table it names
    extra_tables: dict[str, str] = {}  # a subclass's own tables

    if TYPE_CHECKING:  # what the tracking recorders give (and the dialects below)

        def _insert_tracking(self, cursor: Any, tracking: Tracking) -> None: ...

        def max_tracking_id(self, application_name: str) -> int | None: ...

        def sql(self, statement: str) -> str: ...

        def lock_position(self, cursor: Any) -> None:
            """Take the write lock on the position before reading it (in `save`)."""

    def position(self) -> int:
        return self.max_tracking_id(self.tracking) or 0

    def rows(self, ids: Collection[UUID]) -> dict[UUID, SessionRow]:
        marks = ",".join("?" * len(ids))
        statement = f"SELECT * FROM {{table}} WHERE id IN ({marks})"
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self.sql(statement), [str(i) for i in ids])
            return {UUID(values["id"]): self._row(values) for values in cursor.fetchall()}

    def save(
        self, rows: Sequence[SessionRow], previous: int, position: int, extra: Sequence[Any] = ()
    ) -> None:
        names = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
        # A replay never takes a row back to an older version.
        upsert = self.sql(
            f"INSERT INTO {{table}} ({names}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE {{table}}.version < excluded.version"
        )
        with self.datastore.transaction(commit=True) as cursor:
            self.lock_position(cursor)
            if self._position(cursor) != previous:
                raise IntegrityError(f"{self.tracking} moved past {previous}")
            self._insert_tracking(cursor, Tracking(self.tracking, position))
            if rows:
                cursor.executemany(upsert, [self._values(row) for row in rows])
            self.write_extra(cursor, extra)

    def _position(self, cursor: Any) -> int:
        cursor.execute(
            self.sql("SELECT notification_id FROM {tracking} WHERE application_name = ?"),
            [self.tracking],
        )
        found = cursor.fetchone()
        return int(found["notification_id"]) if found else 0

    def write_extra(self, cursor: Any, extra: Sequence[Any]) -> None:
        """What a subclass writes with the rows, in their transaction."""

    def select(
        self, filters: Filters, before: tuple[datetime, str] | None, limit: int
    ) -> list[SessionRow]:
        clauses: list[str] = ["owner = ?"]
        params: list[Any] = [filters.owner]
        for column in ("state", "engine"):
            if (value := getattr(filters, column)) is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if filters.search is not None:
            clauses.append(self._search_clause(filters.search, params))
        if before is not None:
            clauses.append("(updated_at, tie) < (?, ?)")
            params += [to_micros(before[0]), self.sealer.blind(before[1])]
        statement = (
            f"SELECT * FROM {{table}} WHERE {' AND '.join(clauses)} "
            "ORDER BY updated_at DESC, tie DESC LIMIT ?"
        )
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self.sql(statement), [*params, limit])
            return [self._row(values) for values in cursor.fetchall()]

    def _search_clause(self, search: str, params: list[Any]) -> str:
        """Keys or names starting with `search`: compared as characters (substr, not LIKE:
        no wildcards, no collation), on the owner's rows as the listing index reads them
        in order, so a page stops at its limit. Encrypted keys and names cannot be
        compared: then only the key equal to `search`, by its blinded form."""
        if self.sealer.encrypts:
            params.append(self.sealer.blind(search))
            return "tie = ?"
        params += [len(search), search, len(search), search]
        return "(substr(key, 1, ?) = ? OR substr(name, 1, ?) = ?)"

    def counts(self, owner: str) -> dict[str, int]:
        statement = "SELECT state, COUNT(*) AS n FROM {table} WHERE owner = ? GROUP BY state"
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self.sql(statement), [owner])
            return {values["state"]: int(values["n"]) for values in cursor.fetchall()}

    def live(self) -> dict[str, SessionState]:
        statement = f"SELECT key, state FROM {{table}} WHERE {LIVE_WHERE}"
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self.sql(statement))
            return {
                self.sealer.open(values["key"]) or "": SessionState(values["state"])
                for values in cursor.fetchall()
            }

    def reset(self) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(self.sql("DELETE FROM {table}"))
            cursor.execute(
                self.sql("DELETE FROM {tracking} WHERE application_name = ?"), [self.tracking]
            )

    def _values(self, row: SessionRow) -> list[Any]:
        reason = None if row.reason is None else row.reason.value
        linked = None if row.linked is None else int(row.linked)
        seal = self.sealer.seal
        return [str(session_id(row.key)), seal(row.key), self.sealer.blind(row.key), row.owner,
                seal(row.name), row.engine, row.state.value, seal(reason), row.version,
                to_micros(row.updated_at), linked, row.tenure_from]  # fmt: skip

    def _row(self, values: Any) -> SessionRow:
        reason = self.sealer.open(values["reason"])
        return SessionRow(
            key=self.sealer.open(values["key"]) or "",
            owner=values["owner"],
            name=self.sealer.open(values["name"]) or "",
            engine=values["engine"],
            state=SessionState(values["state"]),
            reason=None if reason is None else DisconnectReason(reason),
            version=int(values["version"]),
            updated_at=from_micros(int(values["updated_at"])),
            linked=None if values["linked"] is None else bool(values["linked"]),
            tenure_from=values["tenure_from"],
        )


class SQLiteSessionRows(RowQueries, SQLiteTrackingRecorder):
    """`table` and `tracking`: whose rows (each follower of the log may keep its own)."""

    def __init__(
        self,
        datastore: SQLiteDatastore,
        sealer: Sealer,
        table: str = TABLE,
        tracking: str = TRACKING_NAME,
    ) -> None:
        self.table, self.tracking, self.sealer = table, tracking, sealer
        self.tables = {"table": table, "tracking": "tracking", **self.extra_tables}
        super().__init__(datastore)  # which reads the table's statements

    def sql(self, statement: str) -> str:
        for name, table in self.tables.items():
            statement = statement.replace("{" + name + "}", table)
        return statement

    def construct_create_table_statements(self) -> list[str]:
        ours = [self.sql(s) for s in self.create_statements()]
        return [*super().construct_create_table_statements(), *ours]

    def create_statements(self) -> list[str]:
        return create_statements("{table}", self.table)

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"PRAGMA table_info({self.table})")
            columns = {values["name"] for values in cursor.fetchall()}
            for column, add in zip(ADDED_COLUMNS, added_columns(), strict=True):
                if columns and column not in columns:
                    cursor.execute(self.sql(add))
        super().create_table()

    def lock_position(self, cursor: Any) -> None:
        # A write first: the transaction holds SQLite's write lock before it reads.
        cursor.execute(
            "UPDATE tracking SET notification_id = notification_id WHERE application_name = ?",
            [self.tracking],
        )


class PostgresSessionRows(RowQueries, PostgresTrackingRecorder):
    def __init__(
        self,
        datastore: PostgresDatastore,
        sealer: Sealer,
        table: str = TABLE,
        tracking: str = TRACKING_NAME,
    ) -> None:
        super().__init__(datastore, tracking_table_name="pairgate_tracking")
        self.table, self.tracking, self.sealer = table, tracking, sealer
        self.tables = {"table": table, "tracking": self.tracking_table_name, **self.extra_tables}
        self._schema = '"' + datastore.schema.replace('"', '""') + '"'
        statements = self.create_statements()
        statements[1:1] = added_columns("IF NOT EXISTS ")
        for statement in statements:
            self.sql_create_statements.append(SQL(self.sql(statement)))  # type: ignore[arg-type]

    def create_statements(self) -> list[str]:
        return create_statements("{table}", self.table)

    def sql(self, statement: str) -> str:
        statement = statement.replace("?", "%s")  # (no statement has a literal "?")
        for name, table in self.tables.items():
            statement = statement.replace("{" + name + "}", f"{self._schema}.{table}")
        return statement

    def lock_position(self, cursor: Any) -> None:
        cursor.execute(
            self.sql("SELECT 1 FROM {tracking} WHERE application_name = ? FOR UPDATE"),
            [self.tracking],
        )


def session_rows(sessions: DeviceSessions, sealer: Sealer) -> SessionRowStore:
    """The rows beside the events of `sessions`, their tables created if missing."""
    datastore = getattr(sessions.recorder, "datastore", None)
    store: SQLiteSessionRows | PostgresSessionRows
    if isinstance(datastore, SQLiteDatastore):
        store = SQLiteSessionRows(datastore, sealer)
    elif isinstance(datastore, PostgresDatastore):
        store = PostgresSessionRows(datastore, sealer)
    else:
        return MemorySessionRows()
    store.create_table()
    return store
