"""Two pairgate processes on one store and one Redis: an emission made by one reaches the
room's clients connected to the other (python-socketio's AsyncRedisManager)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from adapters.socketio.projection import room
from entrypoints.fanout import fanout_key
from entrypoints.settings import Settings
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import (
    POSTGRES_URL,
    REDIS_URL,
    Client,
    Server,
    clients,
    postgres_available,
    postgres_schema,
    redis_available,
    running,
    unique_key,
)


@pytest.fixture
def shared_store(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL schema of its own, for both servers."""
    if not redis_available():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as schema:
        yield f"{POSTGRES_URL}?schema={schema}"


def process_settings(database_url: str, data_dir: Path, redis: bool) -> Settings:
    return Settings(
        simulate=True,
        sim_qr_timeouts=(30.0,),
        database_url=SecretStr(database_url),
        redis_url=SecretStr(REDIS_URL) if redis else None,
        data_dir=data_dir,
        recover=False,
    )


async def scan(server: Server, key: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        code = (await http.get(f"/api/simulator/devices/{key}/code")).json()["code"]
    scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
    assert scanned.status_code == 200, scanned.text


@contextlib.asynccontextmanager
async def followed_from_another_process(
    database_url: str, tmp_path: Path, *, redis: bool
) -> AsyncIterator[tuple[Server, Server, Client, Client, str]]:
    """Two processes on one store: a session created (and showing its QR code) by a client
    of the first, joined by a client of the second. Yields both servers, the creator, the
    follower and the key."""
    one = process_settings(database_url, tmp_path / "one", redis=redis)
    two = process_settings(database_url, tmp_path / "two", redis=redis)
    key = unique_key()
    async with running(one) as server1, running(two) as server2:
        async with clients(server1.url) as [creator], clients(server2.url) as [follower]:
            request = {"key": key, "name": "P", "engine": "simulator"}
            assert (await creator.call("session.create", request))["ok"]
            await creator.wait_for("session.qr")
            joined = await follower.call("session.join", {"key": key})
            assert joined["ok"] and joined["state"] == "qr", joined
            yield server1, server2, creator, follower, key


async def test_an_emission_on_one_process_reaches_a_client_on_another(
    shared_store: str, tmp_path: Path
) -> None:
    async with followed_from_another_process(shared_store, tmp_path, redis=True) as (
        server1,
        server2,
        creator,
        follower,
        key,
    ):
        await scan(server1, key)  # the engine runs on server 1: so do its emissions
        assert await follower.wait_for("session.authenticated") == {"key": key}
        assert await follower.wait_for("session.ready") == {"key": key}
        assert await creator.wait_for("session.ready") == {"key": key}
        # Once each: the process that emitted delivers to its own clients itself.
        await asyncio.sleep(0.2)
        assert creator.names().count("session.ready") == 1
        assert follower.names().count("session.ready") == 1
        assert key in server1.pairgate.service.running_keys
        assert key not in server2.pairgate.service.running_keys


async def test_without_redis_the_other_process_s_clients_hear_nothing(
    shared_store: str, tmp_path: Path
) -> None:
    """The control: the same scenario on in-memory managers does not fan out."""
    async with followed_from_another_process(shared_store, tmp_path, redis=False) as (
        server1,
        _,
        creator,
        follower,
        key,
    ):
        await scan(server1, key)
        await creator.wait_for("session.ready")
        with pytest.raises(TimeoutError):
            await follower.wait_for("session.ready", timeout=1.0)


async def test_a_forged_emission_published_on_the_channel_reaches_no_client(
    shared_store: str, tmp_path: Path
) -> None:
    """Whoever may publish on the deployment's Redis channel (another deployment on the
    same Redis, say: the channel is named after the store's address, which is no secret)
    could put its own QR code on every page of a key (its room's name is in the code),
    and a user scanning it links their WhatsApp to the attacker's device. Emissions
    carry a signature of the deployment's own; an unsigned or wrongly signed one is
    dropped."""
    import redis.asyncio

    async with followed_from_another_process(shared_store, tmp_path, redis=True) as (
        server1,
        _,
        creator,
        follower,
        key,
    ):
        channel = server1.pairgate.settings.fanout_channel()
        forged = {"key": key, "qr": "data:image/png;base64,ATTACKER", "timeout": 60}
        message = {
            "method": "emit", "event": "session.qr", "data": forged, "namespace": "/",
            "room": room(key), "skip_sid": None, "callback": None, "host_id": "attacker",
        }  # fmt: skip
        body = json.dumps(message)
        deployment = fanout_key(server1.pairgate.settings.store_config())

        def signed(at: float, text: str) -> dict[str, object]:
            mac = hmac.new(deployment, f"{at:.3f}|{text}".encode(), hashlib.sha256)
            return {"body": text, "at": at, "mac": mac.hexdigest()}

        publisher = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            for wrapped in (
                message,  # as python-socketio publishes
                {"body": body, "at": time.time(), "mac": "0" * 64},  # a wrong signature
                signed(time.time() - 120, body),  # signed, but two minutes ago: a replay
            ):
                assert await publisher.publish(channel, json.dumps(wrapped)) == 2  # both hear
            # The control: a message signed with the deployment's key, now, is acted on.
            genuine = json.dumps({**message, "data": {**forged, "qr": "SIGNED"}})
            assert await publisher.publish(channel, json.dumps(signed(time.time(), genuine)))
        finally:
            await publisher.aclose()
        await scan(server1, key)  # a real emission after the forged ones: it gets through
        assert await follower.wait_for("session.ready") == {"key": key}
        assert await creator.wait_for("session.ready") == {"key": key}
        for client in (creator, follower):
            shown = [data["qr"] for name, data in client.events if name == "session.qr"]
            assert "SIGNED" in shown and forged["qr"] not in shown, shown


def test_the_processes_of_a_deployment_share_a_fanout_key_and_no_other_has_it(
    shared_store: str, tmp_path: Path
) -> None:
    """PostgreSQL without a cipher key: the store's own secret (made once); with one:
    derived from it; a SQLite store: its one process's own."""
    with postgres_schema() as elsewhere:
        here = Settings(database_url=SecretStr(shared_store)).store_config()
        there = Settings(database_url=SecretStr(f"{POSTGRES_URL}?schema={elsewhere}"))
        assert fanout_key(here) == fanout_key(here) != fanout_key(there.store_config())
    ciphered = Settings(cipher_key=TEST_CIPHER_KEY, data_dir=tmp_path).store_config()
    assert fanout_key(ciphered) == fanout_key(ciphered) != fanout_key(here)
    alone = Settings(data_dir=tmp_path).store_config()
    assert fanout_key(alone) != fanout_key(alone)
