"""What the operator console reads, against a real server with two identities: the list's
search (and attacks on it), GET /api/stats, and `console.watch` → `session.changed`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from adapters.console_payloads import SessionChanged
from entrypoints.settings import Settings
from tests.docs import doc_block
from tests.helpers import Client, Server, decode_qr, running, start_server, unique_key

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
TOKENS = SecretStr(f"alice:{ALICE},bob:{BOB}")


@pytest.fixture
async def server(store_settings: dict[str, object]) -> AsyncIterator[Server]:
    settings = Settings(
        simulate=True, sim_qr_timeouts=(30.0,), tokens=TOKENS, rate_limit_http="", **store_settings
    )
    running_server = await start_server(settings)
    yield running_server
    await running_server.stop()


@pytest.fixture
async def one_server(tmp_path: Path) -> AsyncIterator[Server]:
    """For what does not depend on the store (its queries are the search's)."""
    settings = Settings(
        simulate=True, sim_qr_timeouts=(30.0,), tokens=TOKENS, rate_limit_http="", data_dir=tmp_path
    )
    async with running(settings) as running_server:
        yield running_server


async def pair_as(server: Server, client: Client, key: str, token: str = ALICE) -> None:
    ack = await client.call("session.create", {"key": key, "name": "Phone", "engine": "simulator"})
    assert ack["ok"], ack
    code = decode_qr((await client.wait_for("session.qr"))["qr"])
    scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code}, token)
    assert scanned.is_success, scanned.text
    await client.wait_for("session.ready")


def http(server: Server, token: str = ALICE) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=server.url, timeout=10, headers=headers)


async def create(client: httpx.AsyncClient, key: str, name: str) -> None:
    seed = {"key": key, "name": name, "engine": "simulator"}
    assert (await client.post("/api/sessions", json=seed)).status_code == 201


async def listed(client: httpx.AsyncClient, **params: str) -> list[str]:
    answer = await client.get("/api/sessions", params=params)
    assert answer.status_code == 200, answer.text
    return sorted(row["key"] for row in answer.json()["sessions"])


async def test_search_matches_a_key_or_name_prefix_of_the_caller_s_sessions_only(
    server: Server, store_settings: dict[str, object]
) -> None:
    tag = unique_key("s").replace("-", "")
    mine = [f"{tag}-kitchen", f"{tag}-front", f"x{tag}"]
    async with http(server) as alice, http(server, BOB) as bob:
        await create(alice, mine[0], "Kitchen tablet")
        await create(alice, mine[1], "Front desk")
        await create(alice, mine[2], f"{tag} spare")  # the tag starts its name, not its key
        await create(bob, f"{tag}-bob", "Bob's")
        encrypted = "cipher_key" in store_settings
        # Keys and names encrypted at rest: a search is a whole key, nothing else.
        expected = [] if encrypted else sorted(mine)
        assert await listed(alice, q=tag) == expected
        assert await listed(alice, q=mine[1]) == [mine[1]]
        assert await listed(alice, q=f"{tag}-kitchen", engine="simulator") == [mine[0]]
        assert await listed(alice, q=f"{tag}-kitchen", engine="baileys") == []
        assert await listed(alice, q=f"{tag}-kitchen", state="ready") == []
        if not encrypted:
            assert await listed(alice, q="Kitchen") == [mine[0]]
            assert await listed(alice, q="kitchen") == []  # case-sensitive
        # Another identity's sessions: never, by key, by name, by prefix.
        assert await listed(bob, q=mine[0]) == []
        assert await listed(bob, q="Kitchen") == []
        assert await listed(alice, q=f"{tag}-bob") == []
        # Wildcards and quotes are characters like any other.
        for odd in ["%", "_", f"{tag}%", "' OR '1'='1", "*", "\\", "ü🙂"]:
            assert await listed(alice, q=odd) == [], odd


