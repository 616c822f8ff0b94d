"""One load-generating process: open-loop arrivals, each a real websocket Socket.IO client.

Arrival `n` of this process starts at `start + (offset + n * processes) / rate` whatever
happened to the earlier ones, so a slow server shows up as latency (and as arrivals
overlapping), not as a lower offered rate. Each arrival runs the seed flow: connect,
`session.create`, first `session.qr`, the code read from the simulator
(GET `/api/simulator/devices/{key}/code`, cheaper than decoding the PNG), POST `.../scan`,
`session.authenticated`, `session.ready`, disconnect.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import socketio

STEP_TIMEOUT = 10.0


@dataclass
class Outcome:
    scheduled: float  # wall clock (time.time) the arrival was due
    lag_ms: float  # how late this process started it (the load generator's own queueing)
    connect_ms: float | None = None
    create_to_qr_ms: float | None = None
    scan_to_ready_ms: float | None = None
    done: float | None = None  # wall clock of session.ready
    error: str | None = None


async def one_arrival(url: str, http: aiohttp.ClientSession, key: str, outcome: Outcome) -> None:
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    arrived: dict[str, asyncio.Future[Any]] = {}
    loop = asyncio.get_running_loop()
    for name in ("session.qr", "session.authenticated", "session.ready"):
        arrived[name] = loop.create_future()
    failed: asyncio.Future[Any] = loop.create_future()

    async def record(event: str, data: Any = None) -> None:
        future = arrived.get(event)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())
        elif event in ("session.error", "session.disconnected") and not failed.done():
            failed.set_exception(RuntimeError(f"{event}: {data}"))

    client.on("*", record)

    async def wait(name: str) -> float:
        done, _ = await asyncio.wait(
            [arrived[name], failed], timeout=STEP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            raise TimeoutError(f"no {name} within {STEP_TIMEOUT} s")
        return float(done.pop().result())

    try:
        began = time.perf_counter()
        await client.connect(url, transports=["websocket"], wait_timeout=STEP_TIMEOUT)
        created = time.perf_counter()
        outcome.connect_ms = (created - began) * 1000
        await client.emit("session.create", {"key": key, "name": "Bench", "engine": "baileys"})
        outcome.create_to_qr_ms = (await wait("session.qr") - created) * 1000
        base = f"{url}/api/simulator/devices/{key}"
        async with http.get(f"{base}/code") as reply:
            code = (await reply.json())["code"]
        scanned = time.perf_counter()
        async with http.post(f"{base}/scan", json={"code": code}) as reply:
            if reply.status != 200:
                raise RuntimeError(f"scan: HTTP {reply.status}: {await reply.text()}")
        await wait("session.authenticated")
        outcome.scan_to_ready_ms = (await wait("session.ready") - scanned) * 1000
        outcome.done = time.time()
    except Exception as error:  # noqa: BLE001 - every failure is counted, by kind
        outcome.error = f"{type(error).__name__}: {error}"[:200]
    finally:
        failed.cancel()
        try:
            await client.disconnect()
        except Exception:  # noqa: BLE001
            pass


async def generate(
    url: str, rate: float, duration: float, start: float, offset: int, processes: int, run: str
) -> list[Outcome]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks: list[asyncio.Task[None]] = []
        outcomes: list[Outcome] = []
        index = offset
        while index / rate < duration:
            due = start + index / rate
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            outcome = Outcome(scheduled=due, lag_ms=max(0.0, (time.time() - due) * 1000))
            outcomes.append(outcome)
            key = f"load-{run}-{index}"
            tasks.append(asyncio.create_task(one_arrival(url, http, key, outcome)))
            index += processes
        await asyncio.gather(*tasks)
    return outcomes


def run_process(
    url: str, rate: float, duration: float, start: float, offset: int, processes: int, run: str
) -> tuple[list[Outcome], float]:
    """A client process's entry point: the outcomes, and the CPU seconds the process used."""
    import uvloop  # uvicorn[standard] brings it; the clients should cost as little as they can

    cpu = time.process_time()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        outcomes = runner.run(generate(url, rate, duration, start, offset, processes, run))
    return outcomes, time.process_time() - cpu
