"""Attacks on keys (issue 19): probing, squatting, dot keys, store file modes, shared Redis.

Each test plays the attacker against a real server on loopback with real clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from domain.application.history import session_history
from domain.application.sessions import DeviceSessions
from domain.model.session import DisconnectReason
from entrypoints.settings import Settings
from tests.helpers import (
    POSTGRES_URL,
    REDIS_URL,
    Client,
    Server,
    decode_qr,
    postgres_available,
    postgres_schema,
    redis_available,
    running,
    unique_key,
)

TOKENS = "alice:token-of-alice,bob:token-of-bob"
ALICE, BOB = "token-of-alice", "token-of-bob"
KEY_REQUESTS = ("session.join", "session.logout", "session.delete", "session.history")
SIMULATOR_MOVES = ("scan", "pair", "logout", "drop", "revoke")


def guarded_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        simulate=True, sim_qr_timeouts=(30.0,), data_dir=data_dir, tokens=TOKENS, **overrides
    )


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(guarded_settings(tmp_path / "data")) as server:
        yield server


async def connect(server: Server, token: str) -> Client:
    return await Client().connect(server.url, auth={"token": token})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def masked(reply: Any, key: str) -> str:
    """A reply as bytes, with the key it names replaced: what must not differ."""
    return json.dumps(reply, sort_keys=True).replace(key, "<key>")


async def pair_as(server: Server, client: Client, key: str, token: str) -> str:
    """Create `key` and have the simulated phone scan it, with `token`'s identity."""
    ack = await client.call("session.create", {"key": key, "name": "Phone", "engine": "simulator"})
    assert ack["ok"], ack
    code = decode_qr((await client.wait_for("session.qr"))["qr"])
    scan = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code}, token=token)
    assert scan.status_code == 200, scan.text
    await client.wait_for("session.ready")
    return code


# -- 5 (a): another identity's key reads exactly like a missing one ---------------------


async def probe_socketio(bob: Client, key: str) -> list[str]:
    replies = []
    for event in KEY_REQUESTS:
        replies.append(masked(await bob.call(event, {"key": key}), key))
    create = {"key": key, "name": "Mine now", "engine": "simulator"}
    refused = await bob.call("session.create", create)
    replies.append(masked(refused, key))
    return replies


async def probe_http(server: Server, key: str) -> list[str]:
    replies = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer(BOB)) as http:
        for path in (f"/api/sessions/{key}", f"/api/sessions/{key}/history"):
            for query in ("", "?at=1"):
                response = await http.get(path + query)
                replies.append(f"{response.status_code} {masked(response.json(), key)}")
        base = f"/api/simulator/devices/{key}"
        response = await http.get(f"{base}/code")
        replies.append(f"{response.status_code} {masked(response.json(), key)}")
        for move in SIMULATOR_MOVES:
            response = await http.post(f"{base}/{move}", json={"code": "ABCD-EFGH"})
            replies.append(f"{response.status_code} {masked(response.json(), key)}")
    return replies


async def test_another_identitys_key_reads_exactly_like_a_missing_one(guarded: Server) -> None:
    taken, missing = unique_key("taken"), unique_key("nokey")
    alice, bob = await connect(guarded, ALICE), await connect(guarded, BOB)
    try:
        ack = await alice.call(
            "session.create", {"key": taken, "name": "Alice's", "engine": "simulator"}
        )
        assert ack["ok"], ack
        await alice.wait_for("session.qr")
        on_taken = await probe_socketio(bob, taken)
        errors_on_taken = [masked(e, taken) for n, e in bob.events if n == "session.error"]
        bob.events.clear()
        on_missing = await probe_socketio(bob, missing)  # its create succeeds: it is last
        errors_on_missing = [masked(e, missing) for n, e in bob.events if n == "session.error"]
        assert on_taken[:4] == on_missing[:4]
        assert errors_on_taken[:4] == errors_on_missing
        # Create cannot hide that a key is taken (it would be created), but its refusal
        # says no more than the others: the same not_found as a missing key's.
        assert on_taken[4] == on_taken[0] and errors_on_taken[4] == errors_on_taken[0]
        assert '"not_found"' in on_taken[0]
        # HTTP: the state, the history and the simulated phone's endpoints alike.
        never = unique_key("never")  # `missing` is Bob's own by now
        assert await probe_http(guarded, taken) == await probe_http(guarded, never)
        # Alice's session went on untouched.
        assert (await alice.call("session.join", {"key": taken}))["state"] == "qr"
    finally:
        await alice.close()
        await bob.close()


