"""Attacks on history (issue 19, items 6 and 16), against a real server and its store.

- A key with thousands of events made every history reply the whole stream (0.47 MB),
  and eight readers of it starved every other identity of CPU: history is read a bounded
  page at a time, and the HTTP API is rate-limited per identity.
- Device names with bidi controls, line separators or `  engine=x` forged fields and lines
  in `pairgate history`'s table: the table escapes and quotes what it did not write.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import statistics
import sys
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.application.history import session_history
from domain.application.sessions import DeviceSessions
from domain.model.session import DeviceSession, DisconnectReason
from entrypoints.cli import main
from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, running, unique_key

TOKENS = "auditor:auditor-token,calm:calm-token"
AUDITOR = {"authorization": "Bearer auditor-token"}
CALM = {"authorization": "Bearer calm-token"}
EVENTS = 3126  # as long as the key in the issue's report


def record_history(sessions: DeviceSessions, key: str, owner: str, count: int) -> None:
    """`count` events straight into the server's store: created, QR after QR, expired
    (ended, so that no recovery or takeover adds an event of its own)."""
    sessions.create(key, "Long history", "simulator", owner)
    now = datetime.now(UTC)

    def issue(session: DeviceSession, numbers: range) -> None:
        for number in numbers:
            session.issue_qr(f"2@code-{number},k1,k2,k3", 20.0, now)

    # A few hundred events per transaction (snapshots are still taken at their versions):
    # one transaction each made this set-up half a minute on PostgreSQL.
    for first in range(0, count - 2, 250):
        numbers = range(first, min(first + 250, count - 2))
        sessions.update(key, lambda session, ns=numbers: issue(session, ns))
    sessions.update(key, lambda session: session.disconnect(DisconnectReason.QR_EXPIRED))


@dataclass
class LongHistory:
    server: Server
    key: str

    async def get(self, query: str = "", headers: dict[str, str] = AUDITOR) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            return await http.get(f"/api/sessions/{self.key}/history{query}", headers=headers)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        simulate=True, sim_qr_timeouts=(30.0,), data_dir=tmp_path, tokens=TOKENS, **overrides
    )


@pytest.fixture
async def long_history(tmp_path: Path) -> AsyncIterator[LongHistory]:
    # No rate limits: these tests page quickly; the limits have tests of their own.
    async with running(settings(tmp_path, rate_limit_http="", rate_limit_history="")) as server:
        key = unique_key("long")
        record_history(server.pairgate.sessions, key, "auditor", EVENTS)
        yield LongHistory(server, key)


@pytest.fixture
async def long_history_in_each_store(
    store_settings: dict[str, Any],
) -> AsyncIterator[LongHistory]:
    """The same on SQLite, PostgreSQL and PostgreSQL with the cipher (tests/conftest.py)."""
    every_store = Settings(
        simulate=True,
        sim_qr_timeouts=(30.0,),
        tokens=TOKENS,
        rate_limit_http="",
        rate_limit_history="",
        **store_settings,
    )
    async with running(every_store) as server:
        key = unique_key("long")
        record_history(server.pairgate.sessions, key, "auditor", EVENTS)
        yield LongHistory(server, key)


def versions(events: list[dict[str, Any]]) -> list[int]:
    return [event["version"] for event in events]


async def test_a_history_reply_is_one_bounded_page(long_history: LongHistory) -> None:
    first = await long_history.get()
    assert first.status_code == 200, first.text
    assert versions(first.json()["events"]) == list(range(1, 101))  # the default page
    assert first.json()["next"] == 100
    assert len(first.content) < 64_000

    biggest = await long_history.get("?limit=1000")  # the largest page there is
    assert versions(biggest.json()["events"]) == list(range(1, 1001))
    assert biggest.json()["next"] == 1000
    assert len(biggest.content) < 640_000

    async with clients(long_history.server.url, auth={"token": "auditor-token"}) as [client]:
        ack = await client.call("session.history", {"key": long_history.key})
        assert ack["ok"] is True
        assert versions(ack["events"]) == list(range(1, 101)) and ack["next"] == 100
        last = {"key": long_history.key, "after": EVENTS - 26, "limit": 1000}
        ack = await client.call("session.history", last)
        assert versions(ack["events"]) == list(range(EVENTS - 25, EVENTS + 1))
        assert ack["next"] is None


async def test_paging_returns_every_event_exactly_once_in_order(
    long_history_in_each_store: LongHistory,
) -> None:
    long_history = long_history_in_each_store
    everything = session_history(long_history.server.pairgate.sessions.history(long_history.key))

    async def walk(query: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            reply = await long_history.get(f"?after={after}&{query}")
            assert reply.status_code == 200, reply.text
            events += reply.json()["events"]
            after = reply.json()["next"]
        return events

    # Pages that start on, just after and between snapshots (every 50 events) alike;
    # each page's states continue from the one before it.
    assert await walk("limit=487") == everything
    assert await walk("limit=1000") == everything
    assert await walk("limit=100&at=1234") == everything[:1234]

    async with clients(long_history.server.url, auth={"token": "auditor-token"}) as [client]:
        events: list[dict[str, Any]] = []
        request: dict[str, Any] = {"key": long_history.key, "limit": 999}
        while True:
            ack = await client.call("session.history", request)
            events += ack["events"]
            if ack["next"] is None:
                break
            request["after"] = ack["next"]
        assert events == everything


async def test_the_cli_pages_through_a_long_history(
    long_history: LongHistory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = session_history(long_history.server.pairgate.sessions.history(long_history.key))
    store = ["--data-dir", str(tmp_path)]
    events: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        argv = ["history", long_history.key, "--after", str(after), "--limit", "1000", "--json"]
        assert main(argv + store) == 0
        page = json.loads(capsys.readouterr().out)
        events += page["events"]
        after = page["next"]
    assert events == everything

    assert main(["history", long_history.key, *store]) == 0  # a table of the first page
    shown = capsys.readouterr()
    assert len(shown.out.splitlines()) == 1 + 100
    assert shown.err == "pairgate: more events follow: --after 100\n"

    assert main(["history", long_history.key, "--limit", "1001", *store]) == 1
    assert capsys.readouterr().err == "pairgate: limit must be 1 to 1000 events, not 1001\n"


async def test_bad_paging_values_are_refused_with_a_typed_error(tmp_path: Path) -> None:
    async with running(settings(tmp_path, rate_limit_http="", rate_limit_history="")) as server:
        key = unique_key()
        record_history(server.pairgate.sessions, key, "auditor", 20)
        history = LongHistory(server, key)
        for query in [
            "limit=0",
            "limit=-1",
            "limit=1001",
            "limit=ten",
            "limit=1.5",
            "limit=",
            "after=-1",
            "after=x",
            "after=21",  # past the last version
            "after=99999999999999999999999999",
            "at=0",
            "at=21",
        ]:
            reply = await history.get("?" + query)
            assert reply.status_code == 400, (query, reply.text)
            error = reply.json()["error"]
            assert error["code"] == "invalid_payload" and error["message"], query
        assert (await history.get("?after=20")).json() == {
            "ok": True,
            "key": key,
            "events": [],
            "next": None,
        }
        async with clients(server.url, auth={"token": "auditor-token"}) as [client]:
            for bad in [{"limit": "10"}, {"limit": 0}, {"limit": 1001}, {"after": -1}]:
                ack = await client.call("session.history", {"key": key, **bad})
                assert ack["ok"] is False, bad
                assert ack["error"]["code"] == "invalid_payload", bad


# The limits below are per hour: the counters are sliding windows, so a window boundary
# crossed mid-test would already refund part of the allowance (as it should).
async def test_the_http_api_is_rate_limited_per_identity(tmp_path: Path) -> None:
    async with running(settings(tmp_path, rate_limit_http="5/hour")) as server:
        key = unique_key()
        record_history(server.pairgate.sessions, key, "auditor", 3)
        history = LongHistory(server, key)
        replies = [await history.get() for _ in range(8)]
        assert [r.status_code for r in replies] == [200] * 5 + [429] * 3
        refused = replies[-1]
        assert refused.json()["ok"] is False
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "retry in" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        # Another identity's allowance is its own (its answer: the key is not its own).
        other = await history.get(headers=CALM)
        assert other.status_code in (403, 404) and other.json()["error"]["code"] != "rate_limited"


async def test_without_tokens_the_http_api_is_rate_limited_per_address(tmp_path: Path) -> None:
    open_settings = Settings(
        simulate=True, sim_qr_timeouts=(30.0,), data_dir=tmp_path, rate_limit_http="3/hour"
    )
    async with running(open_settings) as server:
        key = unique_key()
        record_history(server.pairgate.sessions, key, "default", 3)

        async def statuses(address: str, count: int) -> list[int]:
            transport = httpx.AsyncHTTPTransport(local_address=address)
            async with httpx.AsyncClient(base_url=server.url, transport=transport) as http:
                path = f"/api/sessions/{key}/history"
                return [(await http.get(path)).status_code for _ in range(count)]

        assert await statuses("127.0.0.2", 5) == [200, 200, 200, 429, 429]
        assert await statuses("127.0.0.3", 3) == [200, 200, 200]


async def test_history_records_are_rationed_per_identity_across_transports(
    tmp_path: Path,
) -> None:
    """The largest pages cost the most: the allowance counts records, not requests, and
    one identity's HTTP and Socket.IO reads draw on the same allowance."""
    rate = settings(tmp_path, rate_limit_http="", rate_limit_history="2500/hour")
    async with running(rate) as server:
        key = unique_key()
        record_history(server.pairgate.sessions, key, "auditor", 5)
        history = LongHistory(server, key)
        assert (await history.get("?limit=1000")).status_code == 200
        assert (await history.get("?limit=1000")).status_code == 200
        refused = await history.get("?limit=1000")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        assert (await history.get("?limit=500")).status_code == 200  # 2,500 in all
        async with clients(server.url, auth={"token": "auditor-token"}) as [auditor]:
            ack = await auditor.call("session.history", {"key": key, "limit": 1})
            assert ack["ok"] is False and ack["error"]["code"] == "rate_limited"
            assert 0 < ack["error"]["retry_after"] <= 3600
        async with clients(server.url, auth={"token": "calm-token"}) as [other]:
            ack = await other.call("session.history", {"key": key, "limit": 1000})
            assert ack["error"]["code"] != "rate_limited"  # its own allowance: not its key


