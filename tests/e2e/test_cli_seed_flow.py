"""The seed's flow against `pairgate serve --simulate` run as a real process, as deployed.

A Node socket.io-client 4.x (tests/e2e/node/seed_client.mjs) and python-socketio both pair a
device over websocket-only and over polling-then-upgrade; then the process is stopped with
SIGTERM and started again on the same data directory, which must still know the session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

from tests.helpers import Client, decode_qr, unique_key

NODE_DIR = Path(__file__).parent / "node"
PAIRGATE = Path(sys.executable).parent / "pairgate"
# Long enough that a code never rotates between showing it and the simulated scan, even on a
# loaded CI machine (with "2,2" a slow scan races the second code); set through the
# environment to prove PAIRGATE_SIM_QR_TIMEOUTS reaches the simulator through the CLI.
QR_TIMEOUT = 30
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
PNG_DATA_URI = "data:image/png;base64,"
SEED_NAMES = ["session.created", "session.qr", "session.authenticated", "session.ready"]
TRANSPORTS = {"websocket": ["websocket"], "polling": ["polling", "websocket"]}


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """`condition()`'s first truthy value, checked every 50 ms until `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServiceProcess:
    """`pairgate serve --simulate` in a subprocess; its output goes to a log file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @classmethod
    def start(cls, data_dir: Path, log_path: Path) -> ServiceProcess:
        # Only variables this test sets: a PAIRGATE_DATABASE_URL or POSTGRES_* from the
        # caller's shell would move the store out of `data_dir`.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
        env["PAIRGATE_SIM_QR_TIMEOUTS"] = f"{QR_TIMEOUT},{QR_TIMEOUT}"
        output = ""
        for _ in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            command = [str(PAIRGATE), "serve", "--simulate", "--host", "127.0.0.1"]
            command += ["--port", str(port), "--data-dir", str(data_dir)]
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir.parent
                )
            service = cls(process, port, log_path)
            try:
                service._wait_until_up()
            except BaseException:
                service.kill()
                output = service.log()
                if "address already in use" in output:
                    continue
                raise
            return service
        raise AssertionError(f"no free port for pairgate after 3 tries:\n{output}")

    def _wait_until_up(self) -> None:
        # Up means: this process still runs, says it listens on our port, and /healthz answers.
        # (The log line guards against a stranger that took the port answering for it.)
        listening = f"Uvicorn running on {self.url}"

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"pairgate serve exited with {self.process.returncode} before it was up:\n"
                    + self.log()
                )
            if listening not in self.log():
                return False
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            poll(up, STARTUP_TIMEOUT, f"{self.url}/healthz")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- pairgate serve output ---\n{self.log()}") from None

    def terminate(self) -> tuple[int, float]:
        """SIGTERM, as a service manager stops it: (return code, seconds it took to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            returncode = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"pairgate serve still ran {STOP_TIMEOUT} s after SIGTERM:\n{self.log()}"
            ) from None
        return returncode, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[[Path], ServiceProcess]]:
    """Starts `pairgate serve` processes; whatever still runs at teardown is killed."""
    started: list[ServiceProcess] = []

    def start(data_dir: Path) -> ServiceProcess:
        service = ServiceProcess.start(data_dir, tmp_path / f"pairgate-{len(started)}.log")
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.kill()


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


async def pair(url: str, key: str) -> None:
    """The seed flow to `ready` with a python-socketio client, which then leaves."""
    client = await Client(socketio.AsyncClient(reconnection=False)).connect(url)
    try:
        await client.call("session.create", {"key": key, "name": "My Device", "engine": "baileys"})
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            scanned = await http.post(f"/api/simulator/devices/{key}/scan", json={"code": code})
        assert scanned.status_code == 200, scanned.text
        await client.wait_for("session.ready")
    finally:
        await client.close()


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
    # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done, so the
    # process ends by that signal, which service managers (systemd, Docker) count as a stop.
    assert returncode in (0, -signal.SIGTERM), log
    await watcher.close()

    second = start_service(data_dir)
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
        health = (await http.get("/healthz")).json()
    # Nothing restarts engines on boot: the paired device waits for its owner's next request.
    assert health == {"status": "ok", "sessions_running": 0}
    client = await Client(socketio.AsyncClient(reconnection=False)).connect(second.url)
    try:
        # Both sessions are known after the restart, with their names and engines. They are
        # `disconnected` with reason "connection lost", not `ready` or `qr`: the graceful
        # shutdown stopped every running engine and recorded that loss (the devices did lose
        # their connection), and the new process resumes no engine. The paired one keeps its
        # credentials, so its owner's next `session.create` reconnects it.
        assert await client.call("session.join", {"key": paired}) == {
            "ok": True,
            "key": paired,
            "state": "disconnected",
            "name": "My Device",
            "engine": "baileys",
            "reason": "connection lost",
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
        # Joining a disconnected session sends nothing but the acknowledgement.
        assert client.names() == ["session.error"]
    finally:
        await client.close()
