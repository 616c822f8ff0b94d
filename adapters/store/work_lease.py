"""A lease on one job for one process among those sharing a PostgreSQL store: a
session-level advisory lock on a connection of its own, freed by PostgreSQL the moment
the process (or its connection) dies, so a survivor takes the job over."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from adapters.store.lease_ids import lock_id


class PostgresWorkLease:
    def __init__(self, conninfo: str, job: str, schema: str | None = None) -> None:
        # A job name is not a device key (keys have no spaces): the locks never collide.
        self._lock = lock_id(f" {job}", schema)
        self._conninfo = conninfo
        self._connection: psycopg.AsyncConnection[Any] | None = None

    async def acquire(self) -> bool:
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True
            )
        row = await (
            await self._connection.execute("SELECT pg_try_advisory_lock(%s)", (self._lock,))
        ).fetchone()
        return bool(row and row[0])

    async def held(self) -> bool:
        if self._connection is None:
            return False
        try:
            await self._connection.execute("SELECT 1")
        except psycopg.Error:
            await self.release()
            return False
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                await connection.close()  # the lock goes with the connection


class SoleWorker:
    """WorkLease of a process alone on its store (SQLite): always its own."""

    async def acquire(self) -> bool:
        return True

    async def held(self) -> bool:
        return True

    async def release(self) -> None:
        return None
