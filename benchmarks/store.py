"""The event store through the application layer: append rate and history load times.

    python -m benchmarks.store --json store.json

For each store (a SQLite file in a temporary directory; PostgreSQL at
`--postgres`, in a schema of its own that is dropped afterwards, when a server answers):
events appended per second through `DeviceSessions` (load the session, run a command,
save: what pairgate does for every engine report), from one thread and from
`--threads` threads on different keys; then one session of `--events` events loaded
with and without snapshots (every `--interval` events).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.store.config import StoreConfig, open_store
from benchmarks.common import emit
from domain.application.sessions import DeviceSessions

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
LONG = "long-history"


def append_rate(config: StoreConfig, events: int, threads: int) -> dict[str, Any]:
    """Events per second: each thread creates its own sessions and issues QR codes on them."""
    sessions = open_store(config)
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    per_thread = events // threads

    def work(thread: int) -> None:
        key = f"append-{run}-{thread}"
        for number in range(per_thread):
            if number % 10 == 0:  # a new session every 10 events: creates are appends too
                key = f"append-{run}-{thread}-{number}"
                sessions.create(key, "Bench", "simulator", "bench")
            else:
                sessions.update(key, lambda s, n=number: s.issue_qr(f"code-{n}", 20, now))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    elapsed = time.perf_counter() - started
    sessions.close()
    return {
        "threads": threads,
        "events": per_thread * threads,
        "events_per_s": round(per_thread * threads / elapsed),
    }


def write_history(config: StoreConfig, events: int) -> float:
    """One session of `events` events; the seconds it took."""
    sessions = open_store(config)
    started = time.perf_counter()
    sessions.create(LONG, "Bench", "simulator", "bench")
    now = datetime.now(UTC)
    for number in range(events - 1):
        sessions.update(LONG, lambda s, n=number: s.issue_qr(f"code-{n}", 20, now))
    sessions.close()
    return time.perf_counter() - started


def load_times_ms(sessions: DeviceSessions, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session = sessions.get(LONG)
        times.append((time.perf_counter() - started) * 1000)
    assert session.version >= 1
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "max_ms": round(ordered[-1], 3),
    }


def history_load(config: StoreConfig, events: int, interval: int, repeats: int) -> dict[str, Any]:
    """Write a long history with snapshots, then load it with and without them."""
    write_s = write_history(replace(config, snapshot_interval=interval), events)
    result: dict[str, Any] = {"events": events, "snapshot_interval": interval}
    result["write_s"] = round(write_s, 2)
    for label, every in (("with_snapshots", interval), ("without_snapshots", 0)):
        sessions = open_store(replace(config, snapshot_interval=every))
        runs = repeats if every else max(3, repeats // 10)
        result[label] = summary(load_times_ms(sessions, runs))
        sessions.close()
    return result


@contextmanager
def sqlite_store() -> Iterator[StoreConfig]:
    with tempfile.TemporaryDirectory(prefix="pairgate-store-") as tmp:
        yield StoreConfig(kind="sqlite", data_dir=Path(tmp))


@contextmanager
def postgres_store(url: str) -> Iterator[StoreConfig]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield StoreConfig(kind="postgres", database_url=f"{url}?schema={schema}")
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def postgres_answers(url: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return url.startswith("postgresql://")
    except OSError:
        return False


def bench(config: StoreConfig, args: argparse.Namespace) -> dict[str, Any]:
    appends = [
        append_rate(config, args.appends, 1),
        append_rate(config, args.appends, args.threads),
    ]
    history = history_load(config, args.events, args.interval, args.repeats)
    return {"append": appends, "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=3000, help="events per append run")
    parser.add_argument("--threads", type=int, default=4, help="like PAIRGATE_STORE_THREADS")
    parser.add_argument("--events", type=int, default=10_000, help="length of the long history")
    parser.add_argument("--interval", type=int, default=50, help="snapshot every N events")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]

    result: dict[str, Any] = {"benchmark": "store"}
    if "sqlite" in stores:
        with sqlite_store() as config:
            result["sqlite"] = bench(config, args)
    if "postgres" in stores:
        if postgres_answers(args.postgres):
            with postgres_store(args.postgres) as config:
                result["postgres"] = bench(config, args)
        else:
            result["postgres"] = {"skipped": f"no PostgreSQL server at {args.postgres}"}
    emit(result, args.json)


if __name__ == "__main__":
    main()