# -- 5 (b): a deleted key is free for anyone, and its past stays with its old owner -------


async def test_a_deleted_key_is_freed_and_its_new_owner_sees_none_of_the_past(
    guarded: Server,
) -> None:
    key = unique_key()
    alice, bob = await connect(guarded, ALICE), await connect(guarded, BOB)
    try:
        alice_code = await pair_as(guarded, alice, key, ALICE)
        assert (await alice.call("session.delete", {"key": key}))["ok"]
        await alice.wait_for("session.disconnected")
        heard_by_alice = len(alice.events)

        # Bob claims the key, pairs it and reads its history and state.
        bob_code = await pair_as(guarded, bob, key, BOB)
        history = await bob.call("session.history", {"key": key})
        assert history["ok"], history
        records = history["events"]
        # Numbered and named as a key nobody had: Bob's own session, from its creation.
        assert records[0]["type"] == "SessionCreated" and records[0]["owner"] == "bob"
        assert [r["state"] for r in records] == ["created", "qr", "authenticated", "ready"]
        assert [r["version"] for r in records] == [1, 2, 3, 4]
        shown = json.dumps(records)
        assert "alice" not in shown and "Alice" not in shown
        async with httpx.AsyncClient(base_url=guarded.url, headers=bearer(BOB)) as http:
            over_http = (await http.get(f"/api/sessions/{key}/history")).json()
            assert over_http["events"] == records
            first = (await http.get(f"/api/sessions/{key}?at=1")).json()
            assert (first["state"], first["version"]) == ("created", 1)
            assert (await http.get(f"/api/sessions/{key}?at=5")).status_code == 400
            assert (await http.get(f"/api/sessions/{key}/history?at=5")).status_code == 400
            state = (await http.get(f"/api/sessions/{key}")).json()
            assert state["state"] == "ready" and state["name"] == "Phone"
            assert state["version"] == 4

        # Alice heard nothing of Bob's session, and a linked key is not hers to take back.
        assert len(alice.events) == heard_by_alice, alice.events[heard_by_alice:]
        assert (await alice.call("session.join", {"key": key}))["error"]["code"] == "not_found"
        retake = {"key": key, "name": "Back", "engine": "simulator"}
        assert (await alice.call("session.create", retake))["error"]["code"] == "not_found"

        # The auditor's view (the store, as `pairgate history` reads it) keeps everything.
        stored = guarded.pairgate.sessions.history(key)
        owners = [getattr(e, "owner", None) for e in stored]
        assert owners[0] == "alice" and "bob" in owners
        assert decode_qr  # the codes themselves never appear in a history
        assert alice_code not in shown and bob_code not in shown
    finally:
        await alice.close()
        await bob.close()