async def test_a_bad_search_is_a_typed_refusal(one_server: Server) -> None:
    async with http(one_server) as alice:
        for bad in ["", "a" * 129, "line\nbreak", "\x00", "\x7f"]:
            answer = await alice.get("/api/sessions", params={"q": bad})
            assert answer.status_code == 400, bad
            assert answer.json()["error"]["code"] == "invalid_payload"
        assert (await alice.get("/api/sessions", params={"q": "a" * 128})).status_code == 200


async def test_stats_count_the_caller_s_sessions_and_pairings(one_server: Server) -> None:
    server = one_server
    async with http(server) as alice, http(server, BOB) as bob:
        before = (await alice.get("/api/stats")).json()
        client = await Client().connect(server.url, auth={"token": ALICE})
        try:
            await pair_as(server, client, unique_key("ready"))
        finally:
            await client.close()
        await create(alice, unique_key("waiting"), "Waiting")
        after = (await alice.get("/api/stats")).json()
        assert after["ok"] is True
        assert set(after["states"]) == {"created", "qr", "authenticated", "ready", "disconnected"}
        assert after["states"]["ready"] == before["states"]["ready"] + 1
        total = sum(after["states"].values())
        assert total == sum(before["states"].values()) + 2
        recent, earlier = after["last_hour"], before["last_hour"]
        assert recent["started"] == earlier["started"] + 2
        assert recent["completed"] == earlier["completed"] + 1
        assert recent["expired"] == earlier["expired"]
        theirs = (await bob.get("/api/stats")).json()
        assert sum(theirs["states"].values()) == 0
        assert theirs["last_hour"] == {**theirs["last_hour"], "started": 0, "completed": 0}
        async with httpx.AsyncClient(base_url=server.url) as nobody:
            assert (await nobody.get("/api/stats")).status_code == 401


async def test_console_watch_hears_the_identity_s_sessions_and_nothing_else(
    one_server: Server,
) -> None:
    server = one_server
    alice_console = await Client().connect(server.url, auth={"token": ALICE})
    bob_console = await Client().connect(server.url, auth={"token": BOB})
    alice = await Client().connect(server.url, auth={"token": ALICE})
    try:
        assert await alice_console.call("console.watch", {}) == {"ok": True}
        assert await bob_console.call("console.watch") == {"ok": True}
        refused = await alice_console.call("console.watch", "all of them")
        assert refused["error"]["code"] == "invalid_payload"
        unknown = await alice_console.call("console.everything", {})
        assert unknown["error"]["code"] == "invalid_payload"
        key = unique_key("watched")
        await pair_as(server, alice, key)
        seen = []
        while not seen or seen[-1]["state"] != "ready":
            seen.append(await alice_console.wait_for("session.changed", len(seen) + 1))
        assert [row["state"] for row in seen] == ["created", "qr", "authenticated", "ready"]
        assert seen[-1]["key"] == key and seen[-1]["name"] == "Phone"
        assert seen[-1]["engine"] == "simulator" and seen[-1]["reason"] is None
        assert [row["version"] for row in seen] == [1, 2, 3, 4]
        documented = json.loads(doc_block("session-changed"))  # docs/protocol.md
        assert SessionChanged.model_validate(documented).model_dump() == documented
        assert list(documented) == list(seen[-1])
        # The console hears rows, not the key's room: no QR image, no seed events.
        assert set(alice_console.names()) == {"session.changed", "session.error"}
        async with http(server) as rest:
            assert (await rest.post(f"/api/sessions/{key}/logout")).status_code == 200
        ended = await alice_console.wait_for("session.changed", 5)
        assert (ended["state"], ended["reason"]) == ("disconnected", "user logged out")
        # The seed's payload in the key's room, unchanged.
        assert await alice.wait_for("session.disconnected") == {
            "key": key,
            "reason": "user logged out",
        }
        # Bob's own change, emitted after all of Alice's: the only one his console hears.
        async with http(server, BOB) as bob:
            await create(bob, unique_key("bob"), "Bob's")
        heard = await bob_console.wait_for("session.changed")
        assert heard["key"].startswith("bob-")
        assert [name for name in bob_console.names() if name == "session.changed"] == [
            "session.changed"
        ]
    finally:
        for client in (alice_console, bob_console, alice):
            await client.close()
