"""`pairgate rekey` for the store: the events, the snapshots and the read models' sealed
texts, sealed again with a new key (adapters/resealing.py), a batch of rows per
transaction. What the new key already sealed is skipped, so a run killed half-way is run
again to finish. While a rekey is under way its marker is there (rekey_marker.py), and
the store refuses to open: the service never serves a store whose rows are sealed with
two keys.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from adapters.resealing import Resealer
from adapters.store.config import StoreConfig, postgres_conninfo
from adapters.store.lease_log import LOG_TABLE
from adapters.store.sealing import SEALED, Sealer
from domain.application.sessions import DeviceSessions

BATCH = 500
# The read models' tables (and the lease log's): their primary key, their sealed columns
# (the first is never NULL, but in a lease log row an older version wrote, which the next
# open converts with the new key: a row whose first one opens with the new key is done)
# and their blinded ones (column: the sealed column whose text it blinds).
READ_MODELS: dict[str, tuple[str, tuple[str, ...], dict[str, str]]] = {
    "pairgate_sessions": ("id", ("key", "name", "reason"), {"tie": "key"}),
    "pairgate_webhook_sessions": ("id", ("key", "name", "reason"), {"tie": "key"}),
    "pairgate_webhook_subscriptions": ("id", ("secret", "key"), {}),
    "pairgate_webhook_deliveries": ("id", ("key", "body"), {"queue": "key"}),
    "pairgate_lease_log": ("id", ("sealed_key",), {"key": "sealed_key"}),
}


class StoreRekey:
    """Seals a store's rows with `resealer`'s new key; `step` is called after each row."""

    def __init__(
        self, config: StoreConfig, resealer: Resealer, old_key: str | None, new_key: str
    ) -> None:
        self.config = config
        self.resealer = resealer
        self.old, self.new = Sealer(old_key), Sealer(new_key)

    def tables(self) -> tuple[str, str]:
        """The events' and the snapshots' tables, as eventsourcing names them here."""
        plain = dataclasses.replace(self.config, cipher_key=None)
        sessions = DeviceSessions(env=plain.environment() | {"IS_SNAPSHOTTING_ENABLED": "y"})
        try:
            assert sessions.snapshots is not None
            recorders: Any = (sessions.recorder, sessions.snapshots.recorder)
            return recorders[0].events_table_name, recorders[1].events_table_name
        finally:
            sessions.close()

    def events(self, step: Callable[[], None]) -> int:
        resealed = 0
        for table in self.tables():
            columns = ("originator_id", "originator_version")
            resealed += self._rows(table, columns, ("state",), self._event, step)
        return resealed

    def read_models(self, step: Callable[[], None]) -> int:
        self._add_sealed_key_to_lease_log()
        resealed = 0
        for table, (key, sealed, blinded) in READ_MODELS.items():
            columns = (*sealed, *blinded)

            row = functools.partial(self._read_model_row, sealed=sealed, blinded=blinded)
            resealed += self._rows(table, (key,), columns, row, step)
        return resealed

    def _add_sealed_key_to_lease_log(self) -> None:
        """An older version's lease log lacks it; the next open converts its rows."""
        if self.config.kind != "postgres":
            return
        with self._database() as (run, name):
            if run(f"SELECT 1 FROM {name(LOG_TABLE)} LIMIT 0", (), exists=True):
                run(f"ALTER TABLE {name(LOG_TABLE)} ADD COLUMN IF NOT EXISTS sealed_key text", ())
                run("COMMIT", ())

    def _event(self, values: tuple[Any, ...]) -> tuple[Any, ...] | None:
        state = bytes(values[0])
        if self.resealer.sealed_with_new(state):
            return None
        plain = self.resealer.open_old(state)
        if self.resealer.old is not None:  # stored compressed, then encrypted
            plain = zlib.decompress(plain)
        return (self.resealer.new.encrypt(zlib.compress(plain)),)

    def _read_model_row(
        self, values: tuple[Any, ...], sealed: tuple[str, ...], blinded: dict[str, str]
    ) -> tuple[Any, ...] | None:
        texts = dict(zip(sealed, values, strict=False))
        witness = texts[sealed[0]]
        if witness is None:
            return None  # (a lease log row not converted yet: see READ_MODELS)
        if witness.startswith(SEALED):
            try:
                self.new.open(witness)
                return None  # done by an earlier run
            except ValueError:
                pass
        plain = {column: self.old.open(text) for column, text in texts.items()}
        new = [self.new.seal(plain[column]) for column in sealed]
        return (*new, *(self.new.blind(plain[source] or "") for source in blinded.values()))

    def _rows(
        self,
        table: str,
        key: tuple[str, ...],
        columns: tuple[str, ...],
        reseal: Callable[[tuple[Any, ...]], tuple[Any, ...] | None],
        step: Callable[[], None],
    ) -> int:
        resealed = 0
        with self._database() as (run, name):
            if not run(f"SELECT 1 FROM {name(table)} LIMIT 0", (), exists=True):
                return 0
            keys, after = ", ".join(key), None
            wanted = f"SELECT {keys}, {', '.join(columns)} FROM {name(table)}"
            assign = ", ".join(f"{column} = ?" for column in columns)
            update = f"UPDATE {name(table)} SET {assign} WHERE ({keys}) = ({mark(key)})"
            while True:
                where = f" WHERE ({keys}) > ({mark(key)})" if after is not None else ""
                rows = run(f"{wanted}{where} ORDER BY {keys} LIMIT {BATCH}", after or ())
                if not rows:
                    return resealed
                for row in rows:
                    values = reseal(tuple(row[len(key) :]))
                    if values is not None:
                        run(update, (*values, *row[: len(key)]))
                        resealed += 1
                    step()
                run("COMMIT", ())
                after = tuple(rows[-1][: len(key)])

    @contextmanager
    def _database(self) -> Iterator[tuple[Any, Callable[[str], str]]]:
        """A way to run a statement (`?` marks) and to name a table, on this store."""
        if self.config.kind == "sqlite":
            connection = sqlite3.connect(self.config.sqlite_path, timeout=10)
            # Freed pages are zeroed: what a row held before is not left in the file.
            connection.execute("PRAGMA secure_delete = ON")

            def run_sqlite(statement: str, params: Any, exists: bool = False) -> Any:
                try:
                    if statement == "COMMIT":
                        return connection.commit()
                    rows = connection.execute(statement, params).fetchall()
                    return 1 if exists else rows  # (a table that is not there raises)
                except sqlite3.OperationalError as error:
                    if exists and "no such table" in str(error):
                        return None
                    raise

            try:
                yield run_sqlite, lambda table: f'"{table}"'
                connection.commit()
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                connection.close()
            return
        conninfo, schema = postgres_conninfo(self.config)
        with psycopg.connect(conninfo) as pg:

            def run_postgres(statement: str, params: Any, exists: bool = False) -> Any:
                if statement == "COMMIT":
                    return pg.commit()
                if exists:
                    found = pg.execute("SELECT to_regclass(%s)", (table_name(statement),))
                    return (found.fetchone() or (None,))[0]
                cursor = pg.execute(statement.replace("?", "%s"), params)
                return cursor.fetchall() if cursor.description else None

            def table_name(statement: str) -> str:
                return statement.split(" FROM ")[1].split(" ")[0]

            yield run_postgres, lambda table: f'"{schema or "public"}"."{table}"'


def mark(key: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in key)
