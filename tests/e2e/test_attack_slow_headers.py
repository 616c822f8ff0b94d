"""Slow headers against `pairgate serve` with 1,024 open files (issue 19).

A thousand connections that never finish their request headers, from 127.0.0.2..9 and
reopened whenever the server closes them, must not take the process's last file
descriptors: health, readiness (the store), pairing and the SQLite store keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.e2e.service_process import ServiceProcess, pair
from tests.helpers import unique_key

ATTACKERS = [f"127.0.0.{n}" for n in range(2, 10)]
SLOW_CONNECTIONS = 1200
HEADER_TIMEOUT = 3.0


def open_files(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the child's RLIMIT_NOFILE (as `ulimit -n` would set it)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


def room_for(connections: int) -> None:
    """Enough descriptors in this test process to hold the attack's connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class SlowHeaders:
    """Connections that send part of a request and then nothing; each one is opened again
    as soon as the server closes it."""

    def __init__(self, port: int, count: int, attackers: list[str] = ATTACKERS) -> None:
        self.port = port
        self.count = count
        self.attackers = attackers
        self.held = 0
        self.cut = 0  # closed by the server
        self.cut_late = 0  # ...after the header timeout: by its deadline, not at once
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for n in range(self.count):
            address = self.attackers[n % len(self.attackers)]
            self._tasks.append(asyncio.create_task(self._hold(address)))
            if n % 50 == 0:
                await asyncio.sleep(0)

    async def _hold(self, address: str) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(address, 0)
                )
            except OSError:
                await asyncio.sleep(0.1)
                continue
            self.held += 1
            opened = time.monotonic()
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                with contextlib.suppress(OSError):
                    await reader.read()  # b"" when the server closes the connection
                self.cut += 1
                if time.monotonic() - opened >= HEADER_TIMEOUT - 0.5:
                    self.cut_late += 1
            finally:
                self.held -= 1
                writer.close()
            await asyncio.sleep(0.05)  # an attacker's pace, not a synchronisation

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def assert_serving(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
    await asyncio.wait_for(pair(url, unique_key()), 20)


async def test_slow_headers_leave_health_pairing_and_the_store_working(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(
        tmp_path / "data",
        env={"PAIRGATE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)},
        preexec_fn=open_files(1024, 1024),
    )
    room_for(SLOW_CONNECTIONS)
    attack = SlowHeaders(service.port, SLOW_CONNECTIONS)
    await attack.start()
    try:
        # Past the header timeout, so that slow connections are cut and reopened meanwhile.
        until = time.monotonic() + HEADER_TIMEOUT + 5
        rounds = 0
        while time.monotonic() < until or rounds < 2:
            await assert_serving(service.url)
            rounds += 1
        assert attack.cut_late > 0, "no slow connection was closed by the header deadline"
    finally:
        await attack.stop()
    assert "unable to open database file" not in service.log()
    assert "Too many open files" not in service.log()


async def test_slow_headers_from_many_addresses_leave_the_store_its_files(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """30 addresses, each under its cap of 100, together open more connections than the
    process has descriptors. New connections may be refused while that lasts, but the
    server's connections are capped below its open-files limit: the store keeps its
    files, a client connected before goes on being served, and once the attack ends
    everyone is served again."""
    service = start_service(
        tmp_path / "data",
        env={"PAIRGATE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)},
        preexec_fn=open_files(1024, 1024),
    )
    many = [f"127.0.1.{n}" for n in range(1, 31)]
    room_for(len(many) * 100)
    with httpx.Client(base_url=service.url, timeout=5) as connected:
        assert connected.get("/readyz").status_code == 200  # its connection is open
        attack = SlowHeaders(service.port, len(many) * 100, many)
        # The client asks from a thread of its own: this test's event loop, busy opening
        # the attack's 3,000 connections, would send its requests late, and a connection
        # idle for longer than the header timeout is one the server may close.
        asking = asyncio.create_task(
            asyncio.to_thread(keep_asking, connected, time.monotonic() + HEADER_TIMEOUT + 6)
        )
        await attack.start()
        try:
            used = await asking
            # The attack filled the server's connections (896 of its 1,024 descriptors).
            assert "896 connections are open: closing new connections" in service.log()
        finally:
            await attack.stop()
    assert len(used) == 1, used  # served throughout on the connection it had before
    await assert_serving(service.url)
    assert "unable to open database file" not in service.log()
    assert "Too many open files" not in service.log()


def keep_asking(connected: httpx.Client, until: float) -> set[object]:
    """Readiness (the store: its files, a write) every half second until `until`, each
    answered 200: the client's addresses it was answered on (one: its connection)."""
    used = set()
    while time.monotonic() < until:
        ready = connected.get("/readyz")
        assert ready.status_code == 200, ready.text
        used.add(ready.extensions["network_stream"].get_extra_info("client_addr"))
        time.sleep(0.5)
    return used


def test_serve_raises_its_open_files_limit_to_the_hard_limit(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service(tmp_path / "data", preexec_fn=open_files(1024, 4096))
    assert resource.prlimit(service.pid, resource.RLIMIT_NOFILE) == (4096, 4096)
