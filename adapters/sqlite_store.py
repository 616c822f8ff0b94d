"""eventsourcing's SQLite persistence, with the durability level pairgate is told to use.

eventsourcing puts the file in WAL mode and leaves SQLite's default `synchronous=FULL`:
an fsync at every commit, four per pairing. With WAL, `NORMAL` syncs at checkpoints
instead: a killed process loses nothing (committed transactions are in the WAL file),
an OS crash or power cut can lose the last commits. `PAIRGATE_SQLITE_SYNCHRONOUS`
chooses (docs/performance.md has the numbers).
"""

from __future__ import annotations

from eventsourcing import sqlite
from eventsourcing.utils import Environment, EnvType

SYNCHRONOUS = "SQLITE_SYNCHRONOUS"
LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


class Factory(sqlite.Factory):
    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        level = (self.env.get(SYNCHRONOUS) or "FULL").upper()
        if level not in LEVELS:
            raise ValueError(f"{SYNCHRONOUS} must be one of {', '.join(LEVELS)}")
        pool = self.datastore.pool
        create = pool._create_connection

        def create_with_level() -> sqlite.SQLiteConnection:
            connection = create()
            connection._sqlite_conn.execute(f"PRAGMA synchronous={level}")
            return connection

        pool._create_connection = create_with_level  # type: ignore[method-assign]
