"""Webhooks against a real receiver: Standard Webhooks signatures, the event as history
shows it, order per key, retries, dead letters, one identity's subscriptions only, and
URLs that point inside the network refused."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from standardwebhooks import Webhook

from entrypoints.settings import Settings
from tests.conftest import FAST_QR
from tests.docs import doc_block
from tests.e2e.service_process import free_port
from tests.helpers import Server, clients, decode_qr, running, start_server, unique_key
from tests.webhook_receiver import Receiver, receiver

T = TypeVar("T")
TOKENS = "alice:alice-token,bob:bob-token"
ALL = ["session.created", "session.qr", "session.authenticated", "session.ready",
       "session.disconnected"]  # fmt: skip


@pytest.fixture
async def hooked(store_settings: dict[str, object]) -> AsyncIterator[tuple[Server, Receiver]]:
    settings = Settings(
        simulate=True, sim_qr_timeouts=FAST_QR, tokens=TOKENS,
        webhook_allowed_networks=("127.0.0.1/32",), webhook_retry_delay=0.05,
        webhook_retry_max_delay=0.2, webhook_retry_for=1.5, **store_settings,
    )  # fmt: skip
    async with receiver() as got, running(settings) as server:
        yield server, got


async def pair_as(token: str, server: Server, key: str) -> str:
    """The seed flow to `ready` as the identity of `token`; the code's text."""
    async with clients(server.url, auth={"token": token}) as [client]:
        ack = await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
        assert ack["ok"], ack
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        scan = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code}, token)
        assert scan.is_success, scan.text
        await client.wait_for("session.ready")
    return code


async def subscribe(server: Server, token: str, **fields: Any) -> httpx.Response:
    return await server.post("/api/webhooks", fields, token=token)


