"""The webhooks' outbox, in the events' database: subscriptions, pending and dead
deliveries, and the rows of the follower that fills it (its own copy of the sessions'
rows, so each event's owner is the one it had then), tracked like the read model.

With PAIRGATE_CIPHER_KEY, secrets, keys and bodies (a session.qr's carries a QR image)
are stored encrypted, and a delivery's queue (its subscription's messages about one key)
is named by the blinded key (adapters/store/sealing.py). The SQL is written once, as the
rows' is (adapters/store/session_rows.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from adapters.store.sealing import Sealer
from adapters.store.session_rows import PostgresSessionRows, SQLiteSessionRows
from adapters.store.session_rows_schema import TABLE
from domain.application.session_rows import TRACKING_NAME, from_micros, to_micros
from domain.application.sessions import DeviceSessions
from domain.application.webhooks import (
    WEBHOOK_TRACKING,
    Delivery,
    Outgoing,
    Subscription,
    WebhookStore,
)

ROWS_TABLE = "pairgate_webhook_sessions"
SUBSCRIPTIONS = "pairgate_webhook_subscriptions"
DELIVERIES = "pairgate_webhook_deliveries"
CREATE = [
    "CREATE TABLE IF NOT EXISTS {subscriptions} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
    "url TEXT NOT NULL, events TEXT NOT NULL, key TEXT, secret TEXT NOT NULL, "
    "created_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS pairgate_webhook_subscriptions_by_owner "
    "ON {subscriptions} (owner, created_at)",
    "CREATE TABLE IF NOT EXISTS {deliveries} (id {serial}, subscription TEXT NOT NULL, "
    "key TEXT NOT NULL, queue TEXT NOT NULL, message_id TEXT NOT NULL, "
    "event_type TEXT NOT NULL, "
    "body TEXT NOT NULL, first_at BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
    "next_at BIGINT NOT NULL, last_error TEXT, dead INTEGER NOT NULL DEFAULT 0)",
    # The head of each subscription's key (order per key), and what is due.
    "CREATE INDEX IF NOT EXISTS pairgate_webhook_deliveries_by_queue "
    "ON {deliveries} (subscription, queue, dead, id)",
    "CREATE INDEX IF NOT EXISTS pairgate_webhook_deliveries_due ON {deliveries} (dead, next_at)",
]
DUE = (
    "WITH heads AS (SELECT d.*, ROW_NUMBER() OVER (PARTITION BY d.subscription ORDER BY d.id) "
    "AS place FROM {deliveries} d WHERE d.dead = 0 AND d.next_at <= ? AND d.id = "
    "(SELECT MIN(h.id) FROM {deliveries} h WHERE h.subscription = d.subscription "
    "AND h.queue = d.queue AND h.dead = 0)) "
    "SELECT heads.*, s.url, s.secret FROM heads JOIN {subscriptions} s "
    "ON s.id = heads.subscription WHERE heads.place <= ? ORDER BY heads.id LIMIT ?"
)


class OutboxQueries:
    """The outbox's statements, for either database (a mixin of its rows store)."""

    datastore: Any
    sealer: Sealer
    per_subscription: int = 16
    extra_tables = {"subscriptions": SUBSCRIPTIONS, "deliveries": DELIVERIES, "sessions": TABLE}

    if TYPE_CHECKING:

        def sql(self, statement: str) -> str: ...

    serial: str  # the dialect's auto-numbered primary key

    def create_statements(self) -> list[str]:
        ours = [statement.replace("{serial}", self.serial) for statement in CREATE]
        return [*super().create_statements(), *ours]  # type: ignore[misc]

    def _run(self, statement: str, params: Sequence[Any] = (), commit: bool = True) -> list[Any]:
        with self.datastore.transaction(commit=commit) as wrapped:
            cursor = _raw(wrapped)
            cursor.execute(self.sql(statement), list(params))
            return list(cursor.fetchall()) if cursor.description else []

    def write_extra(self, cursor: Any, extra: Sequence[Any]) -> None:
        statement = self.sql(
            "INSERT INTO {deliveries} (subscription, key, queue, message_id, event_type, body, "
            "first_at, attempts, next_at, dead) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, 0)"
        )
        for delivery in extra:
            first = to_micros(delivery.first_at)
            cursor.execute(
                statement,
                [
                    delivery.subscription,
                    self.sealer.seal(delivery.key),
                    self.sealer.blind(delivery.key),
                    delivery.message_id,
                    delivery.event_type,
                    self.sealer.seal(delivery.body),
                    first,
                    first,
                ],
            )

    def subscriptions(self, owner: str | None = None) -> list[Subscription]:
        where, params = ("WHERE owner = ? ", [owner]) if owner is not None else ("", [])
        rows = self._run(
            f"SELECT * FROM {{subscriptions}} {where}ORDER BY created_at, id", params, commit=False
        )
        return [self._subscription(row) for row in rows]

    def _subscription(self, row: Any) -> Subscription:
        return Subscription(
            id=row["id"],
            owner=row["owner"],
            url=row["url"],
            events=tuple(row["events"].split(",")),
            key=self.sealer.open(row["key"]),
            secret=self.sealer.open(row["secret"]) or "",
            created_at=from_micros(int(row["created_at"])),
        )

    def add_subscription(self, subscription: Subscription) -> None:
        s = subscription
        with self.datastore.transaction(commit=True) as wrapped:
            cursor = _raw(wrapped)
            self.lock_subscriptions(cursor)
            cursor.execute(
                self.sql("INSERT INTO {subscriptions} VALUES (?, ?, ?, ?, ?, ?, ?)"),
                [
                    s.id,
                    s.owner,
                    s.url,
                    ",".join(s.events),
                    self.sealer.seal(s.key),
                    self.sealer.seal(s.secret),
                    to_micros(s.created_at),
                ],
            )
            cursor.execute(self.sql("SELECT COUNT(*) AS n FROM {subscriptions}"))
            if int(cursor.fetchone()["n"]) == 1:
                self._start_from_read_model(cursor)

    def _start_from_read_model(self, cursor: Any) -> None:
        """The first subscription: the outbox's rows and position become the sessions
        read model's, in the subscription's transaction. Without subscriptions the
        outbox's follower does nothing (its rows fall behind); from here it goes on from
        a position no later than the log's head when the subscription was made, so no
        event after it is missed. (Both are the same projection of the same log: the
        same rows at the same position.)"""
        self.lock_read_model(cursor)
        ours = [WEBHOOK_TRACKING]
        cursor.execute(self.sql("DELETE FROM {tracking} WHERE application_name = ?"), ours)
        cursor.execute(self.sql("DELETE FROM {table}"))
        cursor.execute(self.sql("INSERT INTO {table} SELECT * FROM {sessions}"))
        cursor.execute(
            self.sql(
                "INSERT INTO {tracking} (application_name, notification_id) "
                "SELECT ?, notification_id FROM {tracking} WHERE application_name = ?"
            ),
            [WEBHOOK_TRACKING, TRACKING_NAME],
        )

    def lock_subscriptions(self, cursor: Any) -> None:
        """Before counting them: one first subscription, however many are made at once."""

    def lock_read_model(self, cursor: Any) -> None:
        """Before copying it: no page of the read model lands in between."""

    def remove_subscription(self, owner: str, subscription_id: str) -> bool:
        with self.datastore.transaction(commit=True) as wrapped:
            cursor = _raw(wrapped)
            cursor.execute(
                self.sql("DELETE FROM {subscriptions} WHERE id = ? AND owner = ?"),
                [subscription_id, owner],
            )
            if cursor.rowcount != 1:
                return False
            cursor.execute(
                self.sql("DELETE FROM {deliveries} WHERE subscription = ?"), [subscription_id]
            )
            return True

    def due(self, now: datetime, limit: int) -> list[Outgoing]:
        rows = self._run(DUE, [to_micros(now), self.per_subscription, limit], commit=False)
        return [Outgoing(self._delivery(r), r["url"], self.sealer.open(r["secret"]) or "")
                for r in rows]  # fmt: skip

    def _delivery(self, row: Any) -> Delivery:
        return Delivery(
            id=int(row["id"]),
            subscription=row["subscription"],
            key=self.sealer.open(row["key"]) or "",
            message_id=row["message_id"],
            event_type=row["event_type"],
            body=self.sealer.open(row["body"]) or "",
            first_at=from_micros(int(row["first_at"])),
            attempts=int(row["attempts"]),
            next_at=from_micros(int(row["next_at"])),
            last_error=row["last_error"],
            dead=bool(row["dead"]),
        )

    def delivered(self, delivery_id: int) -> None:
        self._run("DELETE FROM {deliveries} WHERE id = ?", [delivery_id])

    def failed(self, delivery: Delivery) -> None:
        assert delivery.next_at is not None
        self._run(
            "UPDATE {deliveries} SET attempts = ?, next_at = ?, last_error = ?, dead = ? "
            "WHERE id = ?",
            [
                delivery.attempts,
                to_micros(delivery.next_at),
                delivery.last_error,
                int(delivery.dead),
                delivery.id,
            ],
        )

    def dead_letters(self, owner: str, limit: int) -> list[Delivery]:
        rows = self._run(
            "SELECT d.* FROM {deliveries} d JOIN {subscriptions} s ON s.id = d.subscription "
            "WHERE s.owner = ? AND d.dead = 1 ORDER BY d.id DESC LIMIT ?",
            [owner, limit],
            commit=False,
        )
        return [self._delivery(row) for row in rows]

    def backlog(self) -> int:
        rows = self._run("SELECT COUNT(*) AS n FROM {deliveries} WHERE dead = 0", commit=False)
        return int(rows[0]["n"])


