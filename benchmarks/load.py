"""Pairing latency and capacity under an open-loop load, pairgate beside a bare baseline.

    python -m benchmarks.load --rate 100 --duration 10 --json load.json
    python -m benchmarks.load --find-max --json max.json

Each target runs as its own server process: `pairgate serve --simulate` (SQLite store in a
temporary directory) and benchmarks/baseline_app (bare python-socketio on the same uvicorn
with the same QR renderer). The load comes from `--clients` separate processes
(benchmarks/load_client.py): arrivals at `--rate` sessions per second, each a websocket
Socket.IO client running the seed flow. `--find-max` raises the rate until p99
create→QR exceeds `--max-p99-ms` or an arrival fails, for both targets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.common import ServerProcess, baseline_server, emit, pairgate_server, percentiles
from benchmarks.load_client import Outcome, run_process

TARGETS: dict[str, Callable[[Path, dict[str, str]], ServerProcess]] = {
    "pairgate": pairgate_server,
    "baseline": lambda data_dir, env: baseline_server(),
}


def offer(url: str, rate: float, duration: float, clients: int) -> tuple[list[Outcome], float]:
    """Run the open-loop load from `clients` processes: every arrival's outcome, client CPU s."""
    run = os.urandom(3).hex()
    start = time.time() + 1.0  # every process is up before the first arrival is due
    with ProcessPoolExecutor(clients, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_process, url, rate, duration, start, offset, clients, run)
            for offset in range(clients)
        ]
        results = [future.result() for future in futures]
    return [o for outcomes, _ in results for o in outcomes], sum(cpu for _, cpu in results)


def summarise(outcomes: list[Outcome], rate: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.error is None]
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.error is not None:
            kind = outcome.error.split(":", 1)[0]
            errors[kind] = errors.get(kind, 0) + 1
    first = min((o.scheduled for o in outcomes), default=0.0)
    last = max((o.done for o in ok if o.done is not None), default=first)
    return {
        "sessions": len(outcomes),
        "create_to_qr_ms": percentiles([o.create_to_qr_ms for o in ok if o.create_to_qr_ms]),
        "scan_to_ready_ms": percentiles([o.scan_to_ready_ms for o in ok if o.scan_to_ready_ms]),
        "connect_ms": percentiles([o.connect_ms for o in ok if o.connect_ms]),
        "errors": len(outcomes) - len(ok),
        "error_kinds": errors,
        "example_error": next((o.error for o in outcomes if o.error), None),
        # Sessions that reached ready per second, first arrival to last ready.
        "achieved_rate": round(len(ok) / (last - first), 1) if last > first else 0.0,
        # How late the load generator itself started arrivals: large means it, not the
        # server, was the bottleneck.
        "arrival_lag_ms_p99": percentiles([o.lag_ms for o in outcomes])["p99"],
    }


def measure(
    target: str, rate: float, duration: float, clients: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One fresh server, a short warm-up, then the measured load."""
    data_dir = Path(tempfile.mkdtemp(prefix="pairgate-load-"))
    server = TARGETS[target](data_dir, env or {})
    try:
        offer(server.url, 5, 1, 1)  # warm-up: imports, QR layouts, store tables
        cpu_before = server.cpu_s()
        outcomes, client_cpu_s = offer(server.url, rate, duration, clients)
        result = summarise(outcomes, rate)
        result["cpu_s"] = round(server.cpu_s() - cpu_before, 2)
        # The load generator's own CPU: near `clients` cores per second, it is the bottleneck.
        result["client_cpu_s"] = round(client_cpu_s, 2)
        result["rss_mb"] = round(server.rss_mb(), 1)
        return result
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


SUSTAINED = 0.95  # share of the offered rate that must reach ready for a step to count


def passes(result: dict[str, Any], max_p99_ms: float) -> bool:
    p99 = result["create_to_qr_ms"]["p99"]
    return result["errors"] == 0 and p99 is not None and p99 <= max_p99_ms


def find_max(target: str, args: argparse.Namespace) -> dict[str, Any]:
    """Geometric steps (×`--step-factor`) until a step fails, then bisect twice."""
    steps: list[dict[str, Any]] = []

    def step(rate: float) -> bool:
        result = measure(target, rate, args.step_duration, args.clients, args.env)
        ok = passes(result, args.max_p99_ms)
        steps.append({"rate": rate, "pass": ok, **result})
        qr = result["create_to_qr_ms"]
        print(
            f"{target} {rate:.0f}/s: p99 create->qr {qr['p99']} ms, errors "
            f"{result['errors']}, achieved {result['achieved_rate']}/s, "
            f"cpu {result['cpu_s']} s -> {'pass' if ok else 'FAIL'}",
            flush=True,
        )
        return ok

    good, bad, rate = 0.0, None, args.start_rate
    while rate <= args.ceiling:
        if not step(rate):
            bad = rate
            break
        good, rate = rate, round(rate * args.step_factor)
    for _ in range(2 if bad is not None and good else 0):
        middle = round((good + bad) / 2)  # type: ignore[operator]
        if step(middle):
            good = middle
        else:
            bad = middle
    # The criterion above watches create -> QR only; a server can keep that fast while
    # scans queue up. The highest passing rate whose pairings also all completed at the
    # offered pace (ready at >= SUSTAINED of it) is what it sustains.
    kept_up = [
        s["rate"] for s in steps if s["pass"] and s["achieved_rate"] >= SUSTAINED * s["rate"]
    ]
    sustained = max(kept_up, default=0.0)
    return {
        "max_rate": good,
        "sustained_rate": sustained,
        "first_failing_rate": bad,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100, help="sessions per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds of arrivals")
    parser.add_argument("--clients", type=int, default=2, help="load-generating processes")
    parser.add_argument("--targets", default="pairgate,baseline")
    parser.add_argument("--find-max", action="store_true")
    parser.add_argument("--max-p99-ms", type=float, default=100.0)
    parser.add_argument("--start-rate", type=float, default=50)
    parser.add_argument("--step-factor", type=float, default=1.3)
    parser.add_argument("--step-duration", type=float, default=5)
    parser.add_argument("--ceiling", type=float, default=2000)
    parser.add_argument(
        "--pairgate-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for pairgate, e.g. PAIRGATE_STORE=memory (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    args.env = dict(item.split("=", 1) for item in args.pairgate_env)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]

    if args.find_max:
        result: dict[str, Any] = {"benchmark": "load.find_max", "max_p99_ms": args.max_p99_ms}
        result["pairgate_env"] = args.env
        for target in targets:
            result[target] = find_max(target, args)
        if {"pairgate", "baseline"} <= set(result) and result["baseline"]["max_rate"]:
            ratio = result["pairgate"]["max_rate"] / result["baseline"]["max_rate"]
            result["ratio"] = round(ratio, 2)
            if result["baseline"]["sustained_rate"]:
                sustained = (
                    result["pairgate"]["sustained_rate"] / result["baseline"]["sustained_rate"]
                )
                result["sustained_ratio"] = round(sustained, 2)
    else:
        result = {"benchmark": "load", "rate": args.rate, "duration_s": args.duration}
        result["pairgate_env"] = args.env
        for target in targets:
            result[target] = measure(target, args.rate, args.duration, args.clients, args.env)
    emit(result, args.json)


if __name__ == "__main__":
    main()
