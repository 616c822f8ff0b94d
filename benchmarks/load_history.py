"""How long loading a session with a long history takes, with and without snapshots.

    python -m benchmarks.load_history --events 10000 --interval 50 --json out.json

Writes one session of N events to a SQLite store in a temporary directory (snapshots every
`--interval` events), then loads it repeatedly through eventsourcing's repository, once
reading from the latest snapshot and once replaying every event.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from adapters.store import StoreConfig, open_store
from domain.services import DeviceSessions

KEY = "long-history"


def write_history(data_dir: Path, events: int, interval: int) -> None:
    sessions = open_store(StoreConfig(data_dir=data_dir, snapshot_interval=interval))
    sessions.create(KEY, "Bench", "simulator", "bench")
    now = datetime.now(UTC)
    for number in range(events - 1):
        sessions.update(KEY, lambda s, n=number: s.issue_qr(f"code-{n}", 20, now))
    sessions.close()


def load_times_ms(sessions: DeviceSessions, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session = sessions.get(KEY)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pairgate-bench-") as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        write_history(data_dir, args.events, args.interval)
        write_s = time.perf_counter() - started
        results = {}
        for label, interval in (("with_snapshots", args.interval), ("without_snapshots", 0)):
            sessions = open_store(StoreConfig(data_dir=data_dir, snapshot_interval=interval))
            repeats = args.repeats if interval else max(3, args.repeats // 10)
            results[label] = summary(load_times_ms(sessions, repeats))
            sessions.close()

    result = {
        "benchmark": "load_history",
        "store": "sqlite",
        "events": args.events,
        "snapshot_interval": args.interval,
        "write_s": round(write_s, 2),
        **results,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
