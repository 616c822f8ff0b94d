"""Time from `session.create` to `session.qr` against a real `pairgate serve --simulate`.

    python -m benchmarks.create_to_qr --sessions 100 --concurrency 1 --json out.json

The server runs as its own process (the console script, SQLite store in a temporary
directory); each session uses its own websocket Socket.IO client, as a browser would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import socketio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    script = Path(sys.executable).with_name("pairgate")
    env = {**os.environ, "PAIRGATE_LOG_LEVEL": "warning"}
    command = [str(script), "serve", "--simulate", "--port", str(port), "--data-dir", str(data_dir)]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("pairgate did not become healthy within 30 s")


async def one_session(url: str, key: str) -> float:
    client = socketio.AsyncClient()
    got_qr = asyncio.Event()
    client.on("session.qr", lambda data: got_qr.set())
    await client.connect(url, transports=["websocket"])
    try:
        started = time.perf_counter()
        await client.emit("session.create", {"key": key, "name": "Bench", "engine": "baileys"})
        await asyncio.wait_for(got_qr.wait(), 30)
        elapsed = (time.perf_counter() - started) * 1000
        await client.call("session.delete", {"key": key})
        return elapsed
    finally:
        await client.disconnect()


async def run(url: str, sessions: int, concurrency: int) -> list[float]:
    limit = asyncio.Semaphore(concurrency)
    run_id = os.urandom(4).hex()

    async def bounded(index: int) -> float:
        async with limit:
            return await one_session(url, f"bench-{run_id}-{index}")

    return list(await asyncio.gather(*(bounded(i) for i in range(sessions))))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="pairgate-bench-"))
    port = free_port()
    server = start_server(port, data_dir)
    try:
        latencies = asyncio.run(run(f"http://127.0.0.1:{port}", args.sessions, args.concurrency))
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(data_dir, ignore_errors=True)

    result = {
        "benchmark": "create_to_qr",
        "sessions": args.sessions,
        "concurrency": args.concurrency,
        "create_to_qr_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(max(latencies), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
