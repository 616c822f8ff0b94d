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
import weakref
from pathlib import Path

import psycopg.errors
from psycopg import sql

from adapters.store.config import (
    DIRECTORY_MODE,
    FILE_MODE,
    SQLITE_FILE,
    StoreConfig,
    StoreUnreadableError,
    open_store,
    postgres_table,
)
from adapters.store.failover import PROCESSES, application_name
from domain.application.sessions import DeviceSessions

LOCK_FILE = "pairgate.lock"


class StoreInUseError(StoreUnreadableError):
    """Another pairgate process uses the store, which this use needs to itself."""


class SqliteLock:
    """The SQLite store's one user: an exclusive lock (flock) on `pairgate.lock` in its
    data directory, held while a process serves or rekeys the store. The kernel drops it
    when the process ends, however it ends (kill -9 included), so nothing is left to
    clean up; the file itself stays, naming its last holder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._closing: weakref.finalize[[int], SqliteLock] | None = None  # closing unlocks

    def acquire(self, doing: str) -> None:
        """Take the lock for `doing` (what the holder is doing, for whoever is refused),
        or raise StoreInUseError naming the process that holds it."""
        self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            store = self.path.parent.resolve() / SQLITE_FILE
            raise StoreInUseError(
                f"{store} is in use by another pairgate process ({holder or 'starting'}): "
                "a SQLite store is one process's. Stop that one first, or share a "
                "PostgreSQL store (PAIRGATE_DATABASE_URL) among several processes"
            ) from None
        os.fchmod(fd, FILE_MODE)  # (a file an earlier run left, under another umask)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, {doing}\n".encode())
        # Released with the object if nobody releases it (an app built and dropped).
        self._closing = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        if self._closing is not None:
            self._closing()
            self._closing = None


def open_served(config: StoreConfig) -> tuple[DeviceSessions, SqliteLock | None]:
    """`open_store` for a process that serves the store: a SQLite store's lock first
    (StoreInUseError if another process holds it), released again if the store cannot
    be opened."""
    if config.kind != "sqlite":
        return open_store(config), None
    lock = SqliteLock(config.data_dir)
    lock.acquire("serving")
    try:
        return open_store(config), lock
    except BaseException:
        lock.release()
        raise


def serving_processes(config: StoreConfig) -> int:
    """The pairgate processes serving this PostgreSQL store now: registered in its schema,
    their lease connection open (another deployment's schema does not count)."""
    query = sql.SQL(
        "SELECT count(*) FROM {} AS registered WHERE EXISTS (SELECT 1 FROM pg_stat_activity "
        "WHERE application_name = %s || registered.holder)"
    )
    with postgres_table(config, PROCESSES) as (pg, table):
        try:
            row = pg.execute(query.format(table), (application_name(""),)).fetchone()
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
