"""uvicorn, taught to drain pairgate before it closes client connections."""

from __future__ import annotations

import logging
import signal
import socket
from types import FrameType
from typing import Any

import socketio
import uvicorn

from entrypoints.asgi import pairgate_of
from entrypoints.connections import bounded_protocols
from entrypoints.settings import Settings

log = logging.getLogger("pairgate")
# Seconds of a stop's grace kept for what follows the recording (the app's close: engines,
# followers, the store's last checkpoint), or half of the grace if that is less.
CLOSING_TIME = 2.0


# Bytes a WebSocket message may have beyond the Engine.IO packet limit (its type prefix).
WS_FRAMING = 16


def uvicorn_config(app: socketio.ASGIApp, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How `pairgate serve` runs uvicorn (tests run it the same way, on a free port)."""
    http, ws = bounded_protocols(
        settings.header_timeout,
        settings.max_connections_per_address,
        settings.trusted_proxies,
        settings.max_connections,
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "ws_per_message_deflate": settings.ws_compression,
        # Engine.IO's own heartbeat (a ping every 25 s, a dead peer dropped after 20 s
        # more) already watches every connection; uvicorn's WebSocket pings on top would
        # double the idle wake-ups of thousands of connections and detect nothing more.
        "ws_ping_interval": None,
        # A WebSocket message is one Engine.IO packet: refused at its first bytes when it
        # announces more than Engine.IO would take (uvicorn's default reads up to 16 MiB).
        "ws_max_size": settings.max_payload_bytes + WS_FRAMING,
        "http": http,
        "ws": ws,
        # X-Forwarded-For is believed from PAIRGATE_TRUSTED_PROXIES only: not from
        # uvicorn's default (loopback) nor from its FORWARDED_ALLOW_IPS variable.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
    }
    return uvicorn.Config(app, **(options | overrides))


class PairgateServer(uvicorn.Server):
    """uvicorn's Server whose shutdown first lets pairgate tell clients what happens.

    uvicorn closes connections and waits for them before the ASGI lifespan shutdown runs;
    by then no client could hear that its device went offline.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = self.config.timeout_graceful_shutdown
        if not await pairgate_of(self.config.app).drain(recording_time(grace)):
            log.warning(
                "the %s s grace period ran out before every device was recorded offline; "
                "stopping anyway (the next start records the rest)",
                grace,
            )
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises caught signals once it has stopped, so the process would die of
        # SIGTERM. A SIGTERM stop that completed in order is a success: exit 0.
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)


def recording_time(grace: float | None) -> float | None:
    """How long a stop may record its devices offline, of its `grace` (None: no bound)."""
    return None if grace is None else grace - min(CLOSING_TIME, grace / 2)
