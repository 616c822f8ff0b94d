"""What a Socket.IO disconnect costs with many clients connected: python-socketio's own
client manager against pairgate's (adapters/socketio/rooms.py).

    python -m benchmarks.rooms --clients 100,2000,10000,50000 --json rooms.json
    python -m benchmarks.rooms --server-sessions 2000 --before /tmp/before --json rooms.json

Managers: `--clients` connected clients, each in its own room and a session's, then 200 of
them disconnect; ms per disconnect for each manager. Servers (`--server-sessions N`): two
`pairgate serve --simulate` processes side by side, `--before` (a checkout, first on
PYTHONPATH) and this tree, each holding N ready sessions (benchmarks.idle's client); then
`--churn` Socket.IO clients connect and disconnect one after another; server CPU per
connect + disconnect.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import socketio

from adapters.socketio.rooms import IndexedManager
from benchmarks.ab import holding, servers
from benchmarks.common import emit

LEAVING = 200
CHUNK = 50  # connections churned on one server before the other's turn


async def per_disconnect(manager: socketio.AsyncManager, clients: int) -> float:
    """ms per disconnect with `clients` connected, each in its own room and a session's."""
    manager.set_server(socketio.AsyncServer())
    manager.initialize()
    sids = []
    for index in range(clients):
        sid = await manager.connect(f"eio-{index}", "/")
        manager.basic_enter_room(sid, "/", f"session:{index}")
        sids.append(sid)
    leaving = sids[:: max(1, clients // LEAVING)][:LEAVING]
    started = time.perf_counter()
    for sid in leaving:
        await manager.disconnect(sid, "/")
    return (time.perf_counter() - started) * 1000 / len(leaving)


def managers(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for clients in counts:
        library = asyncio.run(per_disconnect(socketio.AsyncManager(), clients))
        indexed = asyncio.run(per_disconnect(IndexedManager(), clients))
        rows.append(
            {
                "clients": clients,
                "python_socketio_ms": round(library, 4),
                "pairgate_ms": round(indexed, 4),
            }
        )
        print(f"{clients:>7} clients: python-socketio {library:.4f} ms, pairgate {indexed:.4f} ms")
    return rows


async def churn(url: str, count: int) -> None:
    for _ in range(count):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(url, transports=["websocket"], wait_timeout=30)
        await client.disconnect()


def side_by_side(before: Path, sessions: int, count: int) -> dict[str, Any]:
    """Server CPU per connect + disconnect, each server holding `sessions` ready sessions."""
    with servers(before, {}) as running, holding(running, sessions, pair=True) as opened:
        time.sleep(2)
        result: dict[str, Any] = {"sessions": sessions, "churn": count, "opened": opened}
        used = dict.fromkeys(running, 0.0)
        for _ in range(0, count, CHUNK):  # in turns, so that both see the same machine
            for version, server in running.items():
                cpu = server.cpu_s()
                asyncio.run(churn(server.url, CHUNK))
                used[version] += server.cpu_s() - cpu
        for version, cpu in used.items():
            per = cpu * 1000 / (count // CHUNK * CHUNK)
            result[f"{version}_ms_per_connection"] = round(per, 3)
            print(f"{version}: {per:.3f} ms of server CPU per connect + disconnect")
        result["ratio_after_before"] = round(
            result["after_ms_per_connection"] / result["before_ms_per_connection"], 3
        )
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,2000,10000")
    parser.add_argument("--server-sessions", type=int, default=0)
    parser.add_argument("--before", type=Path, help="checkout to compare with (servers)")
    parser.add_argument("--churn", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    if args.clients:
        result["managers"] = managers([int(n) for n in args.clients.split(",")])
    if args.server_sessions:
        if args.before is None:
            parser.error("--server-sessions needs --before")
        result["servers"] = side_by_side(args.before, args.server_sessions, args.churn)
    emit(result, args.json)


if __name__ == "__main__":
    main()