async def call(server: Server, method: str, path: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        headers = {"authorization": f"Bearer {token}"}
        return await http.request(method, path, headers=headers)


async def test_a_pairing_arrives_signed_in_order_as_history_shows_it(
    hooked: tuple[Server, Receiver],
) -> None:
    server, got = hooked
    made = await subscribe(server, "alice-token", url=f"{got.url}/all", events=ALL)
    assert made.status_code == 201, made.text
    secret = made.json()["webhook"]["secret"]
    key = unique_key("hook")
    code = await pair_as("alice-token", server, key)
    sent = await got.wait_for("/all", 4)
    verifier = Webhook(secret)
    messages = [verifier.verify(r.body, r.headers) for r in sent]
    assert [m["type"] for m in messages] == ALL[:4]
    ids = [r.headers["webhook-id"] for r in sent]  # random: nothing of the key's history
    assert all(re.fullmatch("msg_[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 4
    assert [m["data"]["version"] for m in messages] == [1, 2, 3, 4]
    history = (await call(server, "GET", f"/api/sessions/{key}/history", "alice-token")).json()
    assert [m["data"] for m in messages][0] == {"key": key, **history["events"][0]}
    qr = messages[1]["data"]
    assert decode_qr(qr.pop("qr")) == code  # asked for session.qr: the image, still valid
    assert qr == {"key": key, **history["events"][1]}
    assert code not in "".join(r.body for r in sent).replace(sent[1].body, "")
    tampered = sent[0].body.replace(key, key + "x")
    with pytest.raises(Exception, match="(?i)signature"):
        verifier.verify(tampered, sent[0].headers)


async def test_a_key_that_changed_hands_reaches_its_new_owners_receiver_as_new(
    hooked: tuple[Server, Receiver],
) -> None:
    """Bob's receiver hears a key Alice had (and logged out of) exactly as a new one:
    versions from 1, a created session first, ids that tell nothing of before."""
    server, got = hooked
    made = await subscribe(server, "bob-token", url=f"{got.url}/bob", events=ALL)
    assert made.status_code == 201, made.text
    reused, fresh = unique_key("reused"), unique_key("fresh")
    await pair_as("alice-token", server, reused)
    logout = await server.post(f"/api/sessions/{reused}/logout", {}, "alice-token")
    assert logout.is_success, logout.text
    await pair_as("bob-token", server, reused)
    await pair_as("bob-token", server, fresh)
    sent = await got.wait_for("/bob", 8)

    def seen(key: str) -> list[tuple[object, ...]]:
        return [
            (m["type"], m["data"]["version"], m["data"]["type"], sorted(m["data"]))
            for m in (r.message for r in sent)
            if m["data"]["key"] == key
        ]

    assert seen(reused) == seen(fresh)
    assert [version for _, version, *_ in seen(reused)] == [1, 2, 3, 4]
    assert seen(reused)[0][2] == "SessionCreated"


async def test_one_identity_sees_and_deletes_only_its_own(hooked: tuple[Server, Receiver]) -> None:
    server, got = hooked
    made = (await subscribe(server, "alice-token", url=f"{got.url}/a", events=ALL)).json()
    hook = made["webhook"]["id"]
    listed = (await call(server, "GET", "/api/webhooks", "alice-token")).json()
    assert [w["id"] for w in listed["webhooks"]] == [hook]
    assert "secret" not in listed["webhooks"][0]
    assert (await call(server, "GET", "/api/webhooks", "bob-token")).json()["webhooks"] == []
    theirs = await call(server, "DELETE", f"/api/webhooks/{hook}", "bob-token")
    missing = await call(server, "DELETE", "/api/webhooks/wh_nothing", "bob-token")
    assert (theirs.status_code, theirs.json()) == (missing.status_code, missing.json())
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    # Bob's pairing never reaches Alice's receiver.
    await pair_as("bob-token", server, unique_key("bob"))
    assert (await call(server, "DELETE", f"/api/webhooks/{hook}", "alice-token")).json()["ok"]
    assert got.at("/a") == []


INSIDE = [
    "http://127.0.0.2/x",
    "http://[::1]/x",
    "http://169.254.169.254/latest/meta-data",
    "http://10.1.2.3/x",
    "http://192.168.0.1/x",
    "http://[::ffff:10.0.0.1]/x",
    "http://0.0.0.0/x",
    "ftp://example.com/x",
    "http://user:pass@example.com/x",
    "http:///nohost",
    "http://example.com:99999/x",
    "not a url",
]


async def test_urls_into_the_network_are_refused(hooked: tuple[Server, Receiver]) -> None:
    server, _ = hooked
    for url in INSIDE:
        refused = await subscribe(server, "alice-token", url=url, events=ALL)
        assert refused.status_code == 400, (url, refused.text)
        assert refused.json()["error"]["code"] == "invalid_payload"
        assert "pass" not in refused.text
    assert (await call(server, "GET", "/api/webhooks", "alice-token")).json()["webhooks"] == []


async def test_without_the_allow_list_loopback_names_are_refused(tmp_path: Path) -> None:
    settings = Settings(simulate=True, data_dir=tmp_path, tokens=TOKENS)
    async with running(settings) as server:
        for url in ("http://localhost:8000/hook", "http://127.0.0.1/hook"):
            refused = await subscribe(server, "alice-token", url=url, events=ALL)
            assert refused.status_code == 400, refused.text
            assert "PAIRGATE_WEBHOOK_ALLOWED_NETWORKS" in refused.json()["error"]["message"]


async def test_failures_are_retried_then_dead_lettered(hooked: tuple[Server, Receiver]) -> None:
    server, got = hooked
    got.status["/broken"] = 500
    await subscribe(server, "alice-token", url=f"{got.url}/broken", events=["session.created"])
    key = unique_key("dead")
    async with clients(server.url, auth={"token": "alice-token"}) as [client]:
        assert (
            await client.call("session.create", {"key": key, "name": "D", "engine": "simulator"})
        )["ok"]

    async def dead_letters() -> list[dict[str, Any]]:
        reply = await call(server, "GET", "/api/dead-letters", "alice-token")
        letters: list[dict[str, Any]] = reply.json()["dead_letters"]
        return letters

    [letter] = await eventually(dead_letters, 10)  # given up after retry_for, 1.5 s
    assert letter["key"] == key and letter["type"] == "session.created"
    assert letter["attempts"] >= 3 and letter["last_error"] == "HTTP 500"
    metrics = (await server.get("/metrics")).text
    assert "pairgate_webhook_dead_letters_total 1.0" in metrics
    assert "pairgate_webhook_retries_total" in metrics
    none = (await call(server, "GET", "/api/dead-letters", "bob-token")).json()
    assert none["dead_letters"] == []


async def eventually(check: Callable[[], Awaitable[T]], timeout: float) -> T:
    """`check()`'s first truthy answer, asked every 50 ms for up to `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (answer := await check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return answer


async def test_bad_requests_get_clear_errors(hooked: tuple[Server, Receiver]) -> None:
    server, got = hooked
    url = f"{got.url}/x"
    bad: list[tuple[Any, int]] = [
        ({"url": url, "events": ["session.nope"]}, 400),
        ({"url": url, "events": []}, 400),
        ({"url": url, "events": "session.ready"}, 400),
        ({"url": 5, "events": ALL}, 400),
        ({"url": url, "events": ALL, "key": "bad key"}, 400),
        ({"url": url, "events": ALL, "secret": "not-whsec"}, 400),
        ({"url": url, "events": ALL, "secret": "whsec_" + "A" * 88}, 400),  # 66 bytes
        ({"url": url, "events": ALL, "surprise": 1}, 201),  # unknown fields are ignored
        ([1, 2], 400),
        ("x" * 70_000, 413),  # beyond PAIRGATE_MAX_PAYLOAD_BYTES
    ]
    for body, status in bad:
        answer = await subscribe_raw(server, "alice-token", body)
        assert answer.status_code == status, (body, answer.text)
        if status >= 400:
            assert answer.json()["ok"] is False and answer.json()["error"]["code"]
    form = await subscribe_raw(server, "alice-token", None, content=b"url=x", media="text/plain")
    assert form.status_code == 415
    garbage = await subscribe_raw(server, "alice-token", None, content=b"{not json")
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "invalid_payload"
    nobody = await subscribe_raw(server, "wrong-token", {"url": url, "events": ALL})
    assert nobody.status_code == 401
    for query in ("limit=0", "limit=201", "limit=x", "limit=" + "1" * 5000):
        answer = await call(server, "GET", f"/api/dead-letters?{query}", "alice-token")
        assert answer.status_code == 400, (query, answer.text)


async def subscribe_raw(
    server: Server,
    token: str,
    body: Any,
    content: bytes | None = None,
    media: str = "application/json",
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        headers = {"authorization": f"Bearer {token}", "content-type": media}
        if content is None:
            return await http.post("/api/webhooks", json=body, headers=headers)
        return await http.post("/api/webhooks", content=content, headers=headers)


async def test_a_slow_receiver_slows_nobody_else(hooked: tuple[Server, Receiver]) -> None:
    server, got = hooked
    got.delay["/slow"] = 10.0
    for path in ("/slow", "/fast"):
        made = await subscribe(server, "alice-token", url=got.url + path, events=ALL)
        assert made.status_code == 201
    keys = [unique_key("busy") for _ in range(5)]
    await asyncio.gather(*(pair_as("alice-token", server, key) for key in keys))
    fast = await got.wait_for("/fast", 4 * len(keys), timeout=8)
    assert {r.message["data"]["key"] for r in fast} == set(keys)
    assert got.at("/slow") == []  # still waiting on its first answers, holding up no one


async def test_two_processes_on_postgres_deliver_each_event_once(
    store_settings: dict[str, object],
) -> None:
    if "database_url" not in store_settings or "cipher_key" in store_settings:
        pytest.skip("several processes share a PostgreSQL store (once is enough)")
    settings = Settings(
        simulate=True, sim_qr_timeouts=FAST_QR, tokens=TOKENS, follow_interval=0.2,
        webhook_allowed_networks=("127.0.0.1/32",), **store_settings,
    )  # fmt: skip
    async with receiver() as got:
        holder = await start_server(settings)  # first up: it takes the webhooks' lease
        async with running(settings) as standby:
            assert holder.pairgate.consumers.webhooks.worker.dispatching is not None
            assert standby.pairgate.consumers.webhooks.worker.dispatching is None
            made = await subscribe(standby, "alice-token", url=f"{got.url}/both", events=ALL)
            assert made.status_code == 201
            keys = [unique_key("two") for _ in range(6)]
            servers = [holder, standby] * 3
            pairings = (pair_as("alice-token", s, k) for s, k in zip(servers, keys, strict=True))
            await asyncio.gather(*pairings)
            sent = await got.wait_for("/both", 4 * len(keys))
            # The holder goes: the standby takes the lease over, and sends what follows.
            await holder.stop()
            late = unique_key("late")
            await pair_as("alice-token", standby, late)
            # Its own devices' `connection lost` (3), and the new pairing (4).
            sent = await got.wait_for("/both", 4 * len(keys) + 3 + 4)
            assert standby.pairgate.consumers.webhooks.worker.dispatching is not None
    ids = [r.headers["webhook-id"] for r in sent]
    assert len(ids) == len(set(ids)) == 4 * len(keys) + 3 + 4
    assert [r.message["data"]["key"] for r in sent].count(late) == 4
    ended = [r.message["data"] for r in sent if r.message["type"] == "session.disconnected"]
    assert sorted(e["key"] for e in ended) == sorted(keys[0::2])


async def test_the_readme_receiver_verifies_what_pairgate_sends(
    hooked: tuple[Server, Receiver],
) -> None:
    server, _ = hooked
    if "database_url" in server.pairgate.settings.model_fields_set:
        pytest.skip("the receiver is the same whatever the store")
    example = doc_block("webhook-receiver")
    printed: list[str] = []
    arrived = asyncio.Event()

    def record(*words: object) -> None:
        printed.append(" ".join(map(str, words)))
        arrived.set()

    port = free_port()
    made = await subscribe(server, "alice-token", url=f"http://127.0.0.1:{port}/hooks/pairgate",
                           events=["session.ready"])  # fmt: skip
    secret = made.json()["webhook"]["secret"]
    namespace: dict[str, Any] = {"print": record}
    exec(re.sub(r'Webhook\("whsec_[^"]*"\)', f'Webhook("{secret}")', example), namespace)
    config = uvicorn.Config(namespace["app"], port=port, log_level="warning", lifespan="off")
    serving = uvicorn.Server(config)
    task = asyncio.create_task(serving.serve())
    try:
        key = unique_key("readme")
        await pair_as("alice-token", server, key)
        await asyncio.wait_for(arrived.wait(), 10)
        (line,) = printed
        assert re.fullmatch(f"msg_[0-9a-f]{{32}} session.ready {key}", line), line
        async with httpx.AsyncClient() as http:
            forged = await http.post(
                f"http://127.0.0.1:{port}/hooks/pairgate",
                content=b'{"type":"session.ready"}',
                headers={"webhook-id": "msg_x", "webhook-timestamp": "1",
                         "webhook-signature": "v1,AAAA"},
            )  # fmt: skip
        assert forged.status_code == 400 and len(printed) == 1
    finally:
        serving.should_exit = True
        await asyncio.wait_for(task, 10)
