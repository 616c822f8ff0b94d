"""What live sessions cost while nothing happens: memory per session and idle CPU.

    python -m benchmarks.idle --sessions 2000 --json idle.json

One `pairgate serve --simulate` process per case (SQLite store in a temporary directory);
a separate client process opens one websocket Socket.IO connection per session and keeps
it. Case `ready`: every session is paired (simulator scan) and sits ready. Case
`unpaired`: every session waits for a scan while the simulator rotates its QR code every
`--rotate` seconds (each rotation: a new code rendered, an event stored, a `session.qr`
sent). Reported per case: the server's RSS growth per session (its client connection
included) and its CPU over `--window` seconds once every session is in place.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from benchmarks.common import emit, pairgate_server

OPEN_RATE = 100  # sessions opened per second while setting up


async def hold(url: str, count: int, pair: bool, pipe: Connection) -> None:
    """Open `count` sessions (paired when `pair`), report, keep them until told to stop."""
    run = str(time.time_ns())[-8:]
    failures = 0
    first_failure: str | None = None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        clients: list[socketio.AsyncClient] = []

        async def open_one(index: int) -> None:
            nonlocal failures, first_failure
            key = f"idle-{run}-{index}"
            client = socketio.AsyncClient(reconnection=False, http_session=http)
            waiting = {n: asyncio.Event() for n in ("session.qr", "session.ready")}
            for name, event in waiting.items():
                client.on(name, lambda data, e=event: e.set())
            try:
                await client.connect(url, transports=["websocket"], wait_timeout=30)
                clients.append(client)
                await client.emit(
                    "session.create", {"key": key, "name": "Idle", "engine": "baileys"}
                )
                await asyncio.wait_for(waiting["session.qr"].wait(), 30)
                if pair:
                    base = f"{url}/api/simulator/devices/{key}"
                    async with http.get(f"{base}/code") as reply:
                        code = (await reply.json())["code"]
                    async with http.post(f"{base}/scan", json={"code": code}) as reply:
                        reply.raise_for_status()
                    await asyncio.wait_for(waiting["session.ready"].wait(), 30)
            except Exception as error:  # noqa: BLE001 - counted and reported
                failures += 1
                first_failure = first_failure or f"{type(error).__name__}: {error}"[:200]

        tasks = []
        for index in range(count):
            tasks.append(asyncio.create_task(open_one(index)))
            await asyncio.sleep(1 / OPEN_RATE)
        await asyncio.gather(*tasks)
        pipe.send(
            {"opened": count - failures, "failures": failures, "first_failure": first_failure}
        )
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
        for client in clients:
            await client.disconnect()


def client_process(url: str, count: int, pair: bool, pipe: Connection) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(hold(url, count, pair, pipe))


def measure(
    case: str, sessions: int, rotate: float, window: float, extra_env: dict[str, str]
) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="pairgate-idle-"))
    # Enough codes that no pairing runs out of them during the measurement.
    timeouts = ",".join([str(rotate)] * 200)
    env = {"PAIRGATE_SIM_QR_TIMEOUTS": timeouts, "PAIRGATE_MAX_UNPAIRED": "0", **extra_env}
    server = pairgate_server(data_dir, env)
    ours, theirs = get_context("spawn").Pipe()
    process = get_context("spawn").Process(
        target=client_process, args=(server.url, sessions, case == "ready", theirs)
    )
    try:
        time.sleep(2)  # let start-up settle before the reference reading
        rss_before = server.rss_mb()
        process.start()
        opened = ours.recv()
        time.sleep(2)  # requests in flight finish; the sessions are now idle
        rss_after = server.rss_mb()
        cpu_before, started = server.cpu_s(), time.monotonic()
        time.sleep(window)
        cpu = server.cpu_s() - cpu_before
        elapsed = time.monotonic() - started
        ours.send("stop")
        process.join(60)
        return {
            **opened,
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_after": round(rss_after, 1),
            "rss_kb_per_session": round((rss_after - rss_before) * 1024 / sessions, 1),
            "window_s": round(elapsed, 1),
            "cpu_s": round(cpu, 2),
            "cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
            **({"qr_codes_per_s": round(sessions / rotate, 1)} if case == "unpaired" else {}),
        }
    finally:
        if process.is_alive():
            process.kill()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--cases", default="ready,unpaired")
    parser.add_argument("--rotate", type=float, default=20.0, help="QR lifetime (s), unpaired")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of idle measured")
    parser.add_argument(
        "--pairgate-env", action="append", default=[], metavar="NAME=VALUE", help="repeatable"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.pairgate_env)
    result: dict[str, Any] = {"benchmark": "idle", "sessions": args.sessions, "pairgate_env": env}
    for case in (c.strip() for c in args.cases.split(",") if c.strip()):
        result[case] = measure(case, args.sessions, args.rotate, args.window, env)
        print(case, result[case], flush=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
