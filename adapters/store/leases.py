"""PostgresLeases: one owner per device across processes, by PostgreSQL.

A key's lease is its open grant in the lease log (lease_grants.py): a unique index lets
a key have one open grant at a time, and a grant is taken over only from a holder with
no connection left (one that died, even by `kill -9`: the kernel closes its sockets). No
lock is held per key, so a process holds the same few PostgreSQL locks with one device
or 100,000 (its own lock, failover.py, and the ones it waits on): PostgreSQL's lock
table, one for the whole server, does not fill up with devices.

A process that loses its lease connection without dying gives every lease up: the
watchdog here notices within one check interval, makes the service stop those engines,
and only then closes their grants, on a new connection. Until then its other
connections (the listener's, carrying its name) show it alive, so no process takes its
keys (see adapters/store/failover.py for what a survivor waits for).

Commands for a key owned by another process (logout, delete, the simulated phone's
moves) are forwarded with NOTIFY on the same database and answered the same way.

The lease log, `pairgate_lease_log`, keeps every grant (lease_log.py: with a cipher key,
its keys blinded and sealed), so auditors (and the tests) can check that no key ever had
two holders at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from adapters.store.config import StoreConfig, postgres_conninfo
from adapters.store.failover import (
    OnGone,
    ProcessWatch,
    application_name,
    close_grants,
)
from adapters.store.lease_grants import grant_many, release_many
from adapters.store.lease_ids import rpc_channel
from adapters.store.lease_log import LOG_TABLE, prepare
from adapters.store.lease_rpc import ForwardedCommands
from adapters.store.sealing import Sealer
from domain.model.errors import EngineUnavailableError

log = logging.getLogger(__name__)

ANALYZE_FROM = 2_000  # leases held before this process first analyzes the lease log

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
        self._analyzed_at = 0  # leases held when this process last analyzed the lease log

    @classmethod
    def of(cls, store: StoreConfig, check_interval: float) -> PostgresLeases:
        """The leases of a PostgreSQL store, the keys in its lease log sealed with its key."""
        conninfo, schema = postgres_conninfo(store)
        sealer = Sealer(store.cipher_key)
        return cls(conninfo, schema=schema, check_interval=check_interval, sealer=sealer)

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
        await prepare(self._locks, self._sealer, self._schema)
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
            return key in await self._grant([key])
        except psycopg.Error as error:
            raise EngineUnavailableError(
                "the lease database cannot be reached; try again shortly", key=key
            ) from error

    async def acquire_many(self, keys: Collection[str]) -> set[str]:
        """The leases of these keys, in one transaction (a takeover's batch): those taken
        now, by `acquire`'s rules (not those this process held already)."""
        try:
            return await self._grant(keys)
        except psycopg.Error as error:
            raise EngineUnavailableError(
                "the lease database cannot be reached; try again shortly"
            ) from error

    async def _grant(self, keys: Collection[str]) -> set[str]:
        granted: list[str] = []
        async with self._guard:  # (what is held is read and changed under it)
            wanted = sorted(set(keys) - self._held)
            for attempt in range(3):
                try:
                    if wanted:
                        async with self._connection().transaction():
                            locks = self._connection()
                            granted = await grant_many(locks, wanted, self.holder, self._sealer)
                    break
                except psycopg.errors.DeadlockDetected:
                    if attempt == 2:  # (sorted keys: only with grants closed meanwhile)
                        raise
            self._held.update(granted)
            if len(self._held) >= max(ANALYZE_FROM, 2 * self._analyzed_at):
                await self._analyze()
        for key in granted:
            log.info("took the lease of %s", key, extra={"key": key})
        return set(granted)

    async def _analyze(self) -> None:
        """Statistics for the lease log, as this process's grants double: until autovacuum
        catches up with a table filled in minutes, PostgreSQL takes it for a small one
        and reads every open grant for each batch (seconds a batch at 100,000 devices)."""
        self._analyzed_at = len(self._held)
        with contextlib.suppress(psycopg.Error):
            await self._connection().execute(
                sql.SQL("ANALYZE {}").format(sql.Identifier(LOG_TABLE))
            )

    async def release(self, key: str) -> None:
        await self.release_many([key])

    async def release_many(self, keys: Collection[str]) -> None:
        """Every one of these leases in one transaction (a shutdown's batch)."""
        async with self._guard:
            keys = [key for key in keys if key in self._held]
            if not keys:
                return
            self._held.difference_update(keys)
            try:
                await release_many(self._connection(), keys, self.holder, self._sealer)
            except (psycopg.Error, EngineUnavailableError):
                # If the connection broke, the lease check closes them once it is back.
                log.warning("could not release %d leases cleanly", len(keys), exc_info=True)

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
        """Prove the lock connection alive; if it broke, every lease is given up: the
        engines stop, then the grants are closed on a new connection (until then they
        stay open, and no process takes their keys while this one has a connection)."""
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                async with self._guard:
                    await self._connection().execute("SELECT 1")
                    if not self._registered:
                        self._registered = await self._processes.register(self._connection())
            except (psycopg.Error, EngineUnavailableError):
                # Closed first: no grant is taken or closed here until the engines stop.
                with contextlib.suppress(psycopg.Error):
                    if self._locks is not None:
                        await self._locks.close()
                lost, self._held, self._registered = set(self._held), set(), False
                log.error("lease connection lost: giving up %d devices", len(lost))
                if self._on_lost is not None and lost:
                    await self._on_lost(lost)  # their engines stop
                with contextlib.suppress(psycopg.Error):
                    async with self._guard:
                        self._locks = await self._connect()
                        # Stopped: a survivor waiting on this process may take them over.
                        await close_grants(self._locks, self.holder)
