"""Commands for a key another process runs (logout, delete, the simulated phone's moves),
forwarded with NOTIFY on the store's database and answered the same way: the part of
PostgresLeases (adapters/store/leases.py) that talks to the other processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import psycopg
from psycopg import sql

from domain.model.errors import DeviceSessionError, EngineUnavailableError

log = logging.getLogger("adapters.store.leases")


class ForwardedCommands:
    """A mixin of PostgresLeases: what it gives, the attributes below."""

    holder: str
    _rpc_channel: str
    _forward_timeout: float
    _check_interval: float
    _held: set[str]
    _handlers: dict[str, Any]
    _replies: dict[str, asyncio.Future[dict[str, Any]]]
    _serving: set[asyncio.Task[None]]
    _listening: asyncio.Event
    _listener: psycopg.AsyncConnection[Any] | None
    _guard: asyncio.Lock

    async def _connect(self, name: str | None = None) -> psycopg.AsyncConnection[Any]:
        raise NotImplementedError

    def _connection(self) -> psycopg.AsyncConnection[Any]:
        raise NotImplementedError

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
