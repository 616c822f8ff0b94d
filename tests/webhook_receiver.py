"""A real HTTP webhook receiver for tests: uvicorn on a free port, recording every request
it is sent; each path may answer late or fail, as real receivers do."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: str

    @property
    def message(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)  # per path; default 204
    delay: dict[str, float] = field(default_factory=dict)  # seconds before answering
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    # Set when its server stops: slow answers still under way end then (a receiver whose
    # requests sleep on would hold its server's shutdown).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if self.delay.get(path):  # a slow receiver, not a test's wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.delay[path])
        status = self.status.get(path, 204)
        if status < 300:
            try:
                body = (await request.body()).decode()
            except ClientDisconnect:  # its sender died mid-request (kill -9)
                return Response(status_code=400)
            async with self._arrived:
                self.received.append(Received(path, dict(request.headers), body))
                self._arrived.notify_all()
        return Response(status_code=status)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 10) -> list[Received]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.at(path)) >= count), timeout
            )
        return self.at(path)


@asynccontextmanager
async def receiver(got: Receiver | None = None, port: int = 0) -> AsyncIterator[Receiver]:
    """Serve `got` (a new Receiver if None) on `port` (a free one if 0) until the block
    ends; serving it again on its port later is a receiver back from an outage."""
    got = got or Receiver()
    got.stopping.clear()
    app = Starlette(routes=[Route("/{path:path}", got.handle, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
        timeout_graceful_shutdown=1,  # a slow answer still under way is cut off then
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    got.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        yield got
    finally:
        got.stopping.set()
        server.should_exit = True
        await asyncio.wait_for(task, 15)
