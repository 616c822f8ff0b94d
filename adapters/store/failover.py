"""Failover in about a second, without polling any key: each process holds a lock of its
own (one advisory lock per process, on its lease connection: its devices' leases are
rows of the lease log, lease_grants.py, and take no lock), and every other process
waits on it. PostgreSQL grants it to one waiter the moment that connection ends, so
survivors hear of a death at once, and the dead process's open grants in the lease log
name the devices to take over.

A process whose lease connection PostgreSQL dropped may still be alive: its engines run
until its lease check notices (PAIRGATE_LEASE_CHECK_INTERVAL), stops them, reconnects
and closes its grants in the lease log. So a survivor granted the lock takes over only
once that process has closed its grants or has no connection left (its other
connections carry its name): no key is run by two processes at once. (A process cut off
from PostgreSQL altogether, every connection dropped while it lives, is the one case
left to its lease check.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from adapters.store.lease_ids import lock_id, preparing
from adapters.store.lease_log import LOG_TABLE
from adapters.store.sealing import Sealer

log = logging.getLogger(__name__)

PROCESSES = "pairgate_processes"
POLL = 0.05  # seconds between looks at a disconnected (not dead) process's grants

OnGone = Callable[[Sequence[str]], Awaitable[object]]
Connection = psycopg.AsyncConnection[Any]


def process_lock(holder: str, schema: str | None) -> int:
    """A process's own lock (a job name with a space: never a key's)."""
    return lock_id(f" process {holder}", schema)


def application_name(holder: str) -> str:
    """What a process's lease connections are called (pg_stat_activity shows it)."""
    return f"pairgate:{holder}"


def waiter_name(holder: str) -> str:
    """What a process's connections waiting on other processes' locks are called."""
    return f"pairgate-wait:{holder}"


