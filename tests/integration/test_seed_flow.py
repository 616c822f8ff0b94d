"""The seed's flow over a real server, real clients and the real event store."""

from __future__ import annotations

from domain.model.session import session_id
from tests.helpers import Server, clients, decode_qr, unique_key

SEED_REQUEST = {"key": "device123", "name": "My Device", "engine": "baileys"}


async def test_seed_example_pairs_end_to_end(server: Server) -> None:
    async with clients(server.url) as [client]:
        ack = await client.call("session.create", SEED_REQUEST)
        assert ack == {
            "ok": True,
            "key": "device123",
            "state": "created",
            "name": "My Device",
            "engine": "baileys",
            "joined": False,
        }
        created = await client.wait_for("session.created")
        assert created == {"key": "device123", "message": "Session created"}

        qr = await client.wait_for("session.qr")
        assert set(qr) == {"key", "qr", "timeout"}
        assert qr["key"] == "device123"
        assert qr["qr"].startswith("data:image/png;base64,")
        assert qr["timeout"] == 2
        code = decode_qr(qr["qr"])
        assert len(code.split(",")) == 4 and code.startswith("2@")

        scanned = await server.post("/api/simulator/devices/device123/scan", {"code": code})
        assert scanned.status_code == 200
        assert scanned.json() == {"ok": True, "key": "device123", "state": "ready"}

        assert await client.wait_for("session.authenticated") == {"key": "device123"}
        assert await client.wait_for("session.ready") == {"key": "device123"}
        assert client.names() == [
            "session.created",
            "session.qr",
            "session.authenticated",
            "session.ready",
        ]

        audit = await client.call("session.history", {"key": "device123"})
        assert audit["ok"] is True and audit["key"] == "device123"
        assert [(e["version"], e["type"], e["state"]) for e in audit["events"]] == [
            (1, "SessionCreated", "created"),
            (2, "QrIssued", "qr"),
            (3, "Authenticated", "authenticated"),
            (4, "Ready", "ready"),
        ]
        assert audit["events"][1]["timeout"] == 2
        assert code not in str(audit)  # the QR text is a pairing secret

    history = server.pairgate.sessions.history("device123")
    assert [type(event).__name__ for event in history] == [
        "SessionCreated",
        "QrIssued",
        "Authenticated",
        "Ready",
    ]
    assert history[0].originator_id == session_id("device123")
    assert history[1].code == code


async def test_a_client_that_did_not_create_the_key_receives_nothing(server: Server) -> None:
    key = unique_key()
    async with clients(server.url, 2) as [owner, bystander]:
        await owner.call("session.create", {"key": key, "name": "Phone", "engine": "simulator"})
        code = decode_qr((await owner.wait_for("session.qr"))["qr"])
        await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
        await owner.wait_for("session.ready")
        # The bystander's own request is answered, proving its connection is live...
        assert (await bystander.call("session.create", {"key": 1}))["ok"] is False
        # ...and of the owner's session it has seen nothing at all.
        assert bystander.names() == ["session.error"]


async def test_qr_codes_rotate_then_expire_and_the_engine_stops(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await client.call("session.create", {"key": key, "name": "Phone", "engine": "neonize"})
        first = decode_qr((await client.wait_for("session.qr", 1))["qr"])
        second = decode_qr((await client.wait_for("session.qr", 2))["qr"])
        assert first != second
        gone = await client.wait_for("session.disconnected", timeout=15)
        assert gone == {"key": key, "reason": "qr expired"}
        assert client.names() == [
            "session.created",
            "session.qr",
            "session.qr",
            "session.disconnected",
        ]

    # Nothing keeps running for the dead session: no engine, no device, no timer.
    assert key not in server.pairgate.service.running_keys
    assert key not in server.pairgate.service.watched_keys
    assert not server.pairgate.simulator.serves(key)
    late = await server.post(f"/api/simulator/devices/{key}/scan", {"code": second})
    assert late.status_code == 404
    health = await server.get("/healthz")
    assert health.json()["sessions_running"] == 0
    kinds = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
    assert kinds == ["SessionCreated", "QrIssued", "QrIssued", "Disconnected"]
