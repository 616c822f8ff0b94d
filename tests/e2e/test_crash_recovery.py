"""`kill -9` in the middle of pairings and of ready sessions, then a restart on the same
data directory: nothing recorded is lost or written twice, ready devices come back
without a QR code, interrupted pairings are closed as `connection lost`, and clients
that rejoin see exactly that."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import socketio

from adapters.credentials import CredentialVault
from adapters.engines.simulated_keys import SimulatedKeys
from tests.e2e.service_process import ServiceProcess, pair
from tests.helpers import Client, unique_key

CYCLES = 4


async def history(url: str, key: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get(f"/api/sessions/{key}/history")
        while response.status_code == 429:  # as a polite client does: wait as told
            await asyncio.sleep(float(response.headers["retry-after"]))
            response = await http.get(f"/api/sessions/{key}/history")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


async def test_kill_9_then_restart_tells_the_truth(
    tmp_path: Path, start_service: Callable[[Path], ServiceProcess]
) -> None:
    data_dir = tmp_path / "data"
    service = start_service(data_dir)
    paired: list[str] = []
    pending: list[str] = []
    for cycle in range(CYCLES):
        # This run pairs one more device and leaves one pairing half done...
        paired.append(unique_key(f"paired{cycle}"))
        await pair(service.url, paired[-1])
        pending.append(unique_key(f"pending{cycle}"))
        page = await Client(socketio.AsyncClient(reconnection=False)).connect(service.url)
        request = {"key": pending[-1], "name": "Half", "engine": "simulator"}
        await page.call("session.create", request)
        await page.wait_for("session.qr")
        before = {key: await history(service.url, key) for key in paired + pending}

        # ...and dies without a chance to record anything.
        service.process.kill()
        service.process.wait(10)
        await page.close()
        service = start_service(data_dir)

        for key in paired:
            after = await history(service.url, key)
            # Versions run 1..n without a gap or a repeat: nothing lost, nothing twice.
            assert [e["version"] for e in after] == list(range(1, len(after) + 1))
            assert after[: len(before[key])] == before[key]
            if before[key][-1]["state"] == "ready":
                # Resumed: the loss is on record, then the device is online again.
                assert kinds(after[len(before[key]) :]) == ["Disconnected", "Ready"]
                assert after[-2]["reason"] == "connection lost"
        for key in pending:
            after = await history(service.url, key)
            assert after[: len(before[key])] == before[key]
            assert after[-1]["state"] == "disconnected"
            assert after[-1]["reason"] == "connection lost"

        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            assert (await http.get("/healthz")).json()["sessions_running"] == len(paired)
        rejoined = await Client(socketio.AsyncClient(reconnection=False)).connect(service.url)
        try:
            for key in paired:
                ack = await rejoined.call("session.join", {"key": key})
                assert ack["state"] == "ready", ack
            for key in pending:
                ack = await rejoined.call("session.join", {"key": key})
                assert (ack["state"], ack["reason"]) == ("disconnected", "connection lost")
            # Nothing stale is re-sent: no old QR code for a pairing that is over.
            assert "session.qr" not in rejoined.names()
        finally:
            await rejoined.close()

    # Paired devices' credentials survived every crash, readable by the owner only; the
    # interrupted pairings left none behind.
    vault = CredentialVault(data_dir / "credentials")
    keys = SimulatedKeys(vault, "simulator")
    try:
        assert keys.count() == len(paired)
        assert all(keys.holds(key) for key in paired)
    finally:
        keys.close()
    assert stat.S_IMODE((vault.root / "simulator").stat().st_mode) == 0o700
    for file in (vault.root / "simulator").iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert "Traceback" not in service.log()
