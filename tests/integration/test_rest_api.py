"""The REST control plane: a backend drives the seed flow over HTTP alone, while a
Socket.IO client in the key's room hears exactly the seed's events."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import zxingcpp
from PIL import Image

from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, decode_qr, start_server, unique_key

SEED = ["session.created", "session.qr", "session.authenticated", "session.ready"]
SEED_FIELDS = {
    "session.created": {"key", "message"},
    "session.qr": {"key", "qr", "timeout"},
    "session.authenticated": {"key"},
    "session.ready": {"key"},
    "session.disconnected": {"key", "reason"},
}


@pytest.fixture
async def server(store_settings: dict[str, object]) -> AsyncIterator[Server]:
    # Codes that live long enough for a backend to fetch one and the phone to scan it.
    settings = Settings(simulate=True, sim_qr_timeouts=(30.0,), **store_settings)
    running = await start_server(settings)
    yield running
    await running.stop()


def read_png(png: bytes) -> str:
    results = zxingcpp.read_barcodes(
        Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode
    )
    assert len(results) == 1
    return results[0].text


async def rest_pairing(
    http: httpx.AsyncClient, server: Server, room: Client, key: str
) -> dict[str, Any]:
    """create → QR image → decode → simulated scan, driven over HTTP alone; the room's
    client only tells when the engine has shown its code. The create's reply."""
    shown = room.names().count("session.qr")
    seed = {"key": key, "name": "My Device", "engine": "baileys"}
    created = await http.post("/api/sessions", json=seed)
    assert created.status_code == 201, created.text
    if shown == 0:
        assert (await room.call("session.join", {"key": key}))["ok"]
    await room.wait_for("session.qr", shown + 1)
    image = await http.get(f"/api/sessions/{key}/qr")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"] == "no-store"
    code = read_png(image.content)
    scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
    assert scanned.is_success, scanned.text
    body: dict[str, Any] = created.json()
    return body


async def test_a_backend_drives_the_seed_flow_over_rest_while_a_room_hears_it(
    server: Server,
) -> None:
    key = unique_key()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        clients(server.url) as [room],
    ):
        first = await rest_pairing(http, server, room, key)
        assert first == {
            "ok": True,
            "key": key,
            "state": "created",
            "name": "My Device",
            "engine": "baileys",
            "version": 1,
            "joined": False,
        }
        await room.wait_for("session.ready")
        out = await http.post(f"/api/sessions/{key}/logout")
        assert out.status_code == 200 and out.json()["state"] == "disconnected"
        assert out.json()["reason"] == "user logged out"
        await room.wait_for("session.disconnected")

        # The same key again, over REST, with the client already in the room: it hears
        # the whole seed flow, as a Socket.IO-created session makes it.
        heard_before = len(room.events)
        await rest_pairing(http, server, room, key)
        await room.wait_for("session.ready", 2)
        gone = await http.delete(f"/api/sessions/{key}")
        assert gone.status_code == 200 and gone.json()["reason"] == "session revoked"
        await room.wait_for("session.disconnected", 2)
        heard = room.events[heard_before:]
        assert [name for name, _ in heard] == [*SEED, "session.disconnected"]
        for name, payload in heard:
            assert set(payload) == SEED_FIELDS[name] and payload["key"] == key
        assert heard[0][1]["message"] == "Session created"
        assert heard[1][1]["timeout"] == 30 and decode_qr(heard[1][1]["qr"])
        assert heard[-1][1]["reason"] == "session revoked"
        state = await http.get(f"/api/sessions/{key}")
        assert state.json()["state"] == "disconnected" and state.json()["version"] == 10


async def test_the_qr_code_as_json_and_the_same_image(server: Server) -> None:
    key = unique_key()
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        clients(server.url) as [client],
    ):
        seed = {"key": key, "name": "Phone", "engine": "simulator"}
        assert (await client.call("session.create", seed))["ok"]
        emitted = await client.wait_for("session.qr")
        as_json = await http.get(f"/api/sessions/{key}/qr", headers={"accept": "application/json"})
        assert as_json.status_code == 200, as_json.text
        body = as_json.json()
        assert set(body) == {"ok", "key", "qr", "timeout", "expires_at"}
        assert body["qr"] == emitted["qr"] and 0 < body["timeout"] <= 30
        assert datetime.fromisoformat(body["expires_at"]).tzinfo is not None
        png = await http.get(f"/api/sessions/{key}/qr", headers={"accept": "image/*"})
        assert base64.b64encode(png.content).decode() == body["qr"].partition(",")[2]
        # Joined over REST: the caller's live session, 200 and joined, no second engine.
        again = await http.post("/api/sessions", json=seed)
        assert again.status_code == 200 and again.json()["joined"] is True
        assert again.json()["state"] == "qr"
        # Once ready, there is no code: a typed 409, in JSON whatever Accept said.
        scanned = await server.post(
            f"/api/simulator/devices/{key}/scan", {"code": decode_qr(emitted["qr"])}
        )
        assert scanned.is_success
        await client.wait_for("session.ready")
        for accept in ("image/png", "application/json"):
            none = await http.get(f"/api/sessions/{key}/qr", headers={"accept": accept})
            assert none.status_code == 409 and none.json()["error"]["code"] == "no_code"
        pair_code = await http.get(f"/api/sessions/{key}/pair-code")
        assert pair_code.status_code == 409 and pair_code.json()["error"]["code"] == "no_code"


async def test_pairing_by_phone_number_over_rest(server: Server) -> None:
    key = unique_key()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        seed = {"key": key, "name": "Phone", "engine": "simulator"}
        assert (await http.post("/api/sessions", json=seed)).status_code == 201
        live = await http.post(f"/api/sessions/{key}/pair-code", json={"phone": "628123456789"})
        assert live.status_code == 409 and live.json()["error"]["code"] == "invalid_transition"
        assert (await http.post(f"/api/sessions/{key}/logout")).status_code == 200
        async with clients(server.url) as [room]:
            await room.call("session.join", {"key": key})
            started = await http.post(
                f"/api/sessions/{key}/pair-code", json={"phone": "628123456789"}
            )
            assert started.status_code == 202, started.text
            assert started.json()["state"] == "created"
            emitted = await room.wait_for("session.pair_code")
        shown = await http.get(f"/api/sessions/{key}/pair-code")
        assert shown.status_code == 200, shown.text
        assert shown.json()["code"] == emitted["code"]
        typed = await server.post(f"/api/simulator/devices/{key}/pair", {"code": emitted["code"]})
        assert typed.is_success, typed.text
        bad = await http.post(f"/api/sessions/{key}/pair-code", json={"phone": "+62 812"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_payload"


async def test_the_list_shows_the_caller_s_session_ready(server: Server) -> None:
    if server.pairgate.session_index is None:
        pytest.skip("GET /api/sessions needs the sessions read model (branch hooks21)")
    key = unique_key()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        async with clients(server.url) as [room]:
            await rest_pairing(http, server, room, key)
            await room.wait_for("session.ready")
        # The read model follows the log: it may trail the room by a moment.
        listed = await http.get("/api/sessions", params={"state": "ready"})
        assert listed.status_code == 200, listed.text
        rows = [row for row in listed.json()["sessions"] if row["key"] == key]
        assert [row["state"] for row in rows] == ["ready"]
