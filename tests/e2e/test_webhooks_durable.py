"""Webhooks survive what deployments go through: `pairgate serve` is `kill -9`ed in the
middle of pairings and restarted, and the receiver is down for a while. Every recorded
event reaches the receiver at least once, signed, in order per key; an event arrives
twice only if it was in flight when the process died, under the same `webhook-id`.

The issue's numbers are 200 sessions and a 20 s outage; CI runs a shorter outage
(PAIRGATE_TEST_WEBHOOK_OUTAGE seconds, default 4) to keep its time down."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import socketio
from standardwebhooks import Webhook

from tests.e2e.service_process import PAIRGATE, ServiceProcess, free_port
from tests.helpers import Client, decode_qr, unique_key
from tests.webhook_receiver import Receiver, receiver

SESSIONS = 200
CONCURRENCY = 20
OUTAGE = float(os.environ.get("PAIRGATE_TEST_WEBHOOK_OUTAGE", "4"))
ENV = {
    "PAIRGATE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    "PAIRGATE_WEBHOOK_RETRY_DELAY": "0.2",
    "PAIRGATE_WEBHOOK_RETRY_MAX_DELAY": "2",
    "PAIRGATE_RATE_LIMIT_IDENTITY": "",
    "PAIRGATE_RATE_LIMIT_CONNECTION": "",
}
ALL = ["session.created", "session.qr", "session.pair_code", "session.authenticated",
       "session.ready", "session.disconnected"]  # fmt: skip


async def pair_all(url: str, keys: list[str]) -> list[str]:
    """Pair `keys`, CONCURRENCY at a time; those whose pairing broke off."""
    gate = asyncio.Semaphore(CONCURRENCY)
    broken: list[str] = []

    async def one(key: str) -> None:
        async with gate:
            client = Client(socketio.AsyncClient(reconnection=False))
            try:
                await pair_with(client, url, key)
            except Exception:
                broken.append(key)
            finally:
                await client.close()
                http = getattr(client.sio.eio, "http", None)
                if http is not None and not http.closed:  # a connect that failed leaves it
                    await http.close()

    await asyncio.gather(*(one(key) for key in keys))
    return broken


async def pair_with(client: Client, url: str, key: str) -> None:
    """The seed flow to `ready` (service_process.pair, with a client the caller closes)."""
    await client.connect(url)
    await client.call("session.create", {"key": key, "name": "My Device", "engine": "baileys"})
    code = decode_qr((await client.wait_for("session.qr"))["qr"])
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        scanned = await http.post(f"/api/simulator/devices/{key}/scan", json={"code": code})
    assert scanned.status_code == 200, scanned.text
    await client.wait_for("session.ready")


def recorded(data_dir: Path) -> list[dict[str, object]]:
    """Every recorded event, read from the store by `pairgate export`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
    out = subprocess.run(
        [str(PAIRGATE), "export", "--data-dir", str(data_dir)],
        env=env, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines()]


async def test_every_event_arrives_across_kill_9_and_an_outage(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    data_dir = tmp_path / "data"
    got, port = Receiver(), free_port()
    keys = [unique_key("durable") for _ in range(SESSIONS)]
    first, second = keys[: SESSIONS // 2], keys[SESSIONS // 2 :]
    service = start_service(data_dir, ENV)
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        made = await http.post(
            "/api/webhooks", json={"url": f"http://127.0.0.1:{port}/hook", "events": ALL}
        )
    assert made.status_code == 201, made.text
    secret = made.json()["webhook"]["secret"]

    async with receiver(got, port):
        # Half the pairings under way when the process dies without a word.
        pairing = asyncio.create_task(pair_all(service.url, first))
        while sum(1 for r in got.received if r.message["type"] == "session.ready") < 40:
            await got.wait_for("/hook", len(got.received) + 1, timeout=30)
        service.process.kill()
        service.process.wait(10)
        killed_at = time.time()
        broken = await pairing
        # On a thread: the receiver (on this loop) keeps taking what is on its way.
        service = await asyncio.to_thread(start_service, data_dir, ENV)
        # The cut-off ones, paired again (those that reached `ready` before the kill are
        # resumed by the restart instead: a create joins them, with no code to scan).
        await pair_all(service.url, broken)

    # The receiver is down while the second half pairs, and for OUTAGE seconds in all.
    down_since = time.monotonic()
    assert await pair_all(service.url, second) == []
    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_since)))  # the outage
    events = recorded(data_dir)
    # Each key had one owner: its versions as sent are the stream's, as exported.
    expected = {(e["key"], e["version"]) for e in events}
    async with receiver(got, port):
        # Back up: everything recorded so far arrives (retries back off to 2 s at most).
        await got.wait_for("/hook", len(expected), timeout=60)
        deadline = time.monotonic() + 60
        while not expected <= {
            (r.message["data"]["key"], r.message["data"]["version"]) for r in got.received
        }:
            assert time.monotonic() < deadline, "some events never arrived"
            await got.wait_for("/hook", len(got.received) + 1, timeout=60)

    verifier = Webhook(secret)
    per_key: dict[str, list[int]] = defaultdict(list)
    first_sent: dict[str, int] = {}
    duplicates = 0
    for r in got.received:
        message = verifier.verify(r.body, r.headers)
        message_id, sent = r.headers["webhook-id"], int(r.headers["webhook-timestamp"])
        if message_id in first_sent:
            duplicates += 1
            # Sent again only because it was in flight when the process died: the first
            # copy by the killed process, this one by its successor.
            assert first_sent[message_id] <= killed_at <= sent + 1, message_id
            continue
        first_sent[message_id] = sent
        per_key[message["data"]["key"]].append(message["data"]["version"])
    for key, versions in per_key.items():
        assert versions == sorted(versions), (key, versions)
    assert {k for k in per_key if k in keys} == set(keys)
    ready = {e["key"] for e in events if e["type"] == "Ready"}
    assert ready >= set(keys)
    assert "Traceback" not in service.log()
    print(f"{len(events)} events, {len(got.received)} deliveries, {duplicates} duplicates")
