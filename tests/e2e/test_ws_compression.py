"""WebSocket compression: off unless PAIRGATE_WS_COMPRESSION asks for it (browsers offer it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.service_process import ServiceProcess


async def negotiated_compression(url: str) -> int:
    """Window bits the server agreed to (0: none), for a client offering permessage-deflate."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket", compress=15) as ws,
    ):
        opening = await ws.receive_str(timeout=10)
        assert opening.startswith("0{")  # Engine.IO's open packet: a working connection
        return ws.compress


@pytest.mark.parametrize(("setting", "compressed"), [(None, False), ("true", True)])
async def test_compression_only_when_configured(
    start_service: Callable[..., ServiceProcess],
    tmp_path: Path,
    setting: str | None,
    compressed: bool,
) -> None:
    env = {} if setting is None else {"PAIRGATE_WS_COMPRESSION": setting}
    service = start_service(tmp_path / "data", env)
    assert bool(await negotiated_compression(service.url)) is compressed