async def bobs_views(server: Server, bob: Client, key: str) -> list[str]:
    """What Bob can read of his key: its history's records, state, listing row and the
    answers to versions out of his range, without what differs from key to key anyway."""
    views = []
    history = await bob.call("session.history", {"key": key})
    views.append(json.dumps([(r["version"], r["type"], r["state"]) for r in history["events"]]))
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=bearer(BOB)) as http:
        state = (await http.get(f"/api/sessions/{key}")).json()
        views.append(f"version {state['version']}")
        rows = (await http.get("/api/sessions", params={"search": key})).json()["sessions"]
        views.append(json.dumps([row["version"] for row in rows if row["key"] == key]))
        for at in (0, 1, 4, 5, 9):
            for path in (f"/api/sessions/{key}", f"/api/sessions/{key}/history"):
                reply = await http.get(
                    path, params={"at": at, **({"limit": 5} if "hist" in path else {})}
                )
                body = masked(reply.json(), key)
                body = re.sub(r'"fingerprint": "[0-9a-f]+"', '"fingerprint": "<f>"', body)
                views.append(f"{reply.status_code} {re.sub(r'[0-9T:.+-]{20,}', '<t>', body)}")
        page = (await http.get(f"/api/sessions/{key}/history", params={"limit": 2})).json()
        after = await http.get(
            f"/api/sessions/{key}/history", params={"after": page["next"], "limit": 5}
        )
        assert after.status_code == 200, (page, after.text)
        views.append(f"next {page['next']}: {[r['version'] for r in after.json()['events']]}")
    return views


async def test_a_new_owner_cannot_count_what_the_key_held_before(guarded: Server) -> None:
    """Versions are the owner's own: 1, 2, 3... from the pairing that gave the key to
    them. A key Alice used (and deleted) reads for Bob exactly like a key nobody had:
    its versions, `at` and `after`, and the answers to versions out of his range."""
    reused, fresh = unique_key("reused"), unique_key("fresh")
    alice = await connect(guarded, ALICE)
    bob, bob_again = await connect(guarded, BOB), await connect(guarded, BOB)
    try:
        await pair_as(guarded, alice, reused, ALICE)
        assert (await alice.call("session.logout", {"key": reused}))["ok"]
        await alice.wait_for("session.disconnected")
        await pair_as(guarded, bob, reused, BOB)
        await pair_as(guarded, bob_again, fresh, BOB)
        index = guarded.pairgate.session_index
        assert index is not None
        await index.caught_up()  # the listing shows both
        on_reused = await bobs_views(guarded, bob, reused)
        on_fresh = await bobs_views(guarded, bob, fresh)
        assert on_reused == on_fresh
        assert json.loads(on_fresh[0]) == [
            [1, "SessionCreated", "created"], [2, "QrIssued", "qr"],
            [3, "Authenticated", "authenticated"], [4, "Ready", "ready"],
        ]  # fmt: skip
        assert on_fresh[1:3] == ["version 4", "[4]"]
        # The auditor's view (`pairgate history`: the store) still numbers the stream.
        stored = guarded.pairgate.sessions.history(reused)
        assert [e.originator_version for e in stored][-1] > 4
    finally:
        for client in (alice, bob, bob_again):
            await client.close()


# -- 5 (c): squatting is bounded -------------------------------------------------------


async def test_one_identity_cannot_squat_keys_without_bound(tmp_path: Path) -> None:
    # The request rate per identity and address is not what is tested here (it would cut
    # the ten connections from one address off first): the cap on pairings is.
    async with running(guarded_settings(tmp_path / "data", rate_limit_connection="")) as server:
        await squat_then_create(server)


async def squat_then_create(guarded: Server) -> None:
    squatters = [await connect(guarded, ALICE) for _ in range(10)]
    bob = await connect(guarded, BOB)
    try:

        async def squat(client: Client, index: int) -> list[Any]:
            acks = []
            for n in range(15):
                request = {"key": f"squat-{index}-{n}", "name": "S", "engine": "simulator"}
                acks.append(await client.call("session.create", request))
            return acks

        acks = [a for c in await asyncio.gather(*map(squat, squatters, range(10))) for a in c]
        taken = sum(1 for ack in acks if ack["ok"])
        refused = [ack["error"] for ack in acks if not ack["ok"]]
        assert taken <= 100, f"one identity holds {taken} keys"
        assert refused and all(error["code"] == "rate_limited" for error in refused)
        assert all(error["retry_after"] > 0 for error in refused)
        mine = {"key": unique_key("bobs"), "name": "Bob's", "engine": "simulator"}
        assert (await bob.call("session.create", mine))["ok"]
    finally:
        for client in [*squatters, bob]:
            await client.close()


