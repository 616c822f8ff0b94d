"""Limits: request rates per connection and per identity, session caps, payload size."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from entrypoints.settings import Settings
from tests.conftest import FAST_QR
from tests.helpers import Client, clients, decode_qr, running, unique_key


def limited(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(simulate=True, sim_qr_timeouts=FAST_QR, data_dir=tmp_path / "data", **overrides)


async def burst(client: Client, count: int) -> list[Any]:
    """`count` requests at once from one connection; their acknowledgements."""
    joins = [client.call("session.join", {"key": "nobody"}) for _ in range(count)]
    return await asyncio.gather(*joins)


def codes(acks: list[Any]) -> list[str]:
    return [ack["error"]["code"] for ack in acks if not ack["ok"]]


async def test_a_flooding_connection_is_told_when_to_retry(tmp_path: Path) -> None:
    settings = limited(tmp_path, rate_limit_connection="10/second", rate_limit_identity="")
    async with running(settings) as server, clients(server.url) as [client]:
        acks = await burst(client, 30)
        assert codes(acks).count("not_found") == 10
        assert codes(acks).count("rate_limited") == 20
        refusal = next(a["error"] for a in acks if a["error"]["code"] == "rate_limited")
        assert 0 < refusal["retry_after"] <= 1.0
        assert "connection" in refusal["message"] and "retry in" in refusal["message"]
        errors = [e for name, e in client.events if name == "session.error"]
        assert [e["code"] for e in errors].count("rate_limited") == 20
        assert {e["key"] for e in errors} == {"nobody"}
        # The hint is honest: after waiting that long, requests are served again.
        await asyncio.sleep(refusal["retry_after"] + 0.05)
        again = await client.call("session.join", {"key": "nobody"})
        assert again["error"]["code"] == "not_found"


async def test_a_connection_that_ignores_the_hints_is_cut_off(tmp_path: Path) -> None:
    settings = limited(tmp_path, rate_limit_connection="10/second", rate_limit_identity="")
    # Without tokens, a client is told apart by its address: the bystander has its own.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        running(settings) as server,
        aiohttp.ClientSession(connector=connector) as elsewhere,
        clients(server.url) as [flooder],
    ):
        bystander = await Client(socketio.AsyncClient(http_session=elsewhere)).connect(server.url)
        await burst(flooder, 30)  # 10 served, 20 refused: the last allowed refusals
        cut = asyncio.Event()
        flooder.sio.on("disconnect", lambda *_: cut.set())
        await flooder.sio.emit("session.join", {"key": "nobody"})
        await asyncio.wait_for(cut.wait(), 5)
        assert (await bystander.call("session.join", {"key": "nobody"}))["error"]["code"] == (
            "not_found"
        )
        await bystander.close()


async def test_an_identity_shares_one_allowance_across_its_connections(tmp_path: Path) -> None:
    settings = limited(
        tmp_path, rate_limit_connection="100/second", rate_limit_identity="15/second"
    )
    async with running(settings) as server, clients(server.url, 2) as [first, second]:
        acks = await burst(first, 10) + await burst(second, 10)
        assert codes(acks).count("rate_limited") == 5
        assert any("identity" in a["error"]["message"] for a in acks if not a["ok"])


async def test_one_identity_flooding_leaves_another_untouched(tmp_path: Path) -> None:
    settings = limited(
        tmp_path,
        tokens="alice:alice-token,bob:bob-token",
        rate_limit_connection="",
        rate_limit_identity="10/second",
    )
    async with running(settings) as server:
        alice = await Client().connect(server.url, auth={"token": "alice-token"})
        bob = await Client().connect(server.url, auth={"token": "bob-token"})
        try:
            assert "rate_limited" in codes(await burst(alice, 25))
            assert codes(await burst(bob, 10)) == ["not_found"] * 10
        finally:
            await alice.close()
            await bob.close()


async def test_max_sessions_caps_live_sessions_per_identity(tmp_path: Path) -> None:
    async with running(limited(tmp_path, max_sessions=2)) as server:
        async with clients(server.url) as [client]:
            keys = [unique_key() for _ in range(3)]
            for key in keys[:2]:
                request = {"key": key, "name": "P", "engine": "simulator"}
                assert (await client.call("session.create", request))["ok"] is True
            third = {"key": keys[2], "name": "P", "engine": "simulator"}
            refused = await client.call("session.create", third)
            assert refused["error"]["code"] == "rate_limited"
            assert "PAIRGATE_MAX_SESSIONS" in refused["error"]["message"]
            assert await server.pairgate.service.find(keys[2]) is None
            # Ending one makes room.
            await client.call("session.delete", {"key": keys[0]})
            assert (await client.call("session.create", third))["ok"] is True


async def test_max_unpaired_caps_pairings_under_way_not_paired_devices(tmp_path: Path) -> None:
    async with running(limited(tmp_path, max_unpaired=1)) as server:
        async with clients(server.url) as [client]:
            first, second = unique_key(), unique_key()
            await client.call("session.create", {"key": first, "name": "P", "engine": "simulator"})
            request = {"key": second, "name": "P", "engine": "simulator"}
            refused = await client.call("session.create", request)
            assert refused["error"]["code"] == "rate_limited"
            assert refused["error"]["retry_after"] > 0
            code = decode_qr((await client.wait_for("session.qr"))["qr"])
            await server.post(f"/api/simulator/devices/{first}/scan", {"code": code})
            await client.wait_for("session.ready")
            # A paired device no longer counts: the next pairing may start.
            assert (await client.call("session.create", request))["ok"] is True


async def test_an_oversized_payload_costs_its_sender_the_connection_only(tmp_path: Path) -> None:
    async with running(limited(tmp_path, max_payload_bytes=4096)) as server:
        async with clients(server.url) as [bystander]:
            big = Client()
            await big.connect(server.url)
            disconnected = asyncio.Event()
            big.sio.on("disconnect", lambda *_: disconnected.set())
            await big.sio.emit("session.create", {"key": "big", "name": "x" * 100_000})
            await asyncio.wait_for(disconnected.wait(), 10)
            assert await server.pairgate.service.find("big") is None
            key = unique_key()
            request = {"key": key, "name": "P", "engine": "simulator"}
            assert (await bystander.call("session.create", request))["ok"] is True
            await bystander.wait_for("session.qr")
            assert (await server.get("/healthz")).status_code == 200


# Sends as fast as it can and, when cut off, connects again: a determined flooder.
FLOODER = """
import asyncio, socketio, sys, time

