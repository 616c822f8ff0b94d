"""Concurrent commands on one key never leave an impossible history in the store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from domain.application.history import session_history
from entrypoints.settings import Settings
from tests.helpers import Server, clients, decode_qr, running, simulated_keys, unique_key

# Which state each recorded event may follow: the protocol's transitions, written out.
MAY_FOLLOW = {
    "SessionCreated": {None},
    "QrIssued": {"created", "qr"},
    "PairCodeIssued": {"created", "qr"},
    "Authenticated": {"created", "qr"},
    "Ready": {"authenticated", "disconnected"},
    "Disconnected": {"created", "qr", "authenticated", "ready", "disconnected"},
    "Restarted": {"disconnected"},
}


def assert_possible(server: Server, key: str) -> list[str]:
    records = session_history(server.pairgate.sessions.history(key))
    assert [r["version"] for r in records] == list(range(1, len(records) + 1))
    state = None
    for record in records:
        assert state in MAY_FOLLOW[record["type"]], (state, record)
        state = record["state"]
    return [r["type"] for r in records]


async def test_two_tabs_creating_the_same_key_run_one_engine(server: Server) -> None:
    for _ in range(10):
        key = unique_key()
        request = {"key": key, "name": "P", "engine": "simulator"}
        async with clients(server.url, 2) as tabs:
            acks = await asyncio.gather(*(tab.call("session.create", request) for tab in tabs))
            assert all(ack["ok"] for ack in acks), acks
            assert sorted(ack["joined"] for ack in acks) == [False, True]
            for tab in tabs:
                await tab.wait_for("session.qr")
        assert assert_possible(server, key)[:2] == ["SessionCreated", "QrIssued"]
        assert assert_possible(server, key).count("SessionCreated") == 1


async def test_a_scan_racing_the_expiry_is_one_or_the_other(settings: Settings) -> None:
    racy = settings.model_copy(update={"sim_qr_timeouts": (0.3,), "expiry_grace": 0.0})
    outcomes: dict[str, int] = {}
    async with running(racy) as server, clients(server.url) as [client]:
        for attempt in range(15):
            key = unique_key()
            await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
            qr = await client.wait_for("session.qr", attempt + 1)
            code = decode_qr(qr["qr"])
            await asyncio.sleep(0.25 + 0.01 * (attempt % 6))  # around the code's 0.3 s
            scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
            await asyncio.sleep(0.3)
            kinds = assert_possible(server, key)
            outcome = "paired" if "Authenticated" in kinds else "expired"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "paired":
                assert scanned.is_success, scanned.text
                await client.call("session.delete", {"key": key})
            elif scanned.is_success:  # the scan reached the phone's side, the expiry won
                assert scanned.json()["state"] == "disconnected"
            # Either way, once the session has ended no credentials are left behind.
            assert simulated_keys(racy) == 0
    print(f"\nscan vs expiry: {outcomes}")
    assert sum(outcomes.values()) == 15


async def test_two_servers_creating_one_key_on_one_store(settings: Settings) -> None:
    """Two processes on one store: the event store's optimistic concurrency decides."""
    if settings.database_url is None:
        pytest.skip("a SQLite store is one process's (tests/e2e/test_one_server_per_store.py)")
    async with running(settings) as first, running(settings) as second:
        for _ in range(5):
            key = unique_key()
            request = {"key": key, "name": "P", "engine": "simulator"}
            async with clients(first.url) as [a], clients(second.url) as [b]:
                acks: list[Any] = await asyncio.gather(
                    a.call("session.create", request), b.call("session.create", request)
                )
            codes = sorted(ack["error"]["code"] if not ack["ok"] else "ok" for ack in acks)
            assert codes in (["invalid_transition", "ok"], ["ok", "ok"]), acks
            assert assert_possible(first, key).count("SessionCreated") == 1
