"""The seed's flow against `pairgate serve --simulate` run as a real process, as deployed.

A Node socket.io-client 4.x (tests/e2e/node/seed_client.mjs) and python-socketio both pair a
device over websocket-only and over polling-then-upgrade; then the process is stopped with
SIGTERM and started again on the same data directory, which must still know the session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.e2e.service_process import QR_TIMEOUT, ServiceProcess, pair
from tests.helpers import Client, decode_qr, unique_key

NODE_DIR = Path(__file__).parent / "node"
PNG_DATA_URI = "data:image/png;base64,"
SEED_NAMES = ["session.created", "session.qr", "session.authenticated", "session.ready"]
TRANSPORTS = {"websocket": ["websocket"], "polling": ["polling", "websocket"]}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One process shared by the flows below, as a deployed server is shared by clients."""
    tmp_path = tmp_path_factory.mktemp("pairgate")
    running = ServiceProcess.start(tmp_path / "data", tmp_path / "pairgate.log")
    try:
        yield running
    finally:
        running.kill()


def compact(payload: Any) -> str:
    """A payload as JSON text in the order it was received, to compare byte for byte."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def assert_seed_events(events: list[tuple[str, Any]], key: str) -> str:
    """The seed's four events with the seed's exact payloads; returns the QR image."""
    assert [name for name, _ in events] == SEED_NAMES
    created, qr, authenticated, ready = (payload for _, payload in events)
    assert compact(created) == compact({"key": key, "message": "Session created"})
    assert list(qr) == ["key", "qr", "timeout"]
    assert qr["key"] == key
    assert qr["qr"].startswith(PNG_DATA_URI) and len(qr["qr"]) > len(PNG_DATA_URI)
    assert type(qr["timeout"]) is int and qr["timeout"] == QR_TIMEOUT
    assert compact(authenticated) == compact({"key": key})
    assert compact(ready) == compact({"key": key})
    return str(qr["qr"])


def created_ack(key: str) -> dict[str, Any]:
    return {
        "ok": True,
        "key": key,
        "state": "created",
        "name": "My Device",
        "engine": "baileys",
        "joined": False,
    }


def assert_whatsapp_shaped(code: str) -> None:
    assert code.startswith("2@") and len(code.split(",")) == 4


def run_node_client(url: str, key: str, *flags: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("`node` is not on PATH: install Node.js 18+ to run the socket.io-client test")
    if not (NODE_DIR / "node_modules").is_dir():
        pytest.skip("tests/e2e/node/node_modules is missing: run `npm ci --prefix tests/e2e/node`")
    script = str(NODE_DIR / "seed_client.mjs")
    done = subprocess.run(
        [node, script, url, key, *flags], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"seed_client.mjs failed ({done.returncode}):\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got:\n{done.stdout}"
    result: dict[str, Any] = json.loads(lines[0])
    return result


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_socketio_client_runs_the_seed_flow(service: ServiceProcess, transport: str) -> None:
    # The seed's own key for the first run; one process serves every test, so others differ.
    key = "device123" if transport == "websocket" else unique_key("node-polling")
    flags = ["--polling"] if transport == "polling" else []

    result = run_node_client(service.url, key, *flags)

    assert result["ack"] == created_ack(key)
    events = [(name, payload) for name, payload in result["events"]]
    image = assert_seed_events(events, key)
    # jsQR (the Node side) and zxing-cpp read the same text, and it is what the scan took.
    assert result["code"] == decode_qr(image)
    assert_whatsapp_shaped(result["code"])
    assert result["scan"] == {"ok": True, "key": key, "state": "ready"}
    assert result["transports"] == TRANSPORTS[transport]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_python_socketio_client_runs_the_seed_flow(
    service: ServiceProcess, transport: str
) -> None:
    key = unique_key(f"python-{transport}")
    client = Client(socketio.AsyncClient(reconnection=False))
    await client.sio.connect(service.url, transports=TRANSPORTS[transport], wait_timeout=10)
    try:
        # python-engineio upgrades inside connect(), before it returns.
        assert client.sio.transport() == "websocket"
        request = {"key": key, "name": "My Device", "engine": "baileys"}
        assert await client.call("session.create", request) == created_ack(key)
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        assert_whatsapp_shaped(code)
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
            scanned = await http.post(f"/api/simulator/devices/{key}/scan", json={"code": code})
        assert scanned.status_code == 200
        assert scanned.json() == {"ok": True, "key": key, "state": "ready"}
        await client.wait_for("session.ready")
    finally:
        await client.close()

    assert_seed_events(client.events, key)


async def test_a_restart_on_the_same_data_dir_keeps_the_sessions(
    tmp_path: Path, start_service: Callable[[Path], ServiceProcess]
) -> None:
    data_dir = tmp_path / "data"
    first = start_service(data_dir)
    paired, pending = unique_key("paired"), unique_key("pending")
    await pair(first.url, paired)
    # A second device is still showing its QR code, its page connected by long-polling (which
    # would hold uvicorn's graceful shutdown until the next ping), when SIGTERM comes.
    watcher = await Client(socketio.AsyncClient(reconnection=False)).connect(
        first.url, transports=["polling"]
    )
    await watcher.call("session.create", {"key": pending, "name": "Other", "engine": "neonize"})
    await watcher.wait_for("session.qr")

    returncode, took = first.terminate()

    assert took < 5
    # The page heard why its QR code went away before the server hung up.
    assert await watcher.wait_for("session.disconnected") == {
        "key": pending,
        "reason": "connection lost",
    }
    log = first.log()
    assert "Application shutdown complete." in log and "Traceback" not in log, log
    # An orderly SIGTERM stop is a success.
    assert returncode == 0, log
    await watcher.close()

    second = start_service(data_dir)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        health = (await http.get("/healthz")).json()
    # The paired device was resumed at start-up from its stored credentials.
    assert health == {"status": "ok", "sessions_running": 1}
    client = await Client(socketio.AsyncClient(reconnection=False)).connect(second.url)
    try:
        # Both sessions are known after the restart, with their names and engines. The
        # paired one is back online without a QR code; the pairing that SIGTERM interrupted
        # stays `disconnected` with reason "connection lost", as its page was told.
        assert await client.call("session.join", {"key": paired}) == {
            "ok": True,
            "key": paired,
            "state": "ready",
            "name": "My Device",
            "engine": "baileys",
        }
        assert await client.call("session.join", {"key": pending}) == {
            "ok": True,
            "key": pending,
            "state": "disconnected",
            "name": "Other",
            "engine": "neonize",
            "reason": "connection lost",
        }
        # A key the first process never saw is refused, so the two above were remembered.
        never = await client.call("session.join", {"key": unique_key("never")})
        assert never["ok"] is False and never["error"]["code"] == "not_found"
        # Joining a ready or disconnected session sends nothing but the acknowledgement.
        assert client.names() == ["session.error"]
    finally:
        await client.close()


@pytest.mark.skipif(not Path("/proc/self/timerslack_ns").exists(), reason="no Linux timer slack")
def test_the_served_process_lets_its_timers_slack_by_100_ms(service: ServiceProcess) -> None:
    # PAIRGATE_TIMER_SLACK_MS's default, on the thread that runs the event loop; this test
    # process keeps the kernel's default.
    slack = Path(f"/proc/{service.process.pid}/timerslack_ns").read_text()
    assert int(slack) == 100_000_000
    assert int(Path("/proc/self/timerslack_ns").read_text()) < 100_000_000