# -- 16: dot-only keys -----------------------------------------------------------------


async def raw_get(server: Server, path: str, token: str) -> tuple[int, Any]:
    """A GET whose path goes out byte for byte (HTTP clients resolve `.` and `..`)."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("key", [".", "..", "..."])
async def test_dot_only_keys_are_invalid(guarded: Server, key: str) -> None:
    bob = await connect(guarded, BOB)
    try:
        create = {"key": key, "name": "Dots", "engine": "simulator"}
        requests = [("session.create", create), *((e, {"key": key}) for e in KEY_REQUESTS)]
        for event, payload in requests:
            ack = await bob.call(event, payload)
            assert ack["ok"] is False and ack["error"]["code"] == "invalid_key", (event, ack)
    finally:
        await bob.close()
    for path in (f"/api/sessions/{key}", f"/api/sessions/{key}/history"):
        status, body = await raw_get(guarded, path, BOB)
        assert (status, body["error"]["code"]) == (400, "invalid_key"), (path, body)


# -- 10: the store is its user's alone -------------------------------------------------


def modes(root: Path) -> dict[str, str]:
    """Every entry under `root` (and itself) with its permission bits, in octal."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def private(entries: dict[str, str], root: Path) -> dict[str, str]:
    """The entries that others could read: not 0700 directories, not 0600 files."""
    return {
        name: mode
        for name, mode in entries.items()
        if mode != ("0o700" if (root / name).is_dir() else "0o600")
    }


async def test_the_store_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    previous = os.umask(0o022)  # the usual umask: files 0644, directories 0755
    try:
        async with running(guarded_settings(data)) as server:
            alice = await connect(server, ALICE)
            try:
                await pair_as(server, alice, unique_key(), ALICE)
            finally:
                await alice.close()
            entries = modes(data)
            assert any(name.endswith("-wal") for name in entries), entries
            assert private(entries, data) == {}
    finally:
        os.umask(previous)


async def test_a_store_left_readable_is_made_private_at_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with running(guarded_settings(data)):
        pass
    data.chmod(0o755)
    for path in data.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    async with running(guarded_settings(data)):
        assert private(modes(data), data) == {}


# -- 3: deployments sharing one Redis ----------------------------------------------------


def needs_redis() -> None:
    if not redis_available():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")


async def cross_talk(one: Settings, two: Settings) -> list[str]:
    """The same key created on both servers; the first's device is paired. What the
    client of the second heard that its own session did not say."""
    key = unique_key()
    async with two_servers(one, two) as (first, a, second, b):
        request = {"key": key, "name": "P", "engine": "simulator"}
        assert (await a.call("session.create", request))["ok"]
        assert (await b.call("session.create", request))["ok"]
        await a.wait_for("session.qr")
        await b.wait_for("session.qr")
        code = decode_qr((await a.wait_for("session.qr"))["qr"])
        await first.post(f"/api/simulator/devices/{key}/scan", {"code": code})
        await a.wait_for("session.ready")
        with pytest.raises(TimeoutError):
            await b.wait_for("session.ready", timeout=1.5)
        own = second.pairgate.simulator.current_code(key)
        heard = [decode_qr(data["qr"]) for name, data in b.events if name == "session.qr"]
        return [name for name, _ in b.events if name != "session.qr"] + [
            c for c in heard if c != own
        ]


@asynccontextmanager
async def two_servers(
    one: Settings, two: Settings
) -> AsyncIterator[tuple[Server, Client, Server, Client]]:
    """Two servers, each with a connected client: (first, its client, second, its client)."""
    async with running(one) as first, running(two) as second:
        a = await Client().connect(first.url)
        b = await Client().connect(second.url)
        try:
            yield first, a, second, b
        finally:
            await a.close()
            await b.close()


def redis_settings(data_dir: Path, **store: Any) -> Settings:
    return Settings(
        simulate=True,
        sim_qr_timeouts=(30.0,),
        data_dir=data_dir,
        redis_url=SecretStr(REDIS_URL),
        recover=False,
        **store,
    )


