"""Joining, logging out, deleting, and the simulated phone's other actions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, decode_qr, pair, running, unique_key


async def test_join_resends_the_current_qr_with_the_time_left(server: Server) -> None:
    key = unique_key()
    async with clients(server.url, 2) as [first, second]:
        await first.call("session.create", {"key": key, "name": "Phone", "engine": "simulator"})
        shown = await first.wait_for("session.qr")
        ack = await second.call("session.join", {"key": key})
        assert ack["ok"] is True and ack["state"] == "qr"
        again = await second.wait_for("session.qr")
        assert again["key"] == key
        assert decode_qr(again["qr"]) == decode_qr(shown["qr"])
        assert 0 < again["timeout"] <= shown["timeout"]
        # From now on the second connection follows the key like the first.
        await second.wait_for("session.qr", 2)


async def test_create_on_a_live_key_joins_without_a_second_engine(server: Server) -> None:
    key = unique_key()
    request = {"key": key, "name": "Phone", "engine": "simulator"}
    async with clients(server.url, 2) as [first, second]:
        await first.call("session.create", request)
        shown = await first.wait_for("session.qr")
        ack = await second.call("session.create", request)
        assert ack["ok"] is True and ack["joined"] is True and ack["state"] == "qr"
        assert decode_qr((await second.wait_for("session.qr"))["qr"]) == decode_qr(shown["qr"])
        assert "session.created" not in second.names()
    kinds = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
    assert kinds.count("SessionCreated") == 1 and "Restarted" not in kinds


async def test_a_dropped_paired_device_reconnects(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await pair(server, client, key)
        assert (await server.post(f"/api/simulator/devices/{key}/drop")).is_success
        assert await client.wait_for("session.disconnected") == {
            "key": key,
            "reason": "connection lost",
        }
        assert await client.wait_for("session.ready", 2) == {"key": key}
    assert key in server.pairgate.service.running_keys


@pytest.mark.parametrize(
    ("action", "reason"), [("logout", "user logged out"), ("revoke", "session revoked")]
)
async def test_the_phone_ends_a_paired_session(server: Server, action: str, reason: str) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await pair(server, client, key)
        assert (await server.post(f"/api/simulator/devices/{key}/{action}")).is_success
        assert await client.wait_for("session.disconnected") == {"key": key, "reason": reason}
    assert key not in server.pairgate.service.running_keys
    # Credentials are gone: nothing can drop or reconnect any more.
    assert (await server.post(f"/api/simulator/devices/{key}/drop")).status_code == 404


@pytest.mark.parametrize(
    ("event", "reason"),
    [("session.logout", "user logged out"), ("session.delete", "session revoked")],
)
async def test_the_owner_ends_a_paired_session(server: Server, event: str, reason: str) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await pair(server, client, key)
        ack = await client.call(event, {"key": key})
        assert ack["ok"] is True and ack["state"] == "disconnected" and ack["reason"] == reason
        assert await client.wait_for("session.disconnected") == {"key": key, "reason": reason}
    assert key not in server.pairgate.service.running_keys


async def test_a_wrong_or_stale_code_is_refused_and_changes_nothing(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await client.call("session.create", {"key": key, "name": "Phone", "engine": "simulator"})
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        for body in ({"code": code[::-1]}, {"code": ""}):
            wrong = await server.post(f"/api/simulator/devices/{key}/scan", body)
            assert wrong.status_code == 409
            assert wrong.json()["error"]["code"] == "wrong_code"
        malformed = await server.post(f"/api/simulator/devices/{key}/scan", {"qr": code})
        assert malformed.status_code == 400
        assert server.pairgate.sessions.get(key).state == "qr"
        stale = decode_qr((await client.wait_for("session.qr", 2))["qr"])
        assert (
            await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
        ).status_code == 409
        ok = await server.post(f"/api/simulator/devices/{key}/scan", {"code": stale})
        assert ok.json()["state"] == "ready"


async def test_create_after_the_end_starts_a_new_pairing_on_the_same_history(
    server: Server,
) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await pair(server, client, key)
        await client.call("session.logout", {"key": key})
        ack = await client.call("session.create", {"key": key, "name": "New", "engine": "baileys"})
        assert ack["ok"] is True and ack["joined"] is False and ack["engine"] == "baileys"
        assert await client.wait_for("session.created", 2) == {
            "key": key,
            "message": "Session created",
        }
        await client.wait_for("session.qr", 2)
    kinds = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
    assert kinds[-3:] == ["Disconnected", "Restarted", "QrIssued"]


async def test_a_restart_resumes_paired_devices_and_keeps_their_history(
    settings: Settings,
) -> None:
    key = unique_key()
    async with running(settings) as server, clients(server.url) as [client]:
        await pair(server, client, key)
        before = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
    async with running(settings) as server, clients(server.url) as [client]:
        await client.call("session.join", {"key": key})
        if (await server.get(f"/api/sessions/{key}")).json()["state"] != "ready":
            await client.wait_for("session.ready")
        after = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
        # A graceful stop takes devices offline and says so; the next start resumes them
        # from their stored credentials, without a QR code.
        assert after == [*before, "Disconnected", "Ready"]
        assert key in server.pairgate.service.running_keys
        assert "session.qr" not in client.names()


@asynccontextmanager
async def reconnecting(settings: Settings) -> AsyncIterator[tuple[Server, Client, str]]:
    """A paired device whose connection dropped, reconnecting slowly (30 s)."""
    slow_reconnect = settings.model_copy(update={"sim_reconnect_delay": 30.0})
    key = unique_key()
    async with running(slow_reconnect) as server, clients(server.url) as [client]:
        await pair(server, client, key)
        await server.post(f"/api/simulator/devices/{key}/drop")
        await client.wait_for("session.disconnected")
        yield server, client, key


async def test_create_while_a_paired_device_is_reconnecting_needs_relink_to_pair_afresh(
    settings: Settings,
) -> None:
    async with reconnecting(settings) as (server, client, key):
        request = {"key": key, "name": "P", "engine": "simulator"}
        refused = await client.call("session.create", request)
        assert refused["ok"] is False and refused["error"]["code"] == "invalid_transition"
        ack = await client.call("session.create", {**request, "relink": True})
        assert ack["ok"] is True and ack["joined"] is False
        # The old link's credentials are not reused: the device must be scanned again.
        code = decode_qr((await client.wait_for("session.qr", 2))["qr"])
        await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
        await client.wait_for("session.ready", 2)


@pytest.mark.parametrize(
    ("event", "reason"),
    [("session.logout", "user logged out"), ("session.delete", "session revoked")],
)
async def test_the_owner_can_end_a_device_while_it_reconnects(
    settings: Settings, event: str, reason: str
) -> None:
    async with reconnecting(settings) as (server, client, key):
        ack = await client.call(event, {"key": key})
        assert ack["ok"] is True and ack["state"] == "disconnected" and ack["reason"] == reason
        assert await client.wait_for("session.disconnected", 2) == {"key": key, "reason": reason}
        assert key not in server.pairgate.service.running_keys
        # The link is gone: the simulator no longer serves the device at all.
        assert (await server.post(f"/api/simulator/devices/{key}/drop")).status_code == 404
