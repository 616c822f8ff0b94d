"""Pairing by phone number: `session.pair_code`, typed on the (simulated) phone."""

from __future__ import annotations

import re

import pytest

from tests.helpers import Server, clients, unique_key

PHONE = "628123456789"


async def test_a_phone_number_brings_a_pairing_code_that_links_the_device(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        request = {"key": key, "name": "Phone", "engine": "baileys", "phone": PHONE}
        assert (await client.call("session.create", request))["ok"] is True
        shown = await client.wait_for("session.pair_code")
        assert set(shown) == {"key", "code", "timeout"} and shown["key"] == key
        assert re.fullmatch(r"[1-9A-HJ-NP-TV-Z]{4}-[1-9A-HJ-NP-TV-Z]{4}", shown["code"])
        assert shown["timeout"] == 4  # the whole pairing window (FAST_QR: 2 + 2 s)

        wrong = await server.post(f"/api/simulator/devices/{key}/pair", {"code": "AAAA-AAAA"})
        assert wrong.status_code == 409
        typed = await server.post(f"/api/simulator/devices/{key}/pair", {"code": shown["code"]})
        assert typed.is_success
        assert await client.wait_for("session.ready") == {"key": key}
        names = client.names()
        assert names.index("session.qr") < names.index("session.pair_code")
        assert names.index("session.pair_code") < names.index("session.authenticated")

        history = await client.call("session.history", {"key": key})
    assert shown["code"] not in str(history)  # a pairing secret: fingerprint only
    issued = [e for e in history["events"] if e["type"] == "PairCodeIssued"]
    assert len(issued) == 1 and issued[0]["state"] == "qr" and "fingerprint" in issued[0]


async def test_rejoining_resends_the_pairing_code_with_its_time_left(server: Server) -> None:
    key = unique_key()
    async with clients(server.url, 2) as [first, second]:
        request = {"key": key, "name": "Phone", "engine": "simulator", "phone": PHONE}
        await first.call("session.create", request)
        shown = await first.wait_for("session.pair_code")
        await second.call("session.join", {"key": key})
        again = await second.wait_for("session.pair_code")
        assert again["code"] == shown["code"] and 0 < again["timeout"] <= shown["timeout"]


async def test_without_a_phone_there_is_no_pairing_code(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
        await client.wait_for("session.qr")
        assert "session.pair_code" not in client.names()
        refused = await server.post(f"/api/simulator/devices/{key}/pair", {"code": "AAAA-AAAA"})
        assert refused.status_code == 409


@pytest.mark.parametrize(
    "phone", ["+628123456789", "0812345678", "62 812 3456", "1234567", "6" * 16, 628123456789, ""]
)
async def test_an_invalid_phone_is_an_invalid_payload(server: Server, phone: object) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        request = {"key": key, "name": "Phone", "engine": "simulator", "phone": phone}
        ack = await client.call("session.create", request)
        error = await client.wait_for("session.error")
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    assert error["code"] == "invalid_payload" and error["key"] == key
    assert "phone" in error["message"]
    assert await server.pairgate.service.find(key) is None
