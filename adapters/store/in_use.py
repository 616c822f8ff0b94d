"""Who else uses a store, for the uses that must be alone.

A SQLite store is one process's. A second `pairgate serve` on the same file would record
the first one's live devices as lost and run a second engine for each (two WhatsApp
connections on one device's keys); a `pairgate rekey` under a running server would leave
whatever the server writes afterwards sealed with the retired key. So serving and
rekeying take an exclusive lock on a file beside the store (`SqliteLock`).

A PostgreSQL store is shared by design (leases share its devices out), but a rekey must
still wait for every process of the deployment to stop: `serving_processes` counts those
registered in the store's schema (adapters/store/failover.py) whose lease connection is
still open.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import BinaryIO

import psycopg
import psycopg.errors
from psycopg import sql

from adapters.store.config import (
    DIRECTORY_MODE,
    FILE_MODE,
    SQLITE_FILE,
    StoreConfig,
    StoreUnreadableError,
    postgres_conninfo,
)
from adapters.store.failover import PROCESSES, application_name

LOCK_FILE = "pairgate.lock"
CONNECT_TIMEOUT = 10  # seconds


class StoreInUseError(StoreUnreadableError):
    """Another pairgate process uses the store, which this use needs to itself."""


class SqliteLock:
    """The SQLite store's one user: an exclusive lock (flock) on `pairgate.lock` in its
    data directory, held while a process serves or rekeys the store. The kernel drops it
    when the process ends, however it ends (kill -9 included), so nothing is left to
    clean up; the file itself stays, naming its last holder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: BinaryIO | None = None

    def acquire(self, doing: str) -> None:
        """Take the lock for `doing` (what the holder is doing, for whoever is refused),
        or raise StoreInUseError naming the process that holds it."""
        self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        file = open(os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE), "r+b")  # noqa: SIM115
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = file.read(200).decode(errors="replace").strip() or "its pid not yet written"
            file.close()
            store = self.path.parent.resolve() / SQLITE_FILE
            raise StoreInUseError(
                f"{store} is in use by another pairgate process ({holder}): a SQLite store "
                "is one process's. Stop that one first, or share a PostgreSQL store "
                "(PAIRGATE_DATABASE_URL) among several processes"
            ) from None
        file.truncate(0)
        file.write(f"pid {os.getpid()}, {doing}\n".encode())
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # and with it the lock
            self._file = None


def serving_processes(config: StoreConfig) -> int:
    """The pairgate processes serving this PostgreSQL store now: registered in its schema,
    their lease connection open (another deployment's schema does not count)."""
    conninfo, schema = postgres_conninfo(config)
    table = sql.SQL(".").join([sql.Identifier(schema or "public"), sql.Identifier(PROCESSES)])
    query = sql.SQL(
        "SELECT count(*) FROM {} AS registered WHERE EXISTS (SELECT 1 FROM pg_stat_activity "
        "WHERE application_name = %s || registered.holder)"
    ).format(table)
    prefix = application_name("")
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as pg:
        try:
            row = pg.execute(query, (prefix,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0  # no process has served this store yet
    return int(row[0]) if row else 0


def refuse_while_served(config: StoreConfig, doing: str) -> None:
    """StoreInUseError if any pairgate process serves this PostgreSQL store."""
    count = serving_processes(config)
    if count:
        raise StoreInUseError(
            f"{count} pairgate process{'es' if count > 1 else ''} "
            f"{'use' if count > 1 else 'uses'} this store: stop every `pairgate serve` of "
            f"the deployment before {doing}"
        )