async def main():
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sent = connections = refused = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sio = socketio.AsyncClient()
        try:
            await sio.connect(url, transports=["websocket"], auth={"token": token})
        except socketio.exceptions.ConnectionError:
            refused += 1
            await asyncio.sleep(0.01)
            continue
        connections += 1
        try:
            while time.monotonic() < until:
                await sio.emit("session.join", {"key": "nobody"})
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)
        except socketio.exceptions.SocketIOError:
            pass
        await sio.disconnect()
    print(sent, connections, refused)

asyncio.run(main())
"""


async def create_to_qr_ms(client: Client) -> float:
    key = unique_key()
    started = time.perf_counter()
    ack = await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
    assert ack["ok"], ack
    while not any(n == "session.qr" and e["key"] == key for n, e in client.events):
        await asyncio.sleep(0.001)
    elapsed = (time.perf_counter() - started) * 1000
    await client.call("session.delete", {"key": key})
    await asyncio.sleep(0.1)  # a calm client: well under 20 requests a second
    return elapsed


async def test_a_flooding_client_does_not_slow_down_others(tmp_path: Path) -> None:
    """Numbers, printed: a calm client's create→QR latency, quiet and while another
    identity floods from its own process as fast as it can send (the default limits)."""
    settings = limited(tmp_path, tokens="flood:flood-token,calm:calm-token")
    async with running(settings) as server:
        calm = await Client().connect(server.url, auth={"token": "calm-token"})
        flooder = None
        try:
            quiet = [await create_to_qr_ms(calm) for _ in range(20)]
            flooder = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                FLOODER,
                server.url,
                "flood-token",
                "6",
                stdout=asyncio.subprocess.PIPE,
            )
            await asyncio.sleep(1.0)
            loaded = [await create_to_qr_ms(calm) for _ in range(20)]
            out, _ = await flooder.communicate()
        finally:
            if flooder is not None and flooder.returncode is None:
                flooder.kill()
                await flooder.communicate()
            await calm.close()
    sent, connections, refused = map(int, out.split())
    quiet_p50, loaded_p50 = statistics.median(quiet), statistics.median(loaded)
    print(
        f"\ncreate→QR of a calm client: p50 {quiet_p50:.1f} ms quiet, {loaded_p50:.1f} ms "
        f"while another identity sent {sent} requests in 6 s over {connections} "
        f"connections ({refused} connection attempts refused)"
    )
    # The behaviour; the latencies are printed, not asserted (a loaded machine's timing
    # is no test): every calm create during the flood was answered and got its code
    # (create_to_qr_ms asserts both), and the flood met the limits (its connection was
    # cut, its new ones refused).
    assert len(loaded) == 20
    assert connections > 1 or refused > 0, out
