"""eventsourcing's SQLite persistence, with the durability level pairgate is told to use.

eventsourcing puts the file in WAL mode and leaves SQLite's default `synchronous=FULL`:
an fsync at every commit, four per pairing. With WAL, `NORMAL` syncs at checkpoints
instead: a killed process loses nothing (committed transactions are in the WAL file),
an OS crash or power cut can lose the last commits. `PAIRGATE_SQLITE_SYNCHRONOUS`
chooses (docs/performance.md has the numbers).

Checkpoints (copying the WAL into the database file, and the fsyncs that go with them)
happen in whichever connection commits once the WAL passes 1,000 pages. The server calls
the store from its event loop, so it turns that off (`SQLITE_AUTOCHECKPOINT=0`) and runs
`WalCheckpoints` in a worker thread instead.

The server's appends to the log (four a pairing, on its event loop) go through `Appends`,
on a connection of their own instead of one borrowed from eventsourcing's pool, and every
connection keeps sqlite3's statement cache (`connect`): together half an append's CPU time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventsourcing import sqlite
from eventsourcing.persistence import (
    ApplicationRecorder,
    ConnectionPoolClosedError,
    ConnectionUnavailableError,
    InterfaceError,
    StoredEvent,
)
from eventsourcing.utils import Environment, EnvType

SYNCHRONOUS = "SQLITE_SYNCHRONOUS"
AUTOCHECKPOINT = "SQLITE_AUTOCHECKPOINT"
LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

log = logging.getLogger(__name__)


def connect(pool: sqlite.SQLiteConnectionPool, pragmas: list[str]) -> sqlite.SQLiteConnection:
    """A connection as eventsourcing's pool makes one (`_create_connection`), with the
    durability settings above and sqlite3's own statement cache: eventsourcing asks for
    `cached_statements=True`, a cache of one statement, so a transaction's BEGIN and
    INSERT compiled each other out of it (an append cost ~20 µs more)."""
    try:
        connection = sqlite3.connect(
            pool.db_name,
            uri=True,
            check_same_thread=False,
            isolation_level=None,  # autocommit: transactions begin with an explicit BEGIN
            timeout=pool.lock_timeout or sqlite.SQLITE3_DEFAULT_LOCK_TIMEOUT,
        )
    except (sqlite3.Error, TypeError) as error:
        raise InterfaceError(error) from error
    if not pool.is_journal_mode_wal:  # as eventsourcing's pool does: once, by the first
        if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            connection.execute("PRAGMA journal_mode=WAL")  # kept in the file
        pool.is_journal_mode_wal = True
    for pragma in pragmas:
        connection.execute(pragma)
    connection.row_factory = sqlite3.Row
    return sqlite.SQLiteConnection(sqlite_conn=connection, max_age=pool.max_age)


class Appends(sqlite.SQLiteApplicationRecorder):
    """eventsourcing's recorder of the event log, whose appends use a connection of their own.

    Borrowed from the pool, each append's connection cost a semaphore, the writer lock,
    a condition and their timeouts, inside three nested context managers: about as much
    CPU as its BEGIN, INSERT and COMMIT (one-event appends in a loop: ~105 µs each
    through the pool, ~70 µs here with a cache of one statement, ~55 µs with sqlite3's).
    Appends still hold the pool's writer lock while they write, so they and the pool's
    writers (the followers' positions, the read model) take turns, as SQLite wants,
    without meeting in its busy-wait. Reads use the pool as before."""

    def __init__(
        self, datastore: sqlite.SQLiteDatastore, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name)
        self._connection: sqlite.SQLiteConnection | None = None

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        pool = self.datastore.pool
        if not pool._writer_lock.acquire(timeout=pool.pool_timeout):
            raise ConnectionUnavailableError("Timed out waiting for return of writer")
        try:
            if pool.closed:
                raise ConnectionPoolClosedError
            if self._connection is None:
                self._connection = pool._create_connection()
            with sqlite.SQLiteTransaction(self._connection, commit=True) as cursor, cursor:
                return self._insert_events(cursor, stored_events, **kwargs)
        finally:
            pool._writer_lock.release()

    def close(self) -> None:
        with self.datastore.pool._writer_lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class Factory(sqlite.Factory):
    application_recorder_class = Appends

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        level = (self.env.get(SYNCHRONOUS) or "FULL").upper()
        if level not in LEVELS:
            raise ValueError(f"{SYNCHRONOUS} must be one of {', '.join(LEVELS)}")
        pragmas = [f"PRAGMA synchronous={level}"]
        if autocheckpoint := self.env.get(AUTOCHECKPOINT):
            pragmas.append(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        pool = self.datastore.pool
        if pool.is_sqlite_memory_mode:
            raise ValueError("pairgate's SQLite store is a file (an in-memory store: 'memory')")
        pool._create_connection = functools.partial(connect, pool, pragmas)  # type: ignore[method-assign]
        pool._pool = MostRecentFirst()
        self._appends: list[Appends] = []

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        if isinstance(recorder, Appends):
            self._appends.append(recorder)
        return recorder

    def close(self) -> None:
        for recorder in self._appends:
            recorder.close()
        super().close()


class MostRecentFirst(deque[sqlite.SQLiteConnection]):
    """The pool's idle connections, handed out last returned first.

    eventsourcing's pool hands out the connection returned longest ago (`popleft`). Each
    SQLite connection keeps its own page cache, and drops all of it when it begins a
    transaction after another connection wrote: once the log's followers (threads of
    their own) have made the pool grow, taking its connections in turn made nearly every
    store call on the event loop start with a cold cache (~17 page reads a pairing, none
    before the followers). The connection returned last is the one that wrote last.
    """

    def popleft(self) -> sqlite.SQLiteConnection:
        return self.pop()


class WalCheckpoints:
    """Checkpoints an SQLite store's WAL from a worker thread, every `interval` seconds.

    PASSIVE checkpoints: they never wait for, or hold up, the server's readers and writers.
    """

    def __init__(self, database: Path, interval: float = 1.0) -> None:
        self._database = database
        self._interval = interval
        self._connection: sqlite3.Connection | None = None
        # A cancelled `run` leaves its checkpoint running on its thread: `close` must not
        # use (or close) the connection under it.
        self._lock = threading.Lock()

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        with self._lock:
            if self._connection is None:
                self._connection = sqlite3.connect(self._database, check_same_thread=False)
            self._connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error:
                log.exception("checkpointing %s failed; trying again", self._database)

    def close(self) -> None:
        """A last, complete checkpoint: the WAL file is left empty."""
        try:
            self.checkpoint("TRUNCATE")
        except sqlite3.Error:
            log.exception("the last checkpoint of %s failed", self._database)
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
