"""What the benchmarks share: server processes, their CPU and memory, percentiles, output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A server in its own process, reachable at `url`, with its CPU time and memory."""

    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(
        cls, command: Sequence[str], env: dict[str, str], port: int, within: float = 30
    ) -> ServerProcess:
        process = subprocess.Popen(list(command), env={**os.environ, **env}, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{command[0]} exited with status {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).is_success:
                    return cls(process, url)
            except httpx.HTTPError:
                time.sleep(0.1)
        process.kill()
        raise SystemExit(f"{' '.join(command)} did not become healthy within {within} s")

    def cpu_s(self) -> float:
        """User + system CPU seconds the process has used so far (its threads included)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mb(self) -> float:
        return _status_kb(self.process.pid, "VmRSS") / 1024

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


# The load is thousands of users behind one (default) identity and one address: lift the
# limits and caps that count per identity or per address (request rates, the session cap,
# open connections and handshakes), which would otherwise be what the benchmark measures.
UNCAPPED = {
    "PAIRGATE_RATE_LIMIT_IDENTITY": "",
    "PAIRGATE_RATE_LIMIT_CONNECTION": "",
    "PAIRGATE_MAX_SESSIONS": "0",
    "PAIRGATE_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "PAIRGATE_MAX_HANDSHAKES_PER_ADDRESS": "0",
}


def pairgate_server(
    data_dir: Path, extra_env: dict[str, str] | None = None, healthy_within: float = 30
) -> ServerProcess:
    """`pairgate serve --simulate` (the console script), SQLite store in `data_dir`."""
    port = free_port()
    script = Path(sys.executable).with_name("pairgate")
    env = {
        "PAIRGATE_DATA_DIR": str(data_dir),
        "PAIRGATE_LOG_LEVEL": "warning",
        **UNCAPPED,
        **(extra_env or {}),
    }
    command = [str(script), "serve", "--simulate", "--port", str(port)]
    return ServerProcess.start(command, env, port, healthy_within)


def baseline_server() -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.baseline_app", "--port", str(port)]
    return ServerProcess.start(command, {}, port)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def own_rss_kb() -> int:
    return _status_kb(os.getpid(), "VmRSS")


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max (nearest rank), in the unit given; None when there are none."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": round(ordered[-1], 2)}


def emit(result: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
