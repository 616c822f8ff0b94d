"""Engine.IO sessions per address, whatever their transport, against a real server.

A websocket session is a connection, and an address holds at most
`PAIRGATE_MAX_CONNECTIONS_PER_ADDRESS` of them; a polling session is a few requests that
come and go, and one address opened as many connected ones as it liked (400 in a few
seconds, each held until its heartbeat gave up, or for good with pongs sent blind).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.helpers import Server, pair, running, unique_key
from tests.integration.test_attack_transport import TEXT, client_from, open_server

CAP = 12


async def handshake(http: httpx.AsyncClient, server: Server) -> str | None:
    """A new polling session's URL; None if the handshake is refused."""
    opened = await http.get(f"{server.url}/socket.io/?EIO=4&transport=polling")
    if opened.status_code == 401:  # Engine.IO's one refusal
        return None
    assert opened.status_code == 200, opened.text
    sid = json.loads(opened.text[opened.text.index("{") :])["sid"]
    return f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"


async def test_an_address_holds_a_bounded_number_of_sessions_whatever_the_transport(
    tmp_path: Path,
) -> None:
    settings = open_server(tmp_path, max_connections_per_address=CAP)
    async with running(settings) as server:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=5) as http:
            sessions = []
            for _ in range(3 * CAP):
                url = await handshake(http, server)
                if url is not None:
                    connected = await http.post(url, content=b"40", headers=TEXT)
                    assert connected.status_code == 200, connected.text
                    sessions.append(url)
            assert len(sessions) == CAP
            # Another address is served as ever.
            async with client_from("127.0.0.3", server.url) as calm:
                await pair(server, calm, unique_key())
            # A session that ends frees its place.
            assert (await http.post(sessions[0], content=b"1", headers=TEXT)).status_code == 200
            assert await handshake(http, server) is not None
            assert await handshake(http, server) is None
