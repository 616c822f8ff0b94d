"""Access tokens and ownership: a key is its creator's, and nobody else's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import socketio

from adapters.socketio.asyncapi import ConnectAuth, ConnectError
from entrypoints.settings import Settings
from tests.helpers import Client, Server, decode_qr, start_server, unique_key

TOKENS = "alice:token-of-alice,bob:token-of-bob"


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(simulate=True, sim_qr_timeouts=(30.0,), data_dir=tmp_path, tokens=TOKENS)
    server = await start_server(settings)
    yield server
    await server.stop()


async def connect(server: Server, token: str) -> Client:
    return await Client().connect(server.url, auth={"token": token})


@pytest.mark.parametrize("auth", [None, {}, {"token": "token-of-eve"}, {"token": 42}])
async def test_a_missing_or_wrong_token_is_refused_at_connect(
    guarded: Server, auth: object
) -> None:
    client = Client()
    refusals: list[object] = []
    client.sio.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(guarded.url, auth=auth)
    assert refusals == [{"message": "unauthorized"}]
    # docs/asyncapi.yaml describes both packets: what was sent, what came back.
    ConnectError.model_validate(refusals[0], strict=True)
    if isinstance(auth, dict) and isinstance(auth.get("token"), str | None):
        ConnectAuth.model_validate(auth, strict=True)


async def test_another_identity_gets_not_found_and_hears_nothing(guarded: Server) -> None:
    key = unique_key()
    alice, bob = await connect(guarded, "token-of-alice"), await connect(guarded, "token-of-bob")
    try:
        await alice.call("session.create", {"key": key, "name": "Alice's", "engine": "baileys"})
        code = decode_qr((await alice.wait_for("session.qr"))["qr"])
        for event, payload in [
            ("session.create", {"key": key, "name": "Mine now", "engine": "baileys"}),
            ("session.join", {"key": key}),
            ("session.logout", {"key": key}),
            ("session.delete", {"key": key}),
            ("session.history", {"key": key}),
        ]:
            ack = await bob.call(event, payload)
            assert ack["ok"] is False and ack["error"]["code"] == "not_found", event
        scan = f"/api/simulator/devices/{key}/scan"
        await guarded.post(scan, {"code": code}, token="token-of-alice")
        await alice.wait_for("session.ready")
        # Bob saw his five refusals and not one event of Alice's session.
        assert bob.names() == ["session.error"] * 5
        assert all(error["code"] == "not_found" for _, error in bob.events)
        assert guarded.pairgate.sessions.get(key).state == "ready"
    finally:
        await alice.close()
        await bob.close()


async def test_the_http_api_needs_the_owners_bearer_token(guarded: Server) -> None:
    key = unique_key()
    alice = await connect(guarded, "token-of-alice")
    try:
        await alice.call("session.create", {"key": key, "name": "Alice's", "engine": "baileys"})
    finally:
        await alice.close()
    async with httpx.AsyncClient(base_url=guarded.url) as http:
        path = f"/api/sessions/{key}/history"
        anonymous = await http.get(path)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        wrong = await http.get(path, headers={"Authorization": "Bearer token-of-eve"})
        assert wrong.status_code == 401
        other = await http.get(path, headers={"Authorization": "Bearer token-of-bob"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        owner = await http.get(path, headers={"Authorization": "Bearer token-of-alice"})
        assert owner.status_code == 200 and owner.json()["events"][0]["owner"] == "alice"


async def test_the_simulated_phone_answers_only_the_owner(guarded: Server) -> None:
    key = unique_key()
    alice = await connect(guarded, "token-of-alice")
    try:
        await alice.call("session.create", {"key": key, "name": "Alice's", "engine": "simulator"})
        await alice.wait_for("session.qr")
        base = f"/api/simulator/devices/{key}"
        async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as http:
            anonymous = await http.get(f"{base}/code")
            assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == (
                "unauthorized"
            )
            bob = {"authorization": "Bearer token-of-bob"}
            assert (await http.get(f"{base}/code", headers=bob)).status_code == 404
            for action in ("scan", "pair", "logout", "drop", "revoke"):
                refused = await http.post(f"{base}/{action}", json={"code": "x"}, headers=bob)
                assert refused.status_code == 404, action
                assert (await http.post(f"{base}/{action}", json={})).status_code == 401
            mine = {"authorization": "Bearer token-of-alice"}
            code = (await http.get(f"{base}/code", headers=mine)).json()["code"]
            scanned = await http.post(f"{base}/scan", json={"code": code}, headers=mine)
            assert scanned.status_code == 200
        await alice.wait_for("session.ready")
    finally:
        await alice.close()
