"""WhatsApp's passkey step, played offline by the simulator's passkey account.

The phone scans; WhatsApp asks for the account's passkey (`session.passkey_required`
with the WebAuthn request options); the client answers (`session.passkey_response`).
Answered: the device links. Unanswered or refused: `session.passkey_failed` says why,
then the seed's `session.disconnected` with `session revoked`, never `qr expired`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.engines.simulated_passkey import client_data
from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, decode_qr, running, unique_key

TOKENS = "alice:token-alice,bob:token-bob"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(
        simulate=True,
        data_dir=tmp_path / "data",
        sim_passkey_timeout=1.0,
        expiry_grace=0.1,
        tokens=TOKENS,
    )
    async with running(settings) as running_server:
        yield running_server


def alice(server: Server) -> Any:
    return clients(server.url, auth={"token": "token-alice"})


async def scan_passkey_account(server: Server, client: Client, key: str) -> dict[str, Any]:
    """Create, scan as an account that has a passkey; the passkey request the room got."""
    ack = await client.call("session.create", {"key": key, "name": "Phone", "engine": "baileys"})
    assert ack["ok"], ack
    code = decode_qr((await client.wait_for("session.qr"))["qr"])
    path = f"/api/simulator/devices/{key}/scan_passkey"
    scanned = await server.post(path, {"code": code}, token="token-alice")
    assert scanned.is_success, scanned.text
    return await client.wait_for("session.passkey_required")


def assertion(challenge: str, kind: str = "webauthn.get") -> dict[str, Any]:
    """What a browser's navigator.credentials.get() gives, as JSON (the parts offline
    WhatsApp can check: the challenge in clientDataJSON)."""
    return {
        "id": "Y3JlZA",
        "rawId": "Y3JlZA",
        "type": "public-key",
        "response": {
            "clientDataJSON": client_data(challenge, kind),
            "authenticatorData": "AAAA",
            "signature": "AAAA",
            "userHandle": None,
        },
    }


def session_events(client: Client) -> list[str]:
    return [name for name in client.names() if name.startswith("session.")]


async def test_an_answered_passkey_links_the_device(server: Server) -> None:
    async with alice(server) as [client]:
        key = unique_key()
        asked = await scan_passkey_account(server, client, key)
        assert asked["key"] == key and 0 < asked["timeout"] <= 1
        options = asked["options"]
        assert options["rpId"] == "whatsapp.com" and len(options["challenge"]) == 43
        answer = {"key": key, "response": assertion(options["challenge"])}
        ack = await client.call("session.passkey_response", answer)
        assert ack["ok"] is True and ack["state"] == "qr", ack
        await client.wait_for("session.ready")
        assert session_events(client) == [
            "session.created",
            "session.qr",
            "session.passkey_required",
            "session.authenticated",
            "session.ready",
        ]
        history = await client.call("session.history", {"key": key})
        records = history["events"]
        assert [r["type"] for r in records][2] == "PasskeyRequested"
        assert records[2]["state"] == "qr" and records[2]["options"] == options


async def test_an_unanswered_passkey_ends_revoked_and_says_why_never_qr_expired(
    server: Server,
) -> None:
    async with alice(server) as [client]:
        key = unique_key()
        await scan_passkey_account(server, client, key)
        failed = await client.wait_for("session.passkey_failed", timeout=5)
        ended = await client.wait_for("session.disconnected")
        assert failed == {"key": key, "cause": "passkey_unanswered"}
        assert ended == {"key": key, "reason": "session revoked"}
        assert session_events(client)[-2:] == ["session.passkey_failed", "session.disconnected"]
        history = await client.call("session.history", {"key": key})
        last = history["events"][-1]
        assert (last["type"], last["reason"], last["cause"]) == (
            "Disconnected",
            "session revoked",
            "passkey_unanswered",
        )
        late = await client.call("session.passkey_response", {"key": key, "response": {}})
        assert late["error"]["code"] == "invalid_transition"


async def test_a_refused_passkey_ends_revoked_with_its_cause(server: Server) -> None:
    async with alice(server) as [client]:
        key = unique_key()
        asked = await scan_passkey_account(server, client, key)
        wrong = assertion(asked["options"]["challenge"], kind="webauthn.create")
        ack = await client.call("session.passkey_response", {"key": key, "response": wrong})
        assert ack["ok"] is True
        assert await client.wait_for("session.passkey_failed") == {
            "key": key,
            "cause": "passkey_rejected",
        }
        assert await client.wait_for("session.disconnected") == {
            "key": key,
            "reason": "session revoked",
        }


async def test_a_rejoining_client_gets_the_passkey_request_with_the_time_left(
    server: Server,
) -> None:
    async with alice(server) as [client], alice(server) as [other_tab]:
        key = unique_key()
        asked = await scan_passkey_account(server, client, key)
        joined = await other_tab.call("session.join", {"key": key})
        assert joined["ok"] and joined["state"] == "qr"
        again = await other_tab.wait_for("session.passkey_required")
        assert again["options"] == asked["options"] and 0 < again["timeout"] <= 1
        assert "session.qr" not in session_events(other_tab)  # the code was scanned


async def test_passkey_responses_that_must_be_refused(server: Server) -> None:
    async with alice(server) as [client], clients(server.url, auth={"token": "token-bob"}) as [bob]:
        key = unique_key()
        asked = await scan_passkey_account(server, client, key)
        good = assertion(asked["options"]["challenge"])
        # Another identity's key reads as a missing one, and its answer changes nothing.
        stolen = await bob.call("session.passkey_response", {"key": key, "response": good})
        assert stolen["error"]["code"] == "not_found"
        missing = await bob.call("session.passkey_response", {"key": "nope", "response": good})
        assert missing["error"] == stolen["error"] | {"message": missing["error"]["message"]}
        for bad in ({"key": key}, {"key": key, "response": "yes"}, {"key": key, "response": []}):
            refused = await client.call("session.passkey_response", bad)
            assert refused["error"]["code"] == "invalid_payload", (bad, refused)
        # Not waiting for a passkey: a session still showing codes.
        other = unique_key()
        await client.call("session.create", {"key": other, "name": "Phone", "engine": "baileys"})
        early = await client.call("session.passkey_response", {"key": other, "response": good})
        assert early["error"]["code"] == "invalid_transition"
        # The owner's answer still works after all that.
        ack = await client.call("session.passkey_response", {"key": key, "response": good})
        assert ack["ok"] is True
        await client.wait_for("session.ready")
        assert "session.passkey_required" not in session_events(bob)


# -- Baileys: detected in the frames WhatsApp sends, reported, not answerable ------------


async def test_baileys_reports_a_passkey_request_it_sees_and_cannot_answer(
    tmp_path: Path,
) -> None:
    from adapters.credentials import CredentialVault
    from tests.integration.test_baileys_engine import QR, Reports, replaying, update

    options = {"challenge": "Y2hhbGxlbmdl", "rpId": "whatsapp.com", "timeout": 90000}
    frame = {
        "tag": "notification",
        "attrs": {"from": "s.whatsapp.net", "type": "passkey"},
        "content": [
            {"tag": "passkey-request", "attrs": {}, "content": [
                {"tag": "passkey_request_options", "attrs": {}, "content": json.dumps(options)}
            ]}
        ],
    }  # fmt: skip
    script = [update(qr=QR), {"after": 0, "frame": frame, "update": {}}]
    vault = CredentialVault(tmp_path / "credentials")
    reports = Reports()
    async with replaying(tmp_path, {"k": [script]}, vault) as engine:
        await engine.start("k", reports)
        seen = await reports.wait_count("k", 2)
        assert seen == [("qr", QR, 60.0), ("passkey_required", options, 90.0)]
        with pytest.raises(NotImplementedError, match="Baileys 7.0.0-rc14 does not implement"):
            await engine.answer_passkey("k", {"response": {}})
