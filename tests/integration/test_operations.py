"""Operations: readiness, metrics, websocket-only transports and JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from entrypoints.logs import JsonFormatter
from entrypoints.settings import Settings
from tests.helpers import (
    REDIS_URL,
    clients,
    pair,
    redis_available,
    running,
    unique_key,
)

PAIRGATE = Path(sys.executable).parent / "pairgate"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once the probe closes


@pytest.fixture
def ops_settings(tmp_path: Path) -> Settings:
    return Settings(simulate=True, store="memory", data_dir=tmp_path, sim_qr_timeouts=(30.0,))


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- readiness ----------------------------------------------------------------------------


async def test_ready_when_the_store_answers(ops_settings: Settings) -> None:
    async with running(ops_settings) as server:
        ready = await server.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready" and body["checks"] == {"process": "ok", "store": "ok"}
        assert body["resume"] == {
            "looked_at": 0, "to_resume": 0, "resumed": 0, "unavailable": 0, "pending": 0
        }  # fmt: skip
        assert (await server.get("/healthz")).status_code == 200


async def test_ready_checks_redis_when_configured(ops_settings: Settings) -> None:
    if not redis_available():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    settings = ops_settings.model_copy(update={"redis_url": SecretStr(REDIS_URL)})
    async with running(settings) as server:
        ready = await server.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready"
        assert body["checks"] == {"process": "ok", "store": "ok", "redis": "ok"}


async def test_not_ready_when_redis_does_not_answer(ops_settings: Settings) -> None:
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    async with running(ops_settings.model_copy(update={"redis_url": SecretStr(dead)})) as server:
        answer = await server.get("/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "not ready" and body["failed"] == ["redis"]
        assert body["checks"]["store"] == "ok"
        assert body["checks"]["redis"].startswith("failed")
        # Liveness is another question: the process itself is fine, and so are its own
        # clients (emissions reach them; publishing to the other processes gives up).
        assert (await server.get("/healthz")).status_code == 200
        async with clients(server.url) as [client]:
            await pair(server, client, unique_key())


async def test_not_ready_when_the_store_fails(
    ops_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(ops_settings) as server:

        def broken() -> None:
            raise OSError("database is gone")

        monkeypatch.setattr(server.pairgate.sessions.recorder, "max_notification_id", broken)
        answer = await server.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["failed"] == ["store"]
        assert answer.json()["checks"] == {"process": "ok", "store": "failed: OSError"}


async def test_not_ready_while_shutting_down(ops_settings: Settings) -> None:
    async with running(ops_settings) as server:
        await server.pairgate.service.shutdown()  # what a SIGTERM drain starts with
        answer = await server.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["failed"] == ["process"]
        assert answer.json()["checks"]["process"] == "failed: shutting down"


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_follow_a_seed_flow(ops_settings: Settings) -> None:
    key = unique_key()
    async with running(ops_settings) as server, clients(server.url) as [client]:
        await pair(server, client, key)
        metrics = scrape((await server.get("/metrics")).text)
        assert metrics[("pairgate_qr_codes_issued_total", ())] == 1
        assert metrics[("pairgate_pair_duration_seconds_count", ())] == 1
        assert 0 < metrics[("pairgate_pair_duration_seconds_sum", ())] < 10
        assert metrics[("pairgate_sessions", (("state", "ready"),))] == 1
        assert metrics[("pairgate_sessions", (("state", "qr"),))] == 0
        assert metrics[("pairgate_socketio_connections", ())] == 1
        store_calls = {
            operation: metrics[("pairgate_store_seconds_count", (("operation", operation),))]
            for operation in ("create", "update", "find")
        }
        # A new key is recorded without reading it first; the session, held in memory
        # while it pairs, is never read back from the store either.
        assert store_calls["create"] == 1 and store_calls["update"] >= 1
        assert store_calls["find"] == 0

        assert (await client.call("session.logout", {"key": key}))["ok"]
        after = scrape((await server.get("/metrics")).text)
        assert after[("pairgate_disconnects_total", (("reason", "user logged out"),))] == 1
        assert after[("pairgate_disconnects_total", (("reason", "qr expired"),))] == 0
        assert after[("pairgate_sessions", (("state", "ready"),))] == 0
        assert after[("pairgate_pair_duration_seconds_count", ())] == 1


async def test_metrics_count_connections(ops_settings: Settings) -> None:
    async with running(ops_settings) as server:
        async with clients(server.url, 3):
            metrics = scrape((await server.get("/metrics")).text)
            assert metrics[("pairgate_socketio_connections", ())] == 3
        for _ in range(100):  # the server sees the closes a moment after the clients
            metrics = scrape((await server.get("/metrics")).text)
            if metrics[("pairgate_socketio_connections", ())] == 0:
                break
            await asyncio.sleep(0.02)
        assert metrics[("pairgate_socketio_connections", ())] == 0


# -- transports ---------------------------------------------------------------------------


async def test_websocket_only_refuses_polling_clients(ops_settings: Settings) -> None:
    websocket_only = ops_settings.model_copy(update={"transports": ("websocket",)})
    async with running(websocket_only) as server:
        polling = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await polling.connect(server.url, transports=["polling"], wait_timeout=5)
        await polling.disconnect()
        # Engine.IO's own refusal, before pairgate's protocol (docs/deployment.md).
        handshake = await server.get("/socket.io/?EIO=4&transport=polling")
        assert (handshake.status_code, handshake.json()) == (400, "Invalid transport")
        async with clients(server.url) as [client]:  # websocket
            await pair(server, client, unique_key())


def test_transports_setting_reads_a_comma_list() -> None:
    assert Settings(transports="websocket").transports == ("websocket",)  # type: ignore[arg-type]
    assert Settings().transports == ("polling", "websocket")
    with pytest.raises(ValueError):
        Settings(transports="carrier-pigeon")  # type: ignore[arg-type]


# -- JSON logs ----------------------------------------------------------------------------


def test_json_formatter_names_the_key() -> None:
    formatter = JsonFormatter()

    def line(msg: str, *args: Any, **extra: Any) -> dict[str, Any]:
        record = logging.LogRecord("pairgate.x", logging.WARNING, __file__, 1, msg, args, None)
        record.__dict__.update(extra)
        return dict(json.loads(formatter.format(record)))

    # The key is the one the log call passes as extra={"key": key}, never guessed.
    about = line("engine %s failed to start %s", "baileys", "phone-1", key="phone-1")
    assert about["key"] == "phone-1"
    assert about["message"] == "engine baileys failed to start phone-1"
    assert line("engine %s failed to start %s", "baileys", "phone-1").get("key") is None
    assert line("request from %s failed", "sid123", key=None).get("key", "absent") == "absent"
    assert line("%d sessions", 3).get("key") is None
    explicit = line("paired", key="k5", took=1.5)
    assert explicit["key"] == "k5" and explicit["took"] == 1.5
    assert set(explicit) >= {"time", "level", "logger", "message"}


class Relay:
    """A network path to the real Redis that a test can cut, as a partition would."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self._target))
                self._open += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def cut(self) -> None:
        self._listener.close()
        for connection in self._open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def test_serve_writes_one_json_object_per_line(tmp_path: Path) -> None:
    if not redis_available():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    log_path = tmp_path / "serve.log"
    port = closed_port()  # free now; pairgate binds it
    relay = Relay(6379)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
    env |= {
        "PAIRGATE_LOG_FORMAT": "json",
        "PAIRGATE_LOG_LEVEL": "debug",
        "PAIRGATE_STORE": "memory",
        "PAIRGATE_SIM_QR_TIMEOUTS": "30",
        # Redis answers at start-up, then goes away: python-socketio's complaints must
        # come out as JSON too.
        "PAIRGATE_REDIS_URL": f"redis://127.0.0.1:{relay.port}/0",
        "PAIRGATE_REDIS_CHANNEL": f"pairgate-test-{unique_key()}",
    }
    command = [str(PAIRGATE), "serve", "--simulate", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data")]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    key = unique_key()
    try:
        _create_and_wait_for_qr(f"http://127.0.0.1:{port}", key)
        relay.cut()
        _wait_for(lambda: '"logger": "socketio.server"' in log_path.read_text(), "Redis errors")
    finally:
        relay.cut()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log_path.read_text()
    lines = [json.loads(text) for text in log_path.read_text().splitlines() if text.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about_key = [line for line in lines if line.get("key") == key]
    assert about_key, lines
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    redis_errors = [line for line in lines if line["logger"] == "socketio.server"]
    assert redis_errors and all(line["level"] == "error" for line in redis_errors)


def _wait_for(condition: Any, what: str) -> None:
    import time

    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _create_and_wait_for_qr(url: str, key: str) -> None:
    import time

    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "pairgate serve did not come up"
        time.sleep(0.05)

    async def flow() -> None:
        async with clients(url) as [client]:
            request = {"key": key, "name": "P", "engine": "simulator"}
            assert (await client.call("session.create", request))["ok"]
            await client.wait_for("session.qr")

    asyncio.run(flow())