class ProcessWatch:
    def __init__(
        self,
        connect: Callable[[str | None], Awaitable[psycopg.AsyncConnection[Any]]],
        holder: str,
        schema: str | None,
        refresh: float = 1.0,
        sealer: Sealer | None = None,
    ) -> None:
        """`connect`: a new connection to the store's database (its schema set), named
        as given (this process's name if None); `sealer`: the lease log's (lease_log.py)."""
        self._connect, self._refresh = connect, refresh
        self._sealer = sealer or Sealer()
        self._holder, self._schema = holder, schema  # this process, its deployment
        self._waiting: dict[str, asyncio.Task[None]] = {}
        self._discovery: Connection | None = None
        self.on_gone: OnGone | None = None

    async def register(self, connection: psycopg.AsyncConnection[Any]) -> bool:
        """Take this process's own lock on its lease connection and say it is here; False
        while a survivor still holds it (after this process lost its connection)."""
        async with connection.transaction():  # (processes starting at once: one at a time)
            await connection.execute(
                "SELECT pg_advisory_xact_lock(%s)",
                (preparing(PROCESSES, self._schema),),
            )
            await connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (holder text PRIMARY KEY, "
                    "started_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(PROCESSES))
            )
        lock = process_lock(self._holder, self._schema)
        row = await (
            await connection.execute("SELECT pg_try_advisory_lock(%s)", (lock,))
        ).fetchone()
        if not row or not row[0]:
            return False
        await connection.execute(
            sql.SQL("INSERT INTO {} (holder) VALUES (%s) ON CONFLICT DO NOTHING").format(
                sql.Identifier(PROCESSES)
            ),
            (self._holder,),
        )
        return True

    async def run(self) -> None:
        """Wait on every other process's lock; look for new processes every `refresh`."""
        try:
            while True:
                with contextlib.suppress(psycopg.Error):
                    for holder in await self._others():
                        if holder not in self._waiting:
                            task = asyncio.create_task(self._wait_for(holder), name="failover")
                            self._waiting[holder] = task
                await asyncio.sleep(self._refresh)
        finally:
            for task in self._waiting.values():
                task.cancel()
            await asyncio.gather(*self._waiting.values(), return_exceptions=True)
            if self._discovery is not None:
                with contextlib.suppress(psycopg.Error):
                    await self._discovery.close()

    async def _others(self, connection: Connection | None = None) -> list[str]:
        """The other processes registered (on `connection`, else on discovery's own)."""
        if connection is None:
            if self._discovery is None or self._discovery.closed:
                self._discovery = await self._connect(None)
            connection = self._discovery
        statement = sql.SQL("SELECT holder FROM {} WHERE holder <> %s")
        found = await connection.execute(
            statement.format(sql.Identifier(PROCESSES)), (self._holder,)
        )
        return [row[0] for row in await found.fetchall()]

    def _share(
        self, keys: Sequence[str], others: Sequence[str], gone: str
    ) -> tuple[list[str], list[str]]:
        """This process's share of a dead one's keys, and the rest. Every survivor hears
        of the death and splits the keys the same way (by a hash of each key and the dead
        process, over the survivors in one order: each death a new split, or the keys of
        one share would all fall to one survivor again), so each takes its share first,
        in parallel; then it tries the rest, which its owner has taken by then (the
        leases decide: a key is granted to one of them)."""
        survivors = sorted({*others, self._holder})
        me = survivors.index(self._holder)
        mine: list[str] = []
        rest: list[str] = []
        for key in keys:
            digest = hashlib.sha256(f"{gone} {key}".encode()).digest()
            share = int.from_bytes(digest[:8], "big") % len(survivors)
            (mine if share == me else rest).append(key)
        return mine, rest

    async def _wait_for(self, holder: str) -> None:
        try:
            # Not named as this process: a waiting query outlives a killed client (the
            # server notices only at its next check), so it must not make it look alive.
            async with await self._connect(waiter_name(self._holder)) as connection:
                with contextlib.suppress(psycopg.Error):  # PostgreSQL 14 and later
                    await connection.execute("SET client_connection_check_interval = '2s'")
                lock = process_lock(holder, self._schema)
                await connection.execute("SELECT pg_advisory_lock(%s)", (lock,))  # blocks
                keys = await self._open_grants(connection, holder)
                while keys and await self._alive(connection, holder):
                    if not await self._open_grants(connection, holder):
                        break  # it stopped its engines and closed its grants itself
                    await asyncio.sleep(POLL)
                await connection.execute(
                    sql.SQL("DELETE FROM {} WHERE holder = %s").format(sql.Identifier(PROCESSES)),
                    (holder,),
                )
                survivors = await self._others(connection) if keys else []
                await connection.execute("SELECT pg_advisory_unlock(%s)", (lock,))
            if keys:
                log.warning("process %s has gone: taking over its %d devices", holder, len(keys))
                if self.on_gone is not None:
                    mine, rest = self._share(keys, survivors, holder)
                    await self.on_gone(mine)
                    if rest:  # what the other survivors have not taken (one may be gone too)
                        await self.on_gone(rest)
        except psycopg.Error:
            log.warning("waiting on process %s failed; looking again", holder, exc_info=True)
        except ValueError:  # Sealer.open: its grants are sealed with another cipher key
            log.error(
                "process %s sealed its lease log with another PAIRGATE_CIPHER_KEY: its devices "
                "are not taken over (every process of a deployment needs the same key)",
                holder,
            )
        finally:
            self._waiting.pop(holder, None)

    async def _open_grants(self, connection: Connection, holder: str) -> list[str]:
        """The keys `holder` has open grants of, opened (a row an older version wrote and
        none has converted yet holds its key in plain text)."""
        rows = await (
            await connection.execute(
                sql.SQL(
                    "SELECT DISTINCT ON (key) coalesce(sealed_key, key) FROM {} "
                    "WHERE holder = %s AND released_at IS NULL ORDER BY key"
                ).format(sql.Identifier(LOG_TABLE)),
                (holder,),
            )
        ).fetchall()
        return sorted({self._sealer.open(row[0]) or "" for row in rows})

    async def _alive(self, connection: Connection, holder: str) -> bool:
        row = await (
            await connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name(holder),),
            )
        ).fetchone()
        return bool(row and row[0])


async def close_grants(connection: Connection, holder: str) -> None:
    """After a lost connection (its engines stopped): none of this holder's grants holds."""
    await connection.execute(
        sql.SQL(
            "UPDATE {} SET released_at = now() WHERE holder = %s AND released_at IS NULL"
        ).format(sql.Identifier(LOG_TABLE)),
        (holder,),
    )
