"""Attacks on the caps and request limits (issue 19, items 8, 13, 14 and 15), each from
real clients on their own loopback addresses against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from pydantic import SecretStr

from adapters.socketio.asyncapi import ConnectError
from entrypoints.settings import Settings
from tests.conftest import FAST_QR
from tests.helpers import (
    REDIS_URL,
    Client,
    Server,
    decode_qr,
    pair,
    redis_available,
    running,
    unique_key,
)


def limited(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(simulate=True, sim_qr_timeouts=FAST_QR, data_dir=tmp_path / "data", **overrides)


@asynccontextmanager
async def client_from(
    server: Server, address: str, token: str | None = None
) -> AsyncIterator[Client]:
    """A Socket.IO client whose connections leave from `address` (127.0.0.2, ...)."""
    async with from_address(address) as http:
        client = Client(socketio.AsyncClient(http_session=http))
        auth = {"token": token} if token else None
        await client.connect(server.url, auth=auth)
        try:
            yield client
        finally:
            await client.close()


@asynccontextmanager
async def from_address(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


def create(key: str) -> dict[str, str]:
    return {"key": key, "name": "Phone", "engine": "simulator"}


async def refused_at_connect(server: Server, address: str) -> list[Any]:
    """The connect_error payloads a new connection from `address` gets (raises if none)."""
    async with from_address(address) as http:
        client = Client(socketio.AsyncClient(http_session=http))
        refusals: list[Any] = []
        client.sio.on("connect_error", refusals.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(server.url)
        for refusal in refusals:  # as docs/asyncapi.yaml describes it
            ConnectError.model_validate(refusal, strict=True)
        return refusals


# -- 8: without tokens, one client must not exhaust everyone's session cap ------------


async def test_without_tokens_the_session_cap_holds_per_client_address(tmp_path: Path) -> None:
    async with running(limited(tmp_path, max_sessions=5)) as server:
        mine = [unique_key("hog") for _ in range(5)]
        async with client_from(server, "127.0.0.2") as hog:
            for key in mine:
                assert (await hog.call("session.create", create(key)))["ok"] is True
            refused = await hog.call("session.create", create(unique_key("hog")))
            assert refused["error"]["code"] == "rate_limited"
            assert "PAIRGATE_MAX_SESSIONS" in refused["error"]["message"]
        # Its sessions outlive its connection, and still count against its address.
        for key in mine:
            session = await server.pairgate.service.find(key)
            assert session is not None and session.is_live, key
        async with client_from(server, "127.0.0.2") as again:
            refused = await again.call("session.create", create(unique_key("hog")))
            assert refused["error"]["code"] == "rate_limited"
        # Another client, on another address, is not held to the first one's cap.
        async with client_from(server, "127.0.0.3") as other:
            await pair(server, other, unique_key("other"))
            # Ownership is unchanged without tokens: everyone is the one identity.
            assert (await other.call("session.delete", {"key": mine[0]}))["ok"] is True
        # Deleting one of the first client's sessions gave the room back to that client.
        async with client_from(server, "127.0.0.2") as hog:
            assert (await hog.call("session.create", create(unique_key("hog"))))["ok"] is True


async def test_with_tokens_the_session_cap_holds_per_identity_across_addresses(
    tmp_path: Path,
) -> None:
    settings = limited(tmp_path, max_sessions=3, tokens="alice:alice-token,bob:bob-token")
    async with running(settings) as server:
        async with (
            client_from(server, "127.0.0.2", "alice-token") as alice_here,
            client_from(server, "127.0.0.3", "alice-token") as alice_there,
        ):
            for client in (alice_here, alice_here, alice_there):
                assert (await client.call("session.create", create(unique_key())))["ok"] is True
            refused = await alice_there.call("session.create", create(unique_key()))
            assert refused["error"]["code"] == "rate_limited"
        async with client_from(server, "127.0.0.2", "bob-token") as bob:
            key = unique_key("bob")
            assert (await bob.call("session.create", create(key)))["ok"] is True
            code = decode_qr((await bob.wait_for("session.qr"))["qr"])
            scan = f"/api/simulator/devices/{key}/scan"
            assert (await server.post(scan, {"code": code}, token="bob-token")).is_success
            await bob.wait_for("session.ready")


async def test_recovered_sessions_count_against_their_owner(tmp_path: Path) -> None:
    """A session's quota holder (the address without tokens) is not recorded: after a
    restart, a resumed device counts against its owner, not against any address."""
    settings = limited(tmp_path, max_sessions=1)
    key = unique_key("paired")
    async with running(settings) as server, client_from(server, "127.0.0.2") as first:
        await pair(server, first, key)
    async with running(settings) as server:
        assert key in server.pairgate.service.running_keys  # resumed from its credentials
        async with client_from(server, "127.0.0.2") as again:
            await pair(server, again, unique_key("next"))


# -- 13: events that are not pairgate's requests are counted too ----------------------


async def test_a_flood_of_foreign_events_is_cut_off_and_banned(tmp_path: Path) -> None:
    async with running(limited(tmp_path)) as server:
        async with client_from(server, "127.0.0.3") as calm:
            async with client_from(server, "127.0.0.2") as flooder:
                cut = asyncio.Event()
                flooder.sio.on("disconnect", lambda *_: cut.set())
                sent = 0
                while not cut.is_set() and flooder.sio.connected and sent < 20_000:
                    await flooder.sio.emit("chat.message", {"text": "spam"})
                    sent += 1
                    if sent % 20 == 0:
                        await asyncio.sleep(0)  # let the disconnect arrive
                await asyncio.wait_for(cut.wait(), 10)
            assert sent < 20_000
            refusals = await refused_at_connect(server, "127.0.0.2")
            assert refusals and refusals[0]["message"] == "rate_limited"
            # The calm client on another address goes on as before.
            ack = await calm.call("session.join", {"key": "nobody"})
            assert ack["error"]["code"] == "not_found"
            await pair(server, calm, unique_key("calm"))


# -- 14: a key that is another connection's sid ----------------------------------------


@pytest.mark.parametrize("fanout", ["memory", "redis"])
async def test_a_key_equal_to_another_connections_sid_is_just_a_key(
    tmp_path: Path, fanout: str
) -> None:
    redis = {}
    if fanout == "redis":
        if not redis_available():
            pytest.skip("Redis is not reachable on 127.0.0.1:6379")
        redis = {"redis_url": SecretStr(REDIS_URL)}
    async with running(limited(tmp_path, **redis)) as server:
        async with (
            client_from(server, "127.0.0.2") as owner,
            client_from(server, "127.0.0.3") as bystander,
        ):
            key = bystander.sio.get_sid()
            assert key
            await pair(server, owner, key)
            assert [name for name in owner.names() if name != "session.qr"] == [
                "session.created",
                "session.authenticated",
                "session.ready",
            ]
            # Something sent to the bystander's sid still reaches it (and only it).
            await bystander.call("session.join", {"key": "nobody"})
            assert bystander.names() == ["session.error"]
            assert owner.names().count("session.error") == 0


# -- 15: reconnecting must not buy a fresh allowance -----------------------------------


async def test_reconnecting_does_not_reset_the_allowance_or_the_strikes(tmp_path: Path) -> None:
    settings = limited(tmp_path, rate_limit_connection="10/hour", rate_limit_identity="")
    async with running(settings) as server:
        outcomes: list[str] = []
        for _ in range(10):
            try:
                async with client_from(server, "127.0.0.2") as client:
                    for _ in range(5):
                        outcome = await answer(client, {"key": "nobody"})
                        outcomes.append(outcome)
                        if outcome == "cut":
                            break
            except socketio.exceptions.ConnectionError:
                outcomes.append("refused")
        # As if it had stayed connected: ten served, refusals, then cut off and banned.
        assert outcomes.count("not_found") == 10, outcomes
        assert outcomes[:10] == ["not_found"] * 10, outcomes
        assert "cut" in outcomes and outcomes[-1] == "refused", outcomes
        # Another address has an allowance of its own.
        async with client_from(server, "127.0.0.3") as calm:
            assert await answer(calm, {"key": "nobody"}) == "not_found"


async def answer(client: Client, request: dict[str, str]) -> str:
    """The error code a session.join gets, or "cut" if the server hangs up instead."""
    cut = asyncio.Event()
    client.sio.on("disconnect", lambda *_: cut.set())
    call = asyncio.ensure_future(client.call("session.join", request))
    hung_up = asyncio.ensure_future(cut.wait())
    done, _ = await asyncio.wait({call, hung_up}, timeout=10, return_when="FIRST_COMPLETED")
    for pending in (call, hung_up):
        pending.cancel()
    await asyncio.gather(call, hung_up, return_exceptions=True)
    if call in done and not call.cancelled() and call.exception() is None:
        return str(call.result()["error"]["code"])
    assert hung_up in done, "neither an answer nor a hang-up"
    return "cut"
