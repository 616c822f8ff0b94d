"""uvicorn, taught to drain pairgate before it closes client connections."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from entrypoints.asgi import pairgate_of

log = logging.getLogger("pairgate")


class PairgateServer(uvicorn.Server):
    """uvicorn's Server whose shutdown first lets pairgate tell clients what happens.

    uvicorn closes connections and waits for them before the ASGI lifespan shutdown runs;
    by then no client could hear that its device went offline.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = self.config.timeout_graceful_shutdown
        try:
            await asyncio.wait_for(pairgate_of(self.config.app).drain(), grace)
        except TimeoutError:
            log.warning("draining took longer than the %s s grace period; stopping anyway", grace)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises caught signals once it has stopped, so the process would die of
        # SIGTERM. A SIGTERM stop that completed in order is a success: exit 0.
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)