def _raw(cursor: Any) -> Any:
    """The driver's cursor (eventsourcing wraps SQLite's, without rowcount/description)."""
    return getattr(cursor, "sqlite_cursor", cursor)


class SQLiteOutbox(OutboxQueries, SQLiteSessionRows):
    """(Its writes hold SQLite's one write lock: a subscription's INSERT comes first.)"""

    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, datastore: SQLiteDatastore, sealer: Sealer) -> None:
        super().__init__(datastore, sealer, ROWS_TABLE, WEBHOOK_TRACKING)


class PostgresOutbox(OutboxQueries, PostgresSessionRows):
    serial = "BIGSERIAL PRIMARY KEY"

    def __init__(self, datastore: PostgresDatastore, sealer: Sealer) -> None:
        super().__init__(datastore, sealer, ROWS_TABLE, WEBHOOK_TRACKING)

    def lock_subscriptions(self, cursor: Any) -> None:
        cursor.execute(self.sql("LOCK TABLE {subscriptions} IN SHARE ROW EXCLUSIVE MODE"))

    def lock_read_model(self, cursor: Any) -> None:
        # The read model's pages write its rows: they wait until this commits.
        cursor.execute(self.sql("LOCK TABLE {sessions} IN SHARE MODE"))


def webhook_outbox(sessions: DeviceSessions, sealer: Sealer) -> WebhookStore | None:
    """The outbox beside the events of `sessions` (None for a memory store: nothing it
    holds would outlive the process, so webhooks are not offered)."""
    datastore = getattr(sessions.recorder, "datastore", None)
    outbox: SQLiteOutbox | PostgresOutbox
    if isinstance(datastore, SQLiteDatastore):
        outbox = SQLiteOutbox(datastore, sealer)
    elif isinstance(datastore, PostgresDatastore):
        outbox = PostgresOutbox(datastore, sealer)
    else:
        return None
    outbox.create_table()
    return outbox
