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

Every grant is written to `pairgate_lease_log`, so auditors (and the tests) can check
that no key ever had two holders at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

import psycopg
from psycopg import sql

from adapters.store.lease_ids import lock_id, rpc_channel
from domain.model.errors import DeviceSessionError, EngineUnavailableError

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, str]], Awaitable[None]]
LOG_TABLE = "pairgate_lease_log"


class PostgresLeases:
    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        check_interval: float = 5.0,
        forward_timeout: float = 10.0,
    ) -> None:
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

    # -- lifecycle --------------------------------------------------------------------

    async def open(
        self,
        handlers: dict[str, Handler],
        on_lost: Callable[[Iterable[str]], Awaitable[None]],
    ) -> None:
        self._handlers = dict(handlers)
        self._on_lost = on_lost
        self._locks = await self._connect()
        await self._locks.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, key text NOT NULL, "
                "holder text NOT NULL, acquired_at timestamptz NOT NULL DEFAULT now(), "
                "released_at timestamptz)"
            ).format(sql.Identifier(LOG_TABLE))
        )
        self._tasks = [
            asyncio.create_task(self._listen(), name="leases:listen"),
            asyncio.create_task(self._watch(), name="leases:watch"),
        ]
        await asyncio.wait_for(self._listening.wait(), 10)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for key in list(self._held):
            await self.release(key)
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
            # A holder that died left its grant open: it ended when its lock was freed.
            await locks.execute(
                sql.SQL(
                    "UPDATE {} SET released_at = now() WHERE key = %s AND released_at IS NULL"
                ).format(sql.Identifier(LOG_TABLE)),
                (key,),
            )
            await locks.execute(
                sql.SQL("INSERT INTO {} (key, holder) VALUES (%s, %s)").format(
                    sql.Identifier(LOG_TABLE)
                ),
                (key, self.holder),
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
                    (keys, self.holder),
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
                (key, self.holder),
            )
            await locks.execute("SELECT pg_advisory_unlock(%s)", (lock_id(key, self._schema),))

    async def forward(self, key: str, command: str, args: dict[str, str]) -> None:
        request_id = uuid.uuid4().hex
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        message = {"id": request_id, "key": key, "command": command, "args": args}
        try:
            await self._notify(self._rpc_channel, {**message, "reply_to": self.holder})
            answer = await asyncio.wait_for(reply, self._forward_timeout)
        except (TimeoutError, psycopg.Error):
            raise EngineUnavailableError(
                f"the pairgate process running {key!r} did not answer; try again shortly",
                key=key,
            ) from None
        finally:
            self._replies.pop(request_id, None)
        if not answer.get("ok"):
            error = EngineUnavailableError(answer.get("message", "refused"), key=key)
            error.code = answer.get("code", error.code)
            raise error

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    # -- internals ----------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        if self._schema:
            await connection.execute(
                sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
            )
        return connection

    def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._locks is None or self._locks.closed:
            raise EngineUnavailableError("the lease database connection is down; try again")
        return self._locks

    @staticmethod
    def _reply_channel(holder: str) -> str:
        return f"pairgate_reply_{holder}"

    async def _notify(self, channel: str, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        async with self._guard:
            await self._connection().execute("SELECT pg_notify(%s, %s)", (channel, text))

    async def _listen(self) -> None:
        """Serve forwarded commands and collect replies; reconnect if the connection drops."""
        while True:
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = await self._connect()
                    for channel in (self._rpc_channel, self._reply_channel(self.holder)):
                        await self._listener.execute(
                            sql.SQL("LISTEN {}").format(sql.Identifier(channel))
                        )
                    self._listening.set()
                async for notice in self._listener.notifies():
                    self._dispatch(notice.channel, notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("lease listener connection lost; reconnecting", exc_info=True)
                with contextlib.suppress(Exception):
                    if self._listener is not None:
                        await self._listener.close()
                self._listener = None
                await asyncio.sleep(self._check_interval)

    def _dispatch(self, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            if channel == self._rpc_channel:
                if message["key"] in self._held:
                    # Held: the event loop keeps only weak references to tasks.
                    serving = asyncio.create_task(self._serve(message))
                    self._serving.add(serving)
                    serving.add_done_callback(self._serving.discard)
            elif (reply := self._replies.get(message.get("id", ""))) and not reply.done():
                reply.set_result(message)
        except Exception:
            log.exception("bad lease message on %s", channel)

    async def _serve(self, message: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"id": message["id"], "ok": True}
        key, command = message["key"], message["command"]
        handler = self._handlers.get(command)
        try:
            if handler is None:
                raise EngineUnavailableError(f"unknown command {command!r}")
            await handler(key, message["args"])
        except DeviceSessionError as refused:
            answer |= {"ok": False, "code": refused.code, "message": refused.message}
        except Exception as error:
            log.exception("forwarded %s for %s failed", command, key, extra={"key": key})
            answer |= {"ok": False, "message": str(error)}
        await self._notify(self._reply_channel(message["reply_to"]), answer)

    async def _watch(self) -> None:
        """Prove the lock connection alive; if it broke, every lease went with it."""
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                async with self._guard:
                    await self._connection().execute("SELECT 1")
            except (psycopg.Error, EngineUnavailableError):
                lost, self._held = set(self._held), set()
                log.error("lease connection lost: giving up %d devices", len(lost))
                if self._on_lost is not None and lost:
                    await self._on_lost(lost)
                with contextlib.suppress(psycopg.Error):
                    if self._locks is not None:
                        await self._locks.close()
                    self._locks = await self._connect()
