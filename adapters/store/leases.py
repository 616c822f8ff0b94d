"""PostgresLeases: one owner per device across processes, by PostgreSQL advisory locks.

A key's lease is a session-level advisory lock held on this process's own connection.
PostgreSQL gives such a lock to one connection at a time and frees it the moment that
connection ends, so a process that dies (even by `kill -9`: the kernel closes its
socket) lets go of all its devices at once, and no two live processes can hold the same
key. A process that loses its connection without dying loses its locks too: the
watchdog here notices within one check interval and makes the service stop those
engines (see adapters/store/failover.py for what a survivor waits for).

Commands for a key owned by another process (logout, delete, the simulated phone's
moves) are forwarded with NOTIFY on the same database and answered the same way.

Every grant is written to `pairgate_lease_log` (lease_log.py: with a cipher key, its keys
blinded and sealed), so auditors (and the tests) can check that no key ever had two
holders at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import psycopg
from psycopg import sql

from adapters.store.failover import (
    OnGone,
    ProcessWatch,
    application_name,
    close_grants,
    still_running,
)
from adapters.store.lease_grants import grant_many, unlock_many
from adapters.store.lease_ids import lock_id, rpc_channel
from adapters.store.lease_log import LOG_TABLE, prepare
from adapters.store.lease_rpc import ForwardedCommands
from adapters.store.sealing import Sealer
from domain.model.errors import EngineUnavailableError

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, str]], Awaitable[None]]


class PostgresLeases(ForwardedCommands):
    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        check_interval: float = 5.0,
        forward_timeout: float = 10.0,
        sealer: Sealer | None = None,
    ) -> None:
        """`sealer`: the store's (its cipher key's), for the keys in the lease log."""
        self.holder = uuid.uuid4().hex
        self._conninfo = conninfo
        self._schema = schema
        self._rpc_channel = rpc_channel(schema)
        self._check_interval = check_interval
        self._forward_timeout = forward_timeout
        self._held: set[str] = set()
        self._handlers: dict[str, Handler] = {}
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._locks: psycopg.AsyncConnection[Any] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: set[asyncio.Task[None]] = set()
        self._listening = asyncio.Event()
        self._on_lost: Callable[[Iterable[str]], Awaitable[None]] | None = None
        # One statement or transaction at a time on the lock connection.
        self._guard = asyncio.Lock()
        self._sealer = sealer or Sealer()
        self._processes = ProcessWatch(self._connect, self.holder, schema, sealer=self._sealer)
        self._registered = False  # this process's own lock held (others wait on it)

    # -- lifecycle --------------------------------------------------------------------

    async def open(
        self,
        handlers: dict[str, Handler],
        on_lost: Callable[[Iterable[str]], Awaitable[None]],
        on_gone: OnGone | None = None,
    ) -> None:
        """`on_lost`: this process lost these leases; `on_gone`: another process died
        (or lost its connection and stopped), and these keys were its."""
        self._handlers = dict(handlers)
        self._on_lost = on_lost
        self._processes.on_gone = on_gone
        self._locks = await self._connect()
        await prepare(self._locks, self._sealer)
        self._registered = await self._processes.register(self._locks)
        self._tasks = [
            asyncio.create_task(self._listen(), name="leases:listen"),
            asyncio.create_task(self._watch(), name="leases:watch"),
            asyncio.create_task(self._processes.run(), name="leases:processes"),
        ]
        await asyncio.wait_for(self._listening.wait(), 10)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.release_many(self._held)
        for connection in (self._locks, self._listener):
            if connection is not None:
                with contextlib.suppress(psycopg.Error):
                    await connection.close()

    # -- DeviceLeases -------------------------------------------------------------------

    async def acquire(self, key: str) -> bool:
        if key in self._held:
            return True
        try:
            return await self._acquire(key)
        except psycopg.Error as error:
            raise EngineUnavailableError(
                "the lease database cannot be reached; try again shortly", key=key
            ) from error

    async def acquire_many(self, keys: Collection[str]) -> set[str]:
        """The leases of these keys, in one transaction (a takeover's batch): those taken
        now, by `acquire`'s rules (not those this process held already)."""
        granted: list[str] = []
        try:
            async with self._guard:
                wanted = sorted(set(keys) - self._held)
                try:
                    if wanted:
                        async with self._connection().transaction():
                            locks = self._connection()
                            granted = await grant_many(
                                locks, wanted, self.holder, self._schema, self._sealer
                            )
                except psycopg.Error:
                    # Session locks outlive a rolled-back transaction: none taken may stay.
                    with contextlib.suppress(psycopg.Error, EngineUnavailableError):
                        await unlock_many(self._connection(), wanted, self._schema)
                    raise
                self._held.update(granted)
        except psycopg.Error as error:
            raise EngineUnavailableError(
                "the lease database cannot be reached; try again shortly"
            ) from error
        for key in granted:
            log.info("took the lease of %s", key, extra={"key": key})
        return set(granted)

    async def _acquire(self, key: str) -> bool:
        async with self._guard, self._connection().transaction():
            locks = self._connection()
            row = await (
                await locks.execute(
                    "SELECT pg_try_advisory_lock(%s)", (lock_id(key, self._schema),)
                )
            ).fetchone()
            if not row or not row[0]:
                return False
            blinded = self._sealer.blind(key)
            if await still_running(locks, blinded, self.holder):
                # Its holder lost its connection but lives: it has yet to stop the engine.
                await locks.execute("SELECT pg_advisory_unlock(%s)", (lock_id(key, self._schema),))
                return False
            # A holder that died left its grant open: it ended when its lock was freed.
            await locks.execute(
                sql.SQL(
                    "UPDATE {} SET released_at = now() WHERE key = %s AND released_at IS NULL"
                ).format(sql.Identifier(LOG_TABLE)),
                (blinded,),
            )
            await locks.execute(
                sql.SQL("INSERT INTO {} (key, sealed_key, holder) VALUES (%s, %s, %s)").format(
                    sql.Identifier(LOG_TABLE)
                ),
                (blinded, self._sealer.seal(key), self.holder),
            )
        self._held.add(key)
        log.info("took the lease of %s", key, extra={"key": key})
        return True

    async def release(self, key: str) -> None:
        if key not in self._held:
            return
        self._held.discard(key)
        try:
            await self._release(key)
        except (psycopg.Error, EngineUnavailableError):
            # The lock went with the connection, if it broke; the next holder closes the row.
            log.warning(
                "could not release the lease of %s cleanly", key, exc_info=True, extra={"key": key}
            )

    async def release_many(self, keys: Collection[str]) -> None:
        """Every one of these leases in one transaction (a shutdown's batch)."""
        keys = [key for key in keys if key in self._held]
        if not keys:
            return
        self._held.difference_update(keys)
        ids = [lock_id(key, self._schema) for key in keys]
        try:
            async with self._guard, self._connection().transaction():
                locks = self._connection()
                await locks.execute(
                    sql.SQL(
                        "UPDATE {} SET released_at = now() "
                        "WHERE key = ANY(%s) AND holder = %s AND released_at IS NULL"
                    ).format(sql.Identifier(LOG_TABLE)),
                    ([self._sealer.blind(key) for key in keys], self.holder),
                )
                await locks.execute("SELECT pg_advisory_unlock(id) FROM unnest(%s) id", (ids,))
        except (psycopg.Error, EngineUnavailableError):
            log.warning("could not release %d leases cleanly", len(keys), exc_info=True)

    async def _release(self, key: str) -> None:
        async with self._guard, self._connection().transaction():
            locks = self._connection()
            await locks.execute(
                sql.SQL(
                    "UPDATE {} SET released_at = now() "
                    "WHERE key = %s AND holder = %s AND released_at IS NULL"
                ).format(sql.Identifier(LOG_TABLE)),
                (self._sealer.blind(key), self.holder),
            )
            await locks.execute("SELECT pg_advisory_unlock(%s)", (lock_id(key, self._schema),))

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    # -- internals ----------------------------------------------------------------------

    async def _connect(self, name: str | None = None) -> psycopg.AsyncConnection[Any]:
        """`name`: the connection's application_name (this process's, if None)."""
        connection = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, application_name=name or application_name(self.holder)
        )
        try:
            if self._schema:
                await connection.execute(
                    sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
                )
        except BaseException:  # (cancelled, too: never left open)
            await connection.close()
            raise
        return connection

    def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._locks is None or self._locks.closed:
            raise EngineUnavailableError("the lease database connection is down; try again")
        return self._locks

    async def _watch(self) -> None:
        """Prove the lock connection alive; if it broke, every lease went with it."""
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                async with self._guard:
                    await self._connection().execute("SELECT 1")
                    if not self._registered:
                        self._registered = await self._processes.register(self._connection())
            except (psycopg.Error, EngineUnavailableError):
                lost, self._held, self._registered = set(self._held), set(), False
                log.error("lease connection lost: giving up %d devices", len(lost))
                if self._on_lost is not None and lost:
                    await self._on_lost(lost)  # their engines stop
                with contextlib.suppress(psycopg.Error):
                    if self._locks is not None:
                        await self._locks.close()
                    async with self._guard:
                        self._locks = await self._connect()
                        # Stopped: a survivor waiting on this process may take them over.
                        await close_grants(self._locks, self.holder)
