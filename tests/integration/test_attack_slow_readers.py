"""Clients that stop reading what the server sends them, against a real server.

A client may keep a connection open and stop reading: the server's data for it then piles
up in the kernel's buffers, in uvicorn's, and in Engine.IO's queue, for as long as the
client keeps its session alive (a pong sent blind every heartbeat is enough). Each
connection that does so holds memory that grows with what its keys emit.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from entrypoints.settings import Settings
from tests.helpers import Server, running, unique_key
from tests.integration.test_attack_transport import TEXT, client_from, engineio_url, polling_session

# Codes rotating every 5 ms: each of the client's sessions emits ~300 KB a second.
FAST = (0.005,) * 3000
SESSIONS = 8


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "simulate": True,
        "sim_qr_timeouts": FAST,
        "data_dir": tmp_path / "data",
        "rate_limit_connection": "",
        "rate_limit_identity": "",
        "header_timeout": 1.0,
    }
    return Settings(**(options | overrides))


def create(key: str, ack: int) -> str:
    return f"42{ack}" + json.dumps(
        ["session.create", {"key": key, "name": "P", "engine": "simulator"}]
    )


async def serves_on(server: Server) -> None:
    """Another client still gets its code (codes rotate too fast here to scan one)."""
    async with client_from("127.0.0.3", server.url) as calm:
        request = {"key": unique_key("calm"), "name": "P", "engine": "simulator"}
        assert (await calm.call("session.create", request))["ok"]
        await calm.wait_for("session.qr")


def eio_sockets(server: Server) -> int:
    return len(server.pairgate.sio.eio.sockets)


async def test_a_websocket_client_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as server:
        async with connect(engineio_url(server, "websocket"), max_queue=1) as ws:
            # A small receive buffer: the client's window fills at once when it stops.
            ws.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
            )
            await ws.recv()  # Engine.IO's open packet
            await ws.send("40")
            assert (await ws.recv()).startswith("40")
            for n in range(SESSIONS):
                await ws.send(create(unique_key("stall"), n))
            # From here on it reads nothing, and keeps its session alive with blind pongs.
            deadline = time.monotonic() + 6
            cut_off = False
            while time.monotonic() < deadline and not cut_off:
                try:
                    await ws.send("3")
                except Exception:  # noqa: BLE001 - the server hung up: what is asserted
                    cut_off = True
                await asyncio.sleep(0.25)
                cut_off = cut_off or eio_sockets(server) == 0
            queued = [s.queue.qsize() for s in server.pairgate.sio.eio.sockets.values()]
            assert cut_off, f"still connected after 6 s; packets queued: {queued}"
        await serves_on(server)


async def test_a_polling_client_that_stops_polling_is_cut_off(tmp_path: Path) -> None:
    """A polling client that posts (its pongs, say) but never polls: what the server
    has for it waits in Engine.IO's queue, which no poll empties."""
    async with running(settings_for(tmp_path)) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            url = await polling_session(http, server)
            assert (await http.post(url, content=b"40", headers=TEXT)).status_code == 200
            assert (await http.get(url)).text.startswith("40")
            for n in range(SESSIONS):
                posted = await http.post(
                    url, content=create(unique_key("stall"), n).encode(), headers=TEXT
                )
                assert posted.status_code == 200, posted.text
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and eio_sockets(server):
                await http.post(url, content=b"3", headers=TEXT)
                await asyncio.sleep(0.25)
            queued = [s.queue.qsize() for s in server.pairgate.sio.eio.sockets.values()]
            assert eio_sockets(server) == 0, f"still open after 6 s; packets queued: {queued}"
        await serves_on(server)


async def test_an_http_client_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    """Pipelined requests whose answers are never read: the connection stayed open, and
    counted against its address's cap, however long after the request deadline."""
    async with running(settings_for(tmp_path, max_connections_per_address=1)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        request = f"GET /openapi.json HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect((host, int(port)))
            stalled.sendall(request * 200)  # ~12 MB of answers, none of them read
            await asyncio.sleep(4)
            # The address's one connection is free again: another one is served.
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                assert (await http.get("/healthz")).status_code == 200
