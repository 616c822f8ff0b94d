"""`pairgate serve` run as a real process, as deployed, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import socketio

from tests.helpers import Client, decode_qr

PAIRGATE = Path(sys.executable).parent / "pairgate"
# Long enough that a code never rotates between showing it and the simulated scan, even on a
# loaded CI machine (with "2,2" a slow scan races the second code); set through the
# environment to prove PAIRGATE_SIM_QR_TIMEOUTS reaches the simulator through the CLI.
QR_TIMEOUT = 30
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


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
    """`pairgate serve` (`--simulate` unless told) in a subprocess; its output goes to a log
    file."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @classmethod
    def start(
        cls,
        data_dir: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
        *,
        simulate: bool = True,
    ) -> ServiceProcess:
        # Only variables this test sets: a PAIRGATE_DATABASE_URL or POSTGRES_* from the
        # caller's shell would move the store out of `data_dir`.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
        env["PAIRGATE_SIM_QR_TIMEOUTS"] = f"{QR_TIMEOUT},{QR_TIMEOUT}"
        env |= extra_env or {}
        output = ""
        for _ in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            command = [str(PAIRGATE), "serve", *(["--simulate"] if simulate else [])]
            command += ["--host", "127.0.0.1"]
            command += ["--port", str(port), "--data-dir", str(data_dir)]
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=data_dir.parent,
                    preexec_fn=preexec_fn,  # e.g. resource limits, set in the child
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

    @property
    def pid(self) -> int:
        return self.process.pid

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
