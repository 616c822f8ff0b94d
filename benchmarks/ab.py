"""Two pairgate versions side by side, measured at the same moment.

    git worktree add /tmp/before <commit>
    python -m benchmarks.ab --before /tmp/before --case load --rate 60 --duration 15
    python -m benchmarks.ab --before /tmp/before --case unpaired --sessions 2000 --rotate 20
    python -m benchmarks.ab --before baseline --case load --rate 100 --duration 15
    python -m benchmarks.ab --before baseline --case load --rate 50 --duration 10 --hold 2000

A shared VM's speed drifts by tens of percent within minutes, so two runs minutes apart
cannot show a 10% change. Here both servers run at once under the same load, each with
its own client processes: `before` is `pairgate serve --simulate` with the given checkout
first on PYTHONPATH, `after` is this working tree. Reported per run and over all runs:
server CPU per pairing (case `load`: open-loop arrivals at `--rate`, as benchmarks.load) or
per QR rotation (case `unpaired`: idle sessions whose code rotates every `--rotate` s, as
benchmarks.idle), and the ratio after / before: over all runs, and each run's (their median
and range say how far the runs agree). `--before baseline` puts the bare
python-socketio baseline (benchmarks.baseline_app) on the other side: pairgate's cost
against what it builds on, at the same moment (benchmarks.load runs them one after the
other, so its ratio moves with the machine). `--hold N`: during the load, each server also
holds N ready sessions with their clients connected, as a service does (their idle
pings count too). `--after-env NAME=VALUE` sets a setting of `after` alone: with
`--before .` (this tree on both sides) it measures what the setting costs or saves.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.common import ServerProcess, baseline_server, emit, pairgate_server, percentiles
from benchmarks.idle import client_process
from benchmarks.load import offer

VERSIONS = ("before", "after")
# `--before baseline`: the bare python-socketio baseline (benchmarks.baseline_app) as the
# other side, at the same moment (case load): pairgate's cost against what it builds on.
BASELINE = Path("baseline")


@contextmanager
def servers(
    before: Path, env: dict[str, str], after_env: dict[str, str] | None = None
) -> Iterator[dict[str, ServerProcess]]:
    """Both versions' servers, each on its own SQLite store (`before` may be the bare
    baseline instead: BASELINE); `after_env`: settings of the `after` server alone."""
    data_dirs = [Path(tempfile.mkdtemp(prefix=f"pairgate-ab-{v}-")) for v in VERSIONS]
    started: dict[str, ServerProcess] = {}
    try:
        for version, data_dir in zip(VERSIONS, data_dirs, strict=True):
            if version == "before" and before == BASELINE:
                started[version] = baseline_server()
                continue
            extra = {"PYTHONPATH": str(before)} if version == "before" else after_env or {}
            started[version] = pairgate_server(data_dir, {**env, **extra})
        yield started
    finally:
        for server in started.values():
            server.stop()
        for data_dir in data_dirs:
            shutil.rmtree(data_dir, ignore_errors=True)


Measured = dict[str, tuple[float, int, dict[str, float | None]]]


class RunFailed(Exception):
    """A run in which a version failed some of its load: not a measurement."""


def load_run(args: argparse.Namespace) -> Measured:
    """Server CPU seconds, pairings and the create→QR p99 of each version under the same
    open-loop load."""
    with (
        servers(args.before, {}, args.after_env) as running,
        holding(running, args.hold, pair=True),
        ThreadPoolExecutor(len(VERSIONS)) as pool,
    ):

        def drive(rate: float, duration: float) -> Callable[[ServerProcess], Any]:
            return lambda server: offer(server.url, rate, duration, 1)

        list(pool.map(drive(5, 1), running.values()))  # warm-up
        before = {v: s.cpu_s() for v, s in running.items()}
        offered = pool.map(drive(args.rate, args.duration), running.values())
        results = dict(zip(running, offered, strict=True))
        counts, latency = {}, {}
        for version, (outcomes, _) in results.items():
            failed = sum(1 for o in outcomes if o.error is not None)
            if failed:
                raise RunFailed(f"{version}: {failed} of {len(outcomes)} pairings failed")
            counts[version] = len(outcomes)
            latency[version] = percentiles(
                [o.create_to_qr_ms for o in outcomes if o.create_to_qr_ms]
            )
        return {
            v: (
                s.cpu_s() - before[v],
                counts[v],
                {
                    "p50_create_to_qr_ms": latency[v]["p50"],
                    "p99_create_to_qr_ms": latency[v]["p99"],
                },
            )
            for v, s in running.items()
        }


def unpaired_run(args: argparse.Namespace) -> Measured:
    """Server CPU seconds and QR rotations of each version over the same idle window."""
    env = {
        "PAIRGATE_SIM_QR_TIMEOUTS": ",".join([str(args.rotate)] * 200),
        "PAIRGATE_MAX_UNPAIRED": "0",
    }
    with (
        servers(args.before, env, args.after_env) as running,
        holding(running, args.sessions, pair=False),
    ):
        time.sleep(3)  # the last sessions' first codes are out
        before = {v: s.cpu_s() for v, s in running.items()}
        time.sleep(args.window)
        rotations = round(args.sessions / args.rotate * args.window)
        return {v: (s.cpu_s() - before[v], rotations, {}) for v, s in running.items()}


@contextmanager
def holding(
    running: dict[str, ServerProcess], sessions: int, pair: bool
) -> Iterator[list[dict[str, Any]]]:
    """`sessions` sessions open on each server (ready ones when `pair`), each with its
    client connected (benchmarks.idle's client, a process per server), until the end;
    yields what each client reported having opened."""
    if not sessions:
        yield []
        return
    spawn = get_context("spawn")
    pipes, clients = [], []
    for server in running.values():
        ours, theirs = spawn.Pipe()
        client = spawn.Process(target=client_process, args=(server.url, sessions, pair, theirs))
        client.start()
        pipes.append(ours)
        clients.append(client)
    try:
        opened = [pipe.recv() for pipe in pipes]
        for report in opened:
            if report["failures"]:
                raise SystemExit(f"sessions failed to open: {report}")
        yield opened
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for client in clients:
            client.join(120)


def attempt(run: Callable[[argparse.Namespace], Measured], args: argparse.Namespace) -> Measured:
    """The run, tried again (up to `--attempts` in all) while a version fails some load
    (a shared machine's busy moment)."""
    for tries in range(1, args.attempts + 1):
        try:
            return run(args)
        except RunFailed as failed:
            if tries == args.attempts:
                raise SystemExit(str(failed)) from None
            print(f"{failed}; trying the run again", flush=True)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before", type=Path, required=True, help="checkout to compare with, or `baseline`"
    )
    parser.add_argument("--case", choices=("load", "unpaired"), default="load")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=60, help="load: sessions per second")
    parser.add_argument("--duration", type=float, default=15, help="load: seconds of arrivals")
    parser.add_argument(
        "--hold", type=int, default=0, help="load: ready sessions each server holds meanwhile"
    )
    parser.add_argument("--sessions", type=int, default=2000, help="unpaired: sessions")
    parser.add_argument("--rotate", type=float, default=20.0, help="unpaired: QR lifetime (s)")
    parser.add_argument("--window", type=float, default=30.0, help="unpaired: seconds measured")
    parser.add_argument(
        "--attempts", type=int, default=1, help="tries per run when a version fails some load"
    )
    parser.add_argument(
        "--after-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the `after` server alone (repeatable): with `--before .`, what it costs",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        args.after_env = dict(item.split("=", 1) for item in args.after_env)
    except ValueError:
        raise SystemExit("--after-env takes NAME=VALUE") from None
    if args.before == BASELINE and args.case != "load":
        raise SystemExit("--before baseline: case load only (the baseline has no idle sessions)")
    if args.before != BASELINE and not (args.before / "domain").is_dir():
        raise SystemExit(f"{args.before} is not a pairgate checkout (nor `baseline`)")
    unit = "pairing" if args.case == "load" else "rotation"
    run = load_run if args.case == "load" else unpaired_run
    runs: list[dict[str, float | None]] = []
    totals: dict[str, list[float]] = {v: [0.0, 0.0] for v in VERSIONS}
    ratios: list[float] = []  # each run's after / before
    for index in range(args.runs):
        measured = attempt(run, args)
        row: dict[str, float | None] = {}
        for version, (cpu, count, extra) in measured.items():
            totals[version][0] += cpu
            totals[version][1] += count
            row[f"{version}_ms_per_{unit}"] = round(1000 * cpu / count, 3)
            row |= {f"{version}_{name}": value for name, value in extra.items()}
        cost = {version: cpu / count for version, (cpu, count, _) in measured.items()}
        ratios.append(cost["after"] / cost["before"])
        row["ratio"] = round(ratios[-1], 3)
        runs.append(row)
        print(f"run {index + 1}: {row}", flush=True)
    per = {v: 1000 * cpu / count for v, (cpu, count) in totals.items()}
    emit(
        {
            "benchmark": "ab",
            "case": args.case,
            "before": str(args.before),
            "after_env": args.after_env,
            "runs": runs,
            **{f"{v}_ms_per_{unit}": round(per[v], 3) for v in VERSIONS},
            "ratio_after_before": round(per["after"] / per["before"], 3),
            # How far the runs agree: a machine's drift moves single runs by several percent.
            "median_run_ratio": round(statistics.median(ratios), 3),
            "run_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