# Eight readers from their own process, as fast as the server answers and ignoring every
# Retry-After; it says "flooding" once each has had an answer, and stops at a line on stdin.
READERS = """
import asyncio, json, sys, time, httpx

async def main():
    url, token, path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    statuses, biggest, answered, stop = {}, [0], set(), asyncio.Event()

    async def reader(number):
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while not stop.is_set():
                reply = await http.get(path)
                statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
                biggest[0] = max(biggest[0], len(reply.content))
                if number not in answered:
                    answered.add(number)
                    if len(answered) == count:
                        print("flooding", flush=True)

    async def stop_on_stdin():
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        stop.set()

    await asyncio.gather(stop_on_stdin(), *(reader(n) for n in range(count)))
    print(json.dumps({"statuses": statuses, "biggest": biggest[0]}), flush=True)

asyncio.run(main())
"""
SAMPLES = 25


async def create_to_qr_ms(client: Client, served: int) -> float:
    """One create→QR of a new key, in ms (`served`: QR codes this client had before)."""
    key = unique_key("calm")
    started = time.perf_counter()
    ack = await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
    assert ack["ok"], ack
    qr = await client.wait_for("session.qr", served + 1, timeout=30)
    elapsed = (time.perf_counter() - started) * 1000
    assert qr["key"] == key
    await client.call("session.delete", {"key": key})
    await asyncio.sleep(0.15)  # a calm client: a few requests a second
    return elapsed