async def test_two_sqlite_deployments_on_one_redis_do_not_hear_each_other(
    tmp_path: Path,
) -> None:
    needs_redis()
    heard = await cross_talk(redis_settings(tmp_path / "a"), redis_settings(tmp_path / "b"))
    assert heard == ["session.created"], heard


async def test_two_postgres_deployments_on_one_redis_do_not_hear_each_other(
    tmp_path: Path,
) -> None:
    needs_redis()
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as one, postgres_schema() as two:
        heard = await cross_talk(
            redis_settings(tmp_path / "a", database_url=SecretStr(f"{POSTGRES_URL}?schema={one}")),
            redis_settings(tmp_path / "b", database_url=SecretStr(f"{POSTGRES_URL}?schema={two}")),
        )
    assert heard == ["session.created"], heard


async def test_two_processes_of_one_deployment_still_share_one_channel(tmp_path: Path) -> None:
    """The control: same schema (one deployment), so the second process's client of the
    key hears the first's device (fan-out between processes works as before)."""
    needs_redis()
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as schema:
        url = SecretStr(f"{POSTGRES_URL}?schema={schema}")
        one = redis_settings(tmp_path / "a", database_url=url)
        two = redis_settings(tmp_path / "b", database_url=url)
        key = unique_key()
        async with two_servers(one, two) as (first, a, _, b):
            request = {"key": key, "name": "P", "engine": "simulator"}
            assert (await a.call("session.create", request))["ok"]
            code = decode_qr((await a.wait_for("session.qr"))["qr"])
            assert (await b.call("session.join", {"key": key}))["ok"]
            await first.post(f"/api/simulator/devices/{key}/scan", {"code": code})
            assert await b.wait_for("session.ready") == {"key": key}


def test_the_default_channel_names_the_store_without_its_secrets(tmp_path: Path) -> None:
    one = Settings(database_url=SecretStr("postgresql://u:hunter2@db:5432/app?schema=a"))
    same = Settings(database_url=SecretStr("postgresql://v:other@db:5432/app?schema=a"))
    other = Settings(database_url=SecretStr("postgresql://u:hunter2@db:5432/app?schema=b"))
    assert one.fanout_channel() == same.fanout_channel() != other.fanout_channel()
    assert re.fullmatch(r"pairgate-[0-9a-f]{16}", one.fanout_channel())
    assert (
        Settings(data_dir=tmp_path / "a").fanout_channel()
        != Settings(data_dir=tmp_path / "b").fanout_channel()
    )
    assert Settings(redis_channel="mine").fanout_channel() == "mine"


# -- stores written before keys could change hands --------------------------------------


def test_a_restarted_event_stored_without_an_owner_still_loads(tmp_path: Path) -> None:
    """`Restarted` gained `owner`: events stored before that load as the same owner's."""
    database = tmp_path / "old.sqlite3"
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(database)}
    sessions = DeviceSessions(env=env)
    sessions.create("old", "Phone", "simulator", "alice")
    sessions.update("old", lambda s: s.disconnect(DisconnectReason.SESSION_REVOKED))
    sessions.update("old", lambda s: s.restart("Again", "simulator"))
    sessions.close()
    with sqlite3.connect(database) as db:
        (rowid, state), *_ = db.execute(
            "SELECT rowid, state FROM stored_events WHERE topic LIKE '%Restarted'"
        ).fetchall()
        fields = json.loads(state)
        assert fields.pop("owner") == "alice"
        db.execute(
            "UPDATE stored_events SET state = ? WHERE rowid = ?",
            (json.dumps(fields).encode(), rowid),
        )
    reopened = DeviceSessions(env=env)
    try:
        session = reopened.get("old")
        assert (session.owner, session.name, session.tenure_from) == ("alice", "Again", 1)
        assert [r["type"] for r in session_history(reopened.history("old"))] == [
            "SessionCreated",
            "Disconnected",
            "Restarted",
        ]
    finally:
        reopened.close()
