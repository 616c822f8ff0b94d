"""Browsers on other sites cannot open a Socket.IO connection: same origin by default."""

from __future__ import annotations

import pytest
import socketio

from entrypoints.settings import Settings
from tests.helpers import Client, Server, running


async def test_a_foreign_origin_is_refused(server: Server) -> None:
    client = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, headers={"Origin": "http://evil.example"})
    await client.sio.eio.http.close()  # a refused client leaves its HTTP session open


async def test_the_same_origin_is_accepted(server: Server) -> None:
    client = await Client().connect(server.url, headers={"Origin": server.url})
    try:
        ack = await client.call("session.join", {"key": "nobody-here"})
        assert ack["error"]["code"] == "not_found"
    finally:
        await client.close()


async def test_configured_origins_are_accepted_and_others_refused(settings: Settings) -> None:
    listed = settings.model_copy(update={"allowed_origins": ("http://app.example",)})
    async with running(listed) as server:
        client = await Client().connect(server.url, headers={"Origin": "http://app.example"})
        await client.close()
        stranger = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await stranger.connect(server.url, headers={"Origin": "http://evil.example"})
        await stranger.sio.eio.http.close()
