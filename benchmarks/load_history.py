"""How long loading a session with a long history takes, with and without snapshots.

    python -m benchmarks.load_history --events 10000 --interval 50 --json out.json

SQLite only; kept for docs/audit.md. `python -m benchmarks.store` measures the same on
SQLite and PostgreSQL, and the append rate besides.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import emit
from benchmarks.store import history_load, sqlite_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--interval", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with sqlite_store() as config:
        result = history_load(config, args.events, args.interval, args.repeats)
    emit({"benchmark": "load_history", "store": "sqlite", **result}, args.json)


if __name__ == "__main__":
    main()
