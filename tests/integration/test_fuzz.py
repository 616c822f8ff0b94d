"""Fuzzing the Socket.IO protocol: thousands of hypothesis-made requests of every shape.

Every request to a `session.*` event is answered with an acknowledgement (`ok` true, or
false with one of the protocol's error codes and the same `session.error`), anything else
is ignored; the server never logs a traceback, its memory stays flat, and the seed flow
still works afterwards. The server runs on its own event loop in a thread, so that
hypothesis can drive it from an ordinary test function.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adapters.payloads import ERROR_CODES
from entrypoints.settings import Settings
from tests.helpers import Client, Server, decode_qr, rss_mb, running_in_thread, unique_key

T = TypeVar("T")
# More for a long run: PAIRGATE_FUZZ_EXAMPLES=100000 pytest tests/integration/test_fuzz.py
EXAMPLES = int(os.environ.get("PAIRGATE_FUZZ_EXAMPLES", "1500"))
# Thousands of examples take a minute or two on a slow machine: more than the suite's
# default per-test timeout, which is there to catch a hung test, not a long one.
pytestmark = pytest.mark.timeout(600)
REQUESTS = ["session.create", "session.join", "session.logout", "session.delete"]
REQUESTS += ["session.history"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=20_000)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
# Near misses: the right fields with wrong types, bad keys, unknown engines, odd phones.
near_misses = st.fixed_dictionaries(
    {
        "key": st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), json_scalars),
        "name": json_values,
        "engine": st.sampled_from(["simulator", "baileys", "nope", ""]) | json_scalars,
    },
    optional={"phone": json_scalars, "at": json_scalars, "extra": json_values},
)
payloads = json_values | near_misses | st.binary(max_size=2000)
events = st.sampled_from(REQUESTS) | st.text(max_size=30).map(lambda s: "session." + s)


def fits(payload: Any) -> bool:
    """Whether a packet carrying `payload` is within PAIRGATE_MAX_PAYLOAD_BYTES: a larger
    one closes the connection instead of being answered (test_attack_transport)."""
    if isinstance(payload, bytes):
        return True
    encoded = json.dumps(payload, separators=(",", ":"))  # as python-socketio sends it
    return len(encoded) < Settings().max_payload_bytes - 1024  # room for the event name


class Tracebacks(logging.Handler):
    """Every record of level ERROR or worse, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Target:
    loop: asyncio.AbstractEventLoop
    server: Server
    client: Client

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    config = Settings(
        simulate=True,
        data_dir=data_dir,
        rate_limit_connection="",
        rate_limit_identity="",
        rate_limit_http="",
        rate_limit_history="",  # like the others: the fuzzer's own pace is no attack
    )
    with running_in_thread(config) as threaded:
        target = Target(threaded.loop, threaded.server, Client())
        target.run(target.client.connect(threaded.server.url))
        try:
            yield target
        finally:
            target.run(target.client.close())


# The server, in its own thread, uses the `random` module while hypothesis draws examples;
# hypothesis takes that for a strategy using it. Nothing here seeds or replays it.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_random_requests_get_typed_answers_and_leave_the_server_well(target: Target) -> None:
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    sent = {"requests": 0, "refused": 0, "other": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(event=events, payload=payloads)
    def one_request(event: str, payload: Any) -> None:
        assume(fits(payload))
        errors_before = len(target.client.names())
        ack = target.run(target.client.call(event, payload, timeout=10))
        sent["requests"] += 1
        assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
        if not ack["ok"]:
            sent["refused"] += 1
            assert ack["error"]["code"] in ERROR_CODES, ack
            assert ack["error"]["code"] != "internal", ack

            async def refusal() -> Any:
                return await target.client.wait_for("session.error", sent["refused"])

            error = target.run(refusal())
            assert set(error) == {"key", "code", "message"}
            assert error["code"] == ack["error"]["code"]
        assert len(target.client.names()) >= errors_before

    @settings(max_examples=300, deadline=None, database=None)
    @given(event=st.text(max_size=30).filter(lambda e: not e.startswith("session.")))
    def other_event(event: str) -> None:
        # Not pairgate's: ignored, without an answer and without harm.
        target.run(target.client.sio.emit(event, {"key": "x"}))
        sent["other"] += 1

    try:
        one_request()  # warm-up: caches, pools and hypothesis itself settle
        gc.collect()
        before = rss_mb()
        one_request()
        other_event()
        gc.collect()
        after = rss_mb()
    finally:
        logging.getLogger().removeHandler(tracebacks)

    print(f"\nfuzzed {sent}; RSS {before:.0f} → {after:.0f} MB")
    assert [r.getMessage() for r in tracebacks.records] == []
    assert after - before < 40

    # The seed flow still works on the same server, for a fresh client.
    async def seed_flow() -> None:
        client = await Client().connect(target.server.url)
        try:
            key = unique_key()
            seed = {"key": key, "name": "My Device", "engine": "baileys"}
            assert (await client.call("session.create", seed))["ok"] is True
            code = decode_qr((await client.wait_for("session.qr"))["qr"])
            await target.server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
            await client.wait_for("session.ready")
        finally:
            await client.close()

    target.run(seed_flow())


http_text = st.text(max_size=80) | st.text(alphabet="0123456789-+.e", max_size=12)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_random_http_requests_get_typed_answers(target: Target) -> None:
    """The HTTP API and the simulator's endpoints: any key, version and body."""
    statuses: dict[int, int] = {}
    tracebacks = Tracebacks()
    logging.getLogger().addHandler(tracebacks)

    @settings(max_examples=EXAMPLES // 3, deadline=None, database=None)
    @given(
        route=st.sampled_from(["", "/history", "/scan", "/pair", "/logout", "/drop", "/revoke"]),
        key=http_text,
        at=st.none() | http_text,
        body=st.none() | json_values | st.binary(max_size=200),
    )
    def one_call(route: str, key: str, at: str | None, body: Any) -> None:
        async def call() -> httpx.Response:
            async with httpx.AsyncClient(base_url=target.server.url, timeout=10) as http:
                quoted = quote(key, safe="")
                if route in ("", "/history"):
                    params = {"at": at} if at is not None else None
                    return await http.get(f"/api/sessions/{quoted}{route}", params=params)
                url = f"/api/simulator/devices/{quoted}{route}"
                if isinstance(body, bytes):
                    return await http.post(url, content=body)
                return await http.post(url, json=body)

        response = target.run(call())
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        # 413: a simulator move's body over its 16 KB
        assert response.status_code in (200, 400, 404, 405, 409, 413), response.text
        answer = response.json()
        assert answer["ok"] is (response.status_code == 200)
        if not answer["ok"]:
            assert answer["error"]["code"] and answer["error"]["message"]

    try:
        one_call()
    finally:
        logging.getLogger().removeHandler(tracebacks)
    print(f"\nHTTP statuses: {dict(sorted(statuses.items()))}")
    assert [r.getMessage() for r in tracebacks.records] == []
