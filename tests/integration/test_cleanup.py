"""Nothing outlives a session: 500 sessions come and go, and the server holds no more
tasks, threads, open files, timers, locks or credentials than before."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from pathlib import Path

from entrypoints.consumers import THREADS
from entrypoints.settings import Settings
from tests.helpers import (
    Client,
    Server,
    clients,
    decode_qr,
    pair,
    running,
    simulated_keys,
    unique_key,
)

SESSIONS = 500
CLIENTS = 10


# Pool workers (the store's executor, asyncio's default executor, the log consumers'
# pools) are made on demand up
# to a fixed maximum and then reused: they are capacity, not leftovers.
POOLS = ("pairgate-store", "asyncio_", THREADS)


def session_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if not t.name.startswith(POOLS)]


# The event store's SQLite connections are a pool as well (eventsourcing keeps up to 5 for
# reuse; the WAL checkpointer has one): connections the log's followers needed at once
# during the churn are capacity too. Each is the database, its WAL and its index file.
STORE_FILES = ("pairgate.sqlite3",)
MAX_STORE_FDS = 3 * (5 + 1)


def _fds() -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # closed since it was listed (the listing's own fd)
            continue
    return found


def open_files() -> int:
    """Open file descriptors besides the store's pooled connections."""
    return sum(not Path(target).name.startswith(STORE_FILES) for target in _fds())


def store_files() -> int:
    return sum(Path(target).name.startswith(STORE_FILES) for target in _fds())


def asyncio_locks() -> int:
    """asyncio.Locks alive in the process, the service's per-key locks among them."""
    return sum(isinstance(thing, asyncio.Lock) for thing in gc.get_objects())


def timer(task: asyncio.Task) -> bool:
    """Tasks that come and go by themselves: `asyncio.wait_for(event.wait(), t)` runs the
    wait as a task of its own, made anew each round (engine.io's sweep, the log followers,
    the webhook dispatcher), and a task that leaked would hold its waiter, which counts;
    engine.io's ping sleeps out the ping interval (25 s) even when its socket closed."""
    return task.get_coro().__qualname__ in {"Event.wait", "AsyncSocket._send_ping"}


def lasting_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if not timer(t)}


def describe(tasks: set[asyncio.Task]) -> list[str]:
    return [f"{t.get_name()}: {t.get_coro().__qualname__}" for t in tasks]


async def tasks_settle(limit: int, within: float = 10.0) -> None:
    """Wait until at most `limit` tasks are left: on a slow machine the clients' last
    engine.io sockets may still be closing a second after the churn. A task that stays
    is still reported by the assertion that follows."""
    deadline = asyncio.get_running_loop().time() + within
    while len(lasting_tasks()) > limit and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)


async def come_and_go(server: Server, client: Client, index: int) -> None:
    """One session's life: even ones are paired then deleted, odd ones expire unscanned."""
    key = unique_key(f"churn{index}")
    ack = await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
    assert ack["ok"], ack
    qr = (await client.wait_until("session.qr", key))["qr"]
    if index % 2 == 0:
        scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": decode_qr(qr)})
        if scanned.is_success:  # else the 0.5 s code expired first: that ends it as well
            await client.call("session.delete", {"key": key})
    await client.wait_until("session.disconnected", key)


async def test_500_sessions_come_and_go_without_a_trace(tmp_path: Path) -> None:
    settings = Settings(
        simulate=True,
        sim_qr_timeouts=(0.5,),
        expiry_grace=0.5,
        data_dir=tmp_path / "data",
        rate_limit_connection="",
        rate_limit_identity="",
    )
    async with running(settings) as server:
        service = server.pairgate.service
        async with clients(server.url, CLIENTS) as warmup:  # first use creates pools, caches
            await asyncio.gather(*(come_and_go(server, c, i) for i, c in enumerate(warmup)))
        del warmup  # its clients' own locks and buffers go with them
        await asyncio.sleep(0.5)
        gc.collect()
        before = lasting_tasks()
        tasks, threads, files = len(before), session_threads(), open_files()
        locks = asyncio_locks()

        async with clients(server.url, CLIENTS) as churners:

            async def churn(client: Client, first: int) -> None:
                for index in range(first, SESSIONS, CLIENTS):
                    await come_and_go(server, client, index)

            await asyncio.gather(*(churn(c, i) for i, c in enumerate(churners)))
        del churners
        await tasks_settle(tasks)  # connections closing, the last teardowns
        gc.collect()

        print(
            f"\nafter {SESSIONS} sessions: tasks {tasks} → {len(lasting_tasks())}, "
            f"threads besides pools {len(threads)} → {len(session_threads())}, "
            f"open files {files} → {open_files()}"
        )
        assert len(lasting_tasks()) <= tasks, describe(lasting_tasks() - before)
        assert session_threads() == threads
        assert open_files() <= files
        assert store_files() <= MAX_STORE_FDS
        assert service.running_keys == frozenset()
        assert service.watched_keys == frozenset()
        assert asyncio_locks() <= locks  # per-key locks go with their last user
        assert len(server.pairgate.sio.manager.rooms.get("/", {})) <= 1  # only the None room
        assert server.pairgate.sio.manager.clients_indexed == 0  # nor any client's rooms
        assert simulated_keys(settings) == 0  # no credentials left behind
        # Every one of them is on record, ended.
        ended = [service.sessions.get(k) for k in service.sessions.keys()]
        assert len(ended) == SESSIONS + CLIENTS
        assert {s.state.value for s in ended} == {"disconnected"}


async def test_a_pairing_ends_on_time_after_every_client_left(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await client.call("session.create", {"key": key, "name": "P", "engine": "simulator"})
        await client.wait_for("session.qr")
    # Nobody is watching any more; the pairing window (FAST_QR: 4 s) still closes it.
    service = server.pairgate.service
    for _ in range(100):
        session = await service.find(key)
        # The registry follows a saved change in the reporting task's next step: with a
        # store on threads (PostgreSQL) a reader can see the save a moment before that.
        released = key not in service.running_keys and key not in service.watched_keys
        if session is not None and session.state.value == "disconnected" and released:
            break
        await asyncio.sleep(0.1)
    assert session is not None and session.reason is not None
    assert session.reason.value == "qr expired"
    assert key not in service.running_keys and key not in service.watched_keys


async def test_a_paired_device_keeps_running_without_clients(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await pair(server, client, key)
    await asyncio.sleep(5)  # longer than any pairing window here
    session = await server.pairgate.service.find(key)
    assert session is not None and session.state.value == "ready"
    assert key in server.pairgate.service.running_keys
