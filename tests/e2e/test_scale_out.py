"""Two `pairgate serve` processes sharing PostgreSQL and Redis: one owner per device.

A key created on one process can be followed and driven from the other; when its owner
is killed, the other process hears of it at once (it waits on the owner's own lock),
takes the lease over, resumes the paired device, and the lease log shows that no key
ever had two holders at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.e2e.service_process import ServiceProcess
from tests.helpers import (
    POSTGRES_URL,
    REDIS_URL,
    Client,
    decode_qr,
    lease_log,
    overlapping_grants,
    postgres_available,
    postgres_schema,
    redis_available,
    unique_key,
)

TAKEOVER = float(os.environ.get("PAIRGATE_FAILOVER_TAKEOVER", "1.0"))
RUNS = int(os.environ.get("PAIRGATE_FAILOVER_RUNS", "2"))


pytestmark = [
    pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not on 127.0.0.1:5432"),
    pytest.mark.skipif(not redis_available(), reason="Redis is not on 127.0.0.1:6379"),
]


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema("scale") as name:
        yield name


@pytest.fixture
def cluster(
    tmp_path: Path, schema: str, start_service: Callable[..., ServiceProcess]
) -> Callable[..., ServiceProcess]:
    """Starts processes of one deployment: shared store, Redis and credentials."""
    env = {
        "PAIRGATE_DATABASE_URL": f"{POSTGRES_URL}?schema={schema}",
        "PAIRGATE_REDIS_URL": REDIS_URL,
        "PAIRGATE_CREDENTIALS_DIR": str(tmp_path / "credentials"),
        "PAIRGATE_TAKEOVER_INTERVAL": str(TAKEOVER),
        "PAIRGATE_LEASE_CHECK_INTERVAL": "0.5",
    }
    count = 0

    def start(**extra: str) -> ServiceProcess:
        nonlocal count
        count += 1
        return start_service(tmp_path / f"node{count}", env | extra)

    return start


async def connect(service: ServiceProcess) -> Client:
    return await Client(socketio.AsyncClient(reconnection=False)).connect(service.url)


async def history(service: ServiceProcess, key: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        events: list[dict[str, Any]] = (await http.get(f"/api/sessions/{key}/history")).json()[
            "events"
        ]
    return events


def assert_one_holder_at_a_time(schema: str) -> None:
    grants = lease_log(schema)
    assert grants and not overlapping_grants(grants), overlapping_grants(grants)


async def test_a_key_created_on_one_process_is_driven_from_the_other(
    cluster: Callable[..., ServiceProcess], schema: str
) -> None:
    first, second = cluster(), cluster()
    key = unique_key()
    owner_page, other_page = await connect(first), await connect(second)
    try:
        request = {"key": key, "name": "My Device", "engine": "baileys"}
        assert (await owner_page.call("session.create", request))["ok"] is True
        shown = await owner_page.wait_for("session.qr")
        # The other process follows the key: it is told the current code...
        joined = await other_page.call("session.join", {"key": key})
        assert joined["state"] == "qr"
        code = decode_qr((await other_page.wait_for("session.qr"))["qr"])
        assert code == decode_qr(shown["qr"])
        # ...a create there joins instead of starting a second engine...
        again = await other_page.call("session.create", request)
        assert again["ok"] is True and again["joined"] is True
        # ...and the scan posted to it pairs the device its owner runs.
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
            scanned = await http.post(f"/api/simulator/devices/{key}/scan", json={"code": code})
        assert scanned.status_code == 200, scanned.text
        for page in (owner_page, other_page):
            assert await page.wait_for("session.ready") == {"key": key}
        assert "session.authenticated" in other_page.names()
        # Logging out from the other process ends it on its owner.
        ack = await other_page.call("session.logout", {"key": key})
        assert ack["ok"] is True and ack["state"] == "disconnected"
        assert ack["reason"] == "user logged out"
        await owner_page.wait_for("session.disconnected")
    finally:
        await owner_page.close()
        await other_page.close()
    kinds = [e["type"] for e in await history(first, key)]
    assert kinds.count("SessionCreated") == 1 and "Restarted" not in kinds
    assert_one_holder_at_a_time(schema)


async def test_when_the_owner_dies_the_other_process_takes_over(
    cluster: Callable[..., ServiceProcess], schema: str
) -> None:
    # PAIRGATE_RECOVER=false skips the look at start-up only: failover still happens. It
    # comes at once, not at the next takeover interval (a minute here): the survivor
    # waits on each other process's own lock, which PostgreSQL grants it when that dies.
    slow = {"PAIRGATE_TAKEOVER_INTERVAL": "60"}
    survivor = cluster(PAIRGATE_RECOVER="false", **slow)
    failovers = []
    for run in range(RUNS):
        owner = cluster(**slow)
        key = unique_key(f"failover{run}")
        page = await connect(owner)
        try:
            request = {"key": key, "name": "Phone", "engine": "simulator"}
            ack = await page.call("session.create", request)
            assert ack["ok"] is True, (ack, owner.log())
            try:
                shown = await page.wait_for("session.qr")
            except TimeoutError:
                raise AssertionError((page.events, owner.log(), survivor.log())) from None
            code = decode_qr(shown["qr"])
            async with httpx.AsyncClient(base_url=owner.url, timeout=10) as http:
                await http.post(f"/api/simulator/devices/{key}/scan", json={"code": code})
            await page.wait_for("session.ready")
        finally:
            await page.close()
        # A second device is half-way through pairing on the owner when it dies.
        pending = unique_key(f"pending{run}")
        pairing_page = await connect(owner)
        pairing = {"key": pending, "name": "Half", "engine": "simulator"}
        await pairing_page.call("session.create", pairing)
        await pairing_page.wait_for("session.qr")
        watcher = await connect(survivor)
        await watcher.call("session.join", {"key": key})
        await watcher.call("session.join", {"key": pending})
        before = await history(survivor, key)

        killed_at = time.monotonic()
        owner.kill()  # SIGKILL
        try:
            await watcher.wait_for("session.ready", timeout=15)
        except TimeoutError:
            raise AssertionError((watcher.events, survivor.log())) from None
        failovers.append(time.monotonic() - killed_at)
        await pairing_page.close()
        # The interrupted pairing is closed as such, and its room is told.
        await watcher.wait_for("session.disconnected", 2)
        lost = [e for n, e in watcher.events if n == "session.disconnected"]
        assert {"key": pending, "reason": "connection lost"} in lost
        assert {"key": key, "reason": "connection lost"} in lost
        assert (await history(survivor, pending))[-1]["reason"] == "connection lost"
        await watcher.close()

        after = await history(survivor, key)
        assert [e["version"] for e in after] == list(range(1, len(after) + 1))
        assert after[: len(before)] == before
        assert [e["type"] for e in after[len(before) :]] == ["Disconnected", "Ready"]
        assert after[len(before)]["reason"] == "connection lost"
        async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as http:
            assert (await http.get("/healthz")).json()["sessions_running"] == run + 1
    assert_one_holder_at_a_time(schema)
    print(f"\nfailover (kill -9 → ready on the survivor): {[round(f, 2) for f in failovers]} s")
    assert "Traceback" not in survivor.log()
