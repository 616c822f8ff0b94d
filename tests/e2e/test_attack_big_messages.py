"""A WebSocket message over the payload limit, against `pairgate serve` in its own process
(so that its memory is measured apart from the client's)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.service_process import ServiceProcess, pair
from tests.helpers import rss_mb, unique_key


async def test_a_websocket_message_over_the_payload_limit_is_never_read(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    """uvicorn takes WebSocket messages of up to 16 MiB by default, and Engine.IO refuses
    one over PAIRGATE_MAX_PAYLOAD_BYTES only once it has it all: 20 connections sending
    15 MB each grew a server from 101 to 770 MB, which it kept."""
    service = start_service(tmp_path / "data")
    before = rss_mb(service.pid)
    url = service.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    message = "4" + "x" * (10 << 20)

    async def big() -> int | None:
        async with connect(url, max_size=None) as ws:
            await ws.recv()  # the open packet
            with contextlib.suppress(ConnectionClosed):
                await ws.send(message)
                await asyncio.wait_for(ws.recv(), 5)
            await ws.wait_closed()
            return ws.close_code

    codes = await asyncio.gather(*(big() for _ in range(10)))
    assert set(codes) == {1009}, codes  # "message too big", said at its first bytes
    assert rss_mb(service.pid) - before < 40
    await pair(service.url, unique_key())  # the server serves on