async def test_history_readers_leave_other_identities_fast(tmp_path: Path) -> None:
    """Numbers, printed: another identity's create→QR, quiet and while eight readers of a
    3,126-event history hammer the HTTP API from their own process (default settings)."""
    async with running(settings(tmp_path)) as server:
        key = unique_key("long")
        record_history(server.pairgate.sessions, key, "auditor", EVENTS)
        calm = await Client().connect(server.url, auth={"token": "calm-token"})
        readers = None
        try:
            await create_to_qr_ms(calm, 0)  # warm-up: imports, first PNG
            quiet = [await create_to_qr_ms(calm, n) for n in range(1, SAMPLES + 1)]
            path = f"/api/sessions/{key}/history?limit=1000"
            readers = await asyncio.create_subprocess_exec(
                sys.executable, "-c", READERS, server.url, "auditor-token", path, "8",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert readers.stdout is not None and readers.stdin is not None
            assert await asyncio.wait_for(readers.stdout.readline(), 60) == b"flooding\n"
            start = SAMPLES + 1
            loaded = [await create_to_qr_ms(calm, n) for n in range(start, start + SAMPLES)]
            readers.stdin.write(b"stop\n")
            await readers.stdin.drain()
            summary = json.loads(await asyncio.wait_for(readers.stdout.readline(), 60))
            await readers.wait()
        finally:
            if readers is not None and readers.returncode is None:
                readers.kill()
                await readers.wait()
            await calm.close()
    quiet_p50, loaded_p50 = statistics.median(quiet), statistics.median(loaded)
    print(
        f"\ncreate→QR of a calm identity: p50 {quiet_p50:.1f} ms quiet, {loaded_p50:.1f} ms "
        f"(max {max(loaded):.1f}) while 8 readers of a {EVENTS}-event history got "
        f"{summary['statuses']} (largest reply {summary['biggest']:,} bytes)"
    )
    # The behaviour; the latencies are printed, not asserted (a loaded machine's timing
    # is no test): the readers were served pages, not whole histories, and were held to
    # the history allowance; every calm create meanwhile was answered with its code
    # (create_to_qr_ms asserts both).
    assert summary["biggest"] < 640_000
    assert summary["statuses"].get("429", 0) > 0, summary
    assert len(loaded) == SAMPLES


# Names a client may give its device that a terminal would show as something else.
FORGING_NAMES = [
    "  engine=x  owner=y",  # forges two fields
    "evil\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE: the rest is shown reversed
    "one\u2028999      2026-01-01 00:00:00.000  Ready  ready",  # LINE SEPARATOR: a forged row
    "para\u2029graph",  # PARAGRAPH SEPARATOR
    "quiet\u200b\u2066isolate\u2069\ufeff",  # zero width space, bidi isolate, BOM
    'it\'s "quoted" = fine',
]
UNSAFE = {"Cc", "Cf", "Zl", "Zp"}
# A detail: `field=value`, the value either bare (no spaces or quotes) or a quoted literal.
FIELD = re.compile(r"""[a-z_]+=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s'"]+)""")


async def test_stored_names_cannot_forge_columns_in_the_cli_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(Settings(simulate=True, sim_qr_timeouts=(30.0,), data_dir=tmp_path)) as (
        server
    ):
        keys = [unique_key() for _ in FORGING_NAMES]
        async with clients(server.url) as [client]:
            for key, name in zip(keys, FORGING_NAMES, strict=True):
                request = {"key": key, "name": name, "engine": "simulator"}
                ack = await client.call("session.create", request)
                assert ack["ok"] is True, ack
                await client.call("session.delete", {"key": key})

        for key, name in zip(keys, FORGING_NAMES, strict=True):
            assert main(["history", key, "--data-dir", str(tmp_path)]) == 0
            out = capsys.readouterr().out
            unsafe = {c for c in out if c != "\n" and unicodedata.category(c) in UNSAFE}
            assert not unsafe, f"raw {[unicodedata.name(c, hex(ord(c))) for c in unsafe]}"
            header, *rows = out.splitlines()  # splitlines() also splits at U+2028/U+2029
            stored = server.pairgate.sessions.history(key)
            assert [row.split()[3] for row in rows] == [type(e).__name__ for e in stored]
            details = rows[0].split(None, 5)[5]
            fields = [match.group(0) for match in FIELD.finditer(details)]
            assert "  ".join(fields) == details, details  # nothing but fields
            values = dict(field.split("=", 1) for field in fields)
            assert list(values) == ["key", "name", "engine", "owner"], details
            assert (values["key"], values["engine"], values["owner"]) == (
                key,
                "simulator",
                "default",
            )
            assert ast.literal_eval(values["name"]) == name  # quoted, escaped, all there
