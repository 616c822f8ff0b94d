"""uvicorn, taught to drain pairgate before it closes client connections."""

from __future__ import annotations

import socket

import uvicorn

from entrypoints.asgi import pairgate_of


class PairgateServer(uvicorn.Server):
    """uvicorn's Server whose shutdown first lets pairgate tell clients what happens.

    uvicorn closes connections and waits for them before the ASGI lifespan shutdown runs;
    by then no client could hear that its device went offline.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await pairgate_of(self.config.app).drain()
        await super().shutdown(sockets)
