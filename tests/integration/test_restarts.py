"""Restarts whose cost does not grow with the devices: a stop records its devices'
lost connections in batches, and the next start serves at once and resumes paired
devices in the background, at a bounded rate, saying how far it is."""

from __future__ import annotations

import asyncio

import pytest

from domain.application import recovery
from domain.model.session import SessionState
from entrypoints.settings import Settings
from tests.helpers import Server, clients, pair, running, start_server, unique_key

DEVICES = 3


async def readiness(server: Server) -> tuple[int, dict[str, object]]:
    answer = await server.get("/readyz")
    return answer.status_code, answer.json()


async def all_ready(server: Server, count: int) -> None:
    """Returns once `count` devices run here, every one ready."""
    states = server.pairgate.service.running_states
    while len(states) != count or set(states.values()) != {SessionState.READY}:
        await asyncio.sleep(0.05)
        states = server.pairgate.service.running_states


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
        # Ready (requests may come) while devices still resume, at their pace; the stop
        # recorded them offline, so none was read before: nothing was left to settle.
        assert any(status == 200 and resume["pending"] > 0 for status, resume in seen), seen
        assert all(resume["looked_at"] == 0 for _, resume in seen), seen
        assert seen[-1][1]["resumed"] == DEVICES and seen[-1][1]["to_resume"] == DEVICES
        metrics = (await server.get("/metrics")).text
        assert "pairgate_devices_to_resume 0.0" in metrics
        await server.pairgate.recovered()
        await asyncio.wait_for(all_ready(server, DEVICES), 10)
        for key in keys:
            after = server.pairgate.sessions.history(key)
            new = after[len(before[key]) :]
            assert [type(e).__name__ for e in new] == ["Disconnected", "Ready"]
            assert new[0].reason == "connection lost"


async def test_a_device_a_killed_process_left_live_is_settled_before_ready(
    settings: Settings,
) -> None:
    if settings.database_url is not None:
        pytest.skip("the order of settling and readiness does not depend on the store")
    left, stopped = unique_key("left"), unique_key("stopped")
    async with running(settings) as server, clients(server.url, 2) as pages:
        await pair(server, pages[0], left)
        await pair(server, pages[1], stopped)
        # As a killed process would: `left`'s engine is gone, and nothing recorded it.
        await server.pairgate.service.leases_lost([left])
        before = {key: server.pairgate.sessions.history(key) for key in (left, stopped)}
    assert type(before[left][-1]).__name__ == "Ready"
    slow = settings.model_copy(update={"resume_rate": 2.0})
    async with running(slow, recovered=False) as server:
        while (answer := await server.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)
        # Ready only once `left` is recorded as offline (read to settle it); `stopped`,
        # recorded offline by its stop, was not read for that.
        new = server.pairgate.sessions.history(left)[len(before[left]) :]
        assert [type(e).__name__ for e in new][:1] == ["Disconnected"], new
        assert new[0].reason == "connection lost"
        assert answer.json()["resume"]["looked_at"] == 1
        assert answer.json()["resume"]["to_resume"] == 2
        await server.pairgate.recovered()
        await asyncio.wait_for(all_ready(server, 2), 10)
        for key in before:  # each recorded lost once, then back
            after = server.pairgate.sessions.history(key)[len(before[key]) :]
            assert [type(e).__name__ for e in after] == ["Disconnected", "Ready"], (key, after)


async def test_a_stop_whose_grace_runs_out_records_nothing_more(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop records its devices a batch at a time while its grace lasts; once it runs
    out, nothing more is recorded (however many devices are left: the stop takes its
    grace at most), and the next start records the rest before /readyz."""
    if settings.database_url is not None:
        pytest.skip("the stop's bound does not depend on the store")
    monkeypatch.setattr(recovery, "BATCH", 1)  # two devices: two batches
    keys = sorted(unique_key("grace") for _ in range(2))  # the stop's order
    server = await start_server(settings.model_copy(update={"shutdown_grace": 1}))
    try:
        async with clients(server.url, 2) as pages:
            for key, page in zip(keys, pages, strict=True):
                await pair(server, page, key)
        before = {key: len(server.pairgate.sessions.history(key)) for key in keys}
        engine, stop = server.pairgate.simulator, server.pairgate.simulator.stop

        async def stuck(key: str) -> None:  # the first batch's engine never stops
            if key == keys[0]:
                await asyncio.Event().wait()
            await stop(key)

        monkeypatch.setattr(engine, "stop", stuck)
    finally:
        await server.stop()  # (uvicorn's shutdown: the drain, then the app's close)
    async with running(settings, recovered=False) as server:
        while (answer := await server.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)
        # Both were still recorded live: the second batch was not recorded after the
        # grace ran out on the first (by the app's close, unbounded, as it had been).
        assert answer.json()["resume"]["looked_at"] == 2
        await server.pairgate.recovered()
        for key in keys:
            new = server.pairgate.sessions.history(key)[before[key] :]
            assert [type(e).__name__ for e in new] == ["Disconnected", "Ready"], (key, new)
            assert new[0].reason == "connection lost"
