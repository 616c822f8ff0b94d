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
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections import deque
from pathlib import Path

from eventsourcing import sqlite
from eventsourcing.utils import Environment, EnvType

SYNCHRONOUS = "SQLITE_SYNCHRONOUS"
AUTOCHECKPOINT = "SQLITE_AUTOCHECKPOINT"
LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")

log = logging.getLogger(__name__)


class Factory(sqlite.Factory):
    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        level = (self.env.get(SYNCHRONOUS) or "FULL").upper()
        if level not in LEVELS:
            raise ValueError(f"{SYNCHRONOUS} must be one of {', '.join(LEVELS)}")
        pragmas = [f"PRAGMA synchronous={level}"]
        if autocheckpoint := self.env.get(AUTOCHECKPOINT):
            pragmas.append(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        pool = self.datastore.pool
        create = pool._create_connection

        def create_with_level() -> sqlite.SQLiteConnection:
            connection = create()
            for pragma in pragmas:
                connection._sqlite_conn.execute(pragma)
            return connection

        pool._create_connection = create_with_level  # type: ignore[method-assign]
        pool._pool = MostRecentFirst()


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
