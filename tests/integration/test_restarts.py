"""Restarts whose cost does not grow with the devices: a stop records its devices'
lost connections in batches, and the next start serves at once and resumes paired
devices in the background, at a bounded rate, saying how far it is."""

from __future__ import annotations

import asyncio

import pytest

from domain.model.session import SessionState
from entrypoints.settings import Settings
from tests.helpers import Server, clients, pair, running, unique_key

DEVICES = 3


async def readiness(server: Server) -> tuple[int, dict[str, object]]:
    answer = await server.get("/readyz")
    return answer.status_code, answer.json()


async def test_a_restart_serves_at_once_and_resumes_devices_at_its_pace(
    settings: Settings,
) -> None:
    if settings.database_url is not None:
        # (CI time: restarts on PostgreSQL, batches included, are test_recovery_index's.)
        pytest.skip("the pacing and progress do not depend on the store")
    keys = [unique_key("restart") for _ in range(DEVICES)]
    async with running(settings) as server, clients(server.url, DEVICES) as pages:
        for key, page in zip(keys, pages, strict=True):
            await pair(server, page, key)
        before = {key: server.pairgate.sessions.history(key) for key in keys}
    # Stopped: every device's lost connection was recorded (in one batch).
    slow = settings.model_copy(update={"resume_rate": 2.0})  # 3 devices: 1 s at least
    async with running(slow, recovered=False) as server:
        assert (await server.get("/healthz")).status_code == 200
        seen = []
        while True:
            status, body = await readiness(server)
            seen.append((status, body["resume"]))
            if status == 200 and body["resume"]["pending"] == 0:
                break
            await asyncio.sleep(0.05)
        # Ready (requests may come) while devices still resume, at their pace.
        assert any(status == 200 and resume["pending"] > 0 for status, resume in seen), seen
        assert seen[-1][1]["resumed"] == DEVICES and seen[-1][1]["to_resume"] == DEVICES
        metrics = (await server.get("/metrics")).text
        assert "pairgate_devices_to_resume 0.0" in metrics
        await server.pairgate.recovered()
        service = server.pairgate.service

        async def all_ready() -> None:
            while set(service.running_states.values()) != {SessionState.READY}:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(all_ready(), 10)
        for key in keys:
            after = server.pairgate.sessions.history(key)
            new = after[len(before[key]) :]
            assert [type(e).__name__ for e in new] == ["Disconnected", "Ready"]
            assert new[0].reason == "connection lost"
