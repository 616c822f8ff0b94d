"""How pairgate's costs grow with the number of devices in a store.

    python -m benchmarks.scale --devices 1000,10000,100000 --stores sqlite,postgres \
        --json scale.json --plots docs/performance

Per store and size: the store is filled directly (N paired devices recorded ready, as a
process that died would leave them, with the simulator's keys), then `pairgate serve
--simulate` is started on it (time to `/healthz`, to `/readyz`, to every device resumed;
RSS per ready device), stopped with SIGTERM (stop time), started again (the planned
restart's times), and, on PostgreSQL, a second process takes every device over after
the first is killed with SIGKILL (failover time). Once per store: one key with 10,000
events, and the time to read the first and the last page of its history over HTTP.
Writes a JSON file and, with matplotlib (`pip install 'pairgate[bench]'`), one PNG per
measure against the number of devices.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import ServerProcess, emit, pairgate_server
from tests.helpers import POSTGRES_URL, postgres_schema

RESUME_RATE = ["0"]  # PAIRGATE_RESUME_RATE of the servers (--resume-rate)
LOG_LEVEL = ["warning"]  # PAIRGATE_LOG_LEVEL of the servers (--log-level)
CHUNK = 1000  # sessions recorded per transaction while filling
HISTORY_EVENTS = [10_000]  # events of the history case's key (--history-events)
READS = 5  # reads of each history page
MEASURES = {  # what each figure shows, and its unit
    "fill_s": "fill time (s)",
    "rss_per_device_kb": "RSS per ready device (KiB)",
    "first_healthz_s": "start after a crash: /healthz (s)",
    "first_resumed_s": "start after a crash: all resumed (s)",
    "stop_s": "SIGTERM: stop (s)",
    "healthz_s": "planned restart: /healthz (s)",
    "readyz_s": "planned restart: /readyz (s)",
    "resumed_s": "planned restart: all resumed (s)",
    "failover_s": "kill -9, 2 processes: all taken over (s)",
}


def fill(env: dict[str, str], count: int, run: str) -> float:
    """Record `count` ready devices straight into the store (and their simulated keys)."""
    from adapters.credentials import CredentialVault
    from adapters.engines.simulated_keys import SimulatedKeys
    from adapters.store.config import open_store
    from domain.model.session import DeviceSession

    started = time.monotonic()
    settings = settings_of(env)
    sessions = open_store(settings.store_config())
    keys = SimulatedKeys(CredentialVault(settings.credentials_path), "simulator")
    try:
        for first in range(0, count, CHUNK):
            events = []
            for index in range(first, min(count, first + CHUNK)):
                key = f"scale-{run}-{index}"
                session = DeviceSession(key=key, name="Scale", engine="simulator", owner="default")
                session.issue_qr("code", 60.0, datetime.now(UTC))
                session.authenticate()
                session.mark_ready()
                events += session.collect_events()
                keys.store(key, b"{}")
            sessions.events.put(events)
    finally:
        keys.close()
        sessions.close()
    return time.monotonic() - started


def fill_history(env: dict[str, str], key: str) -> None:
    """One key with --history-events events (QR codes rotating), with the snapshots a
    server saves on the way (every PAIRGATE_SNAPSHOT_INTERVAL events)."""
    from adapters.store.config import open_store
    from domain.model.session import DeviceSession

    settings = settings_of(env)
    interval = settings.snapshot_interval
    sessions = open_store(settings.store_config())
    try:
        session = DeviceSession(key=key, name="History", engine="simulator", owner="default")
        for index in range(HISTORY_EVENTS[0] - 1):  # the session's creation is version 1
            session.issue_qr(f"code-{index}", 60.0, datetime.now(UTC))
            if index % CHUNK == CHUNK - 1 or index == HISTORY_EVENTS[0] - 2:
                saved = sessions.events.put(session.collect_events())
                for version in (r.domain_event.originator_version for r in saved):
                    if interval and version % interval == 0:
                        sessions.take_snapshot(session.id, version=version)
    finally:
        sessions.close()


def progress(server: ServerProcess) -> dict[str, Any]:
    """/readyz's body (its `resume` progress), and how many devices are ready."""
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    body: dict[str, Any] = ready.json()
    body["http_status"] = ready.status_code
    body["ready"] = ready_devices(server)
    return body


def ready_devices(server: ServerProcess) -> int:
    """How many devices are ready in this process (its engines), from its metrics."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(r'^pairgate_sessions\{state="ready"\} ([0-9.e+]+)$', metrics, re.M)
    return int(float(found.group(1))) if found else 0


def resumed(body: dict[str, Any], count: int) -> bool:
    return bool(body["ready"] >= count)


def wait(what: Any, timeout: float = 3600) -> float:
    started = time.monotonic()
    while not answered(what):
        if time.monotonic() - started > timeout:
            raise SystemExit("timed out")
        time.sleep(0.05)
    return time.monotonic() - started


def answered(what: Any) -> bool:
    """`what()`, False while the server does not answer in time (a busy event loop)."""
    try:
        return bool(what())
    except httpx.HTTPError as error:
        print(f"no answer ({type(error).__name__}): the event loop was busy", flush=True)
        return False


def start(
    data_dir: Path, env: dict[str, str], count: int, until_resumed: bool = True
) -> tuple[ServerProcess, dict[str, float]]:
    """`until_resumed` False: returns at /readyz, the devices still resuming."""
    started = time.monotonic()
    server = pairgate_server(data_dir, env, healthy_within=3600)
    times = {"healthz_s": time.monotonic() - started}
    wait(lambda: progress(server)["http_status"] == 200)
    times["readyz_s"] = time.monotonic() - started
    if until_resumed:
        wait(lambda: resumed(progress(server), count))
        times["resumed_s"] = time.monotonic() - started
    return server, times


def stop(server: ServerProcess) -> float:
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(3600)
    return time.monotonic() - started


def case(
    store: str, count: int, empty_rss_mb: float, smoke: bool = False, quick: bool = False
) -> dict[str, Any]:
    """`smoke`: one start and its stop only. `quick`: the planned restart is timed to
    /readyz only, and stopped there (no "all resumed", no failover)."""
    run = uuid.uuid4().hex[:8]
    with store_place(store) as (data_dir, schema):
        env = environment(store, data_dir, schema)
        result: dict[str, Any] = {"store": store, "devices": count}
        result["fill_s"] = round(fill(env, count, run), 2)
        server, first = start(data_dir, env, count)
        result["first_healthz_s"] = round(first["healthz_s"], 2)
        result["first_readyz_s"] = round(first["readyz_s"], 2)  # what it settled
        result["first_resumed_s"] = round(first["resumed_s"], 2)
        result["rss_mb"] = round(server.rss_mb(), 1)
        result["rss_per_device_kb"] = round((server.rss_mb() - empty_rss_mb) * 1024 / count, 2)
        result["stop_s"] = round(stop(server), 2)
        if smoke:
            return result
        server, again = start(data_dir, env, count, until_resumed=not quick)
        result |= {name: round(value, 2) for name, value in again.items()}
        if store == "postgres" and not quick:
            other = pairgate_server(data_dir / "other", env, healthy_within=3600)
            server.process.kill()  # SIGKILL
            result["failover_s"] = round(wait(lambda: resumed(progress(other), count)), 2)
            server = other
        stop(server)
    print(result, flush=True)
    return result


def history_case(store: str) -> dict[str, Any]:
    """Each page read READS times over HTTP: the first read, and the median of all."""
    with store_place(store) as (data_dir, schema):
        env = environment(store, data_dir, schema)
        key = f"history-{uuid.uuid4().hex[:8]}"
        fill_history(env, key)
        server = pairgate_server(data_dir, env, healthy_within=600)
        try:
            url = f"{server.url}/api/sessions/{key}/history"
            times = {}
            last = f"after={HISTORY_EVENTS[0] - 100}&limit=100"
            for name, query in (("first_page", "limit=100"), ("last_page", last)):
                took = [read_page(f"{url}?{query}") for _ in range(READS)]
                times[f"history_{name}_ms"] = round(statistics.median(took), 1)
                times[f"history_{name}_cold_ms"] = round(took[0], 1)
        finally:
            stop(server)
    return {"store": store, "events": HISTORY_EVENTS[0], **times}


def read_page(url: str) -> float:
    """Milliseconds to read one page of 100 events."""
    started = time.monotonic()
    reply = httpx.get(url, timeout=60)
    took = (time.monotonic() - started) * 1000
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["events"]) == 100, reply.text[:300]
    return took


def environment(store: str, data_dir: Path, schema: str | None) -> dict[str, str]:
    env = {
        "PAIRGATE_RESUME_RATE": RESUME_RATE[0],
        "PAIRGATE_LOG_LEVEL": LOG_LEVEL[0],
        "PAIRGATE_DATA_DIR": str(data_dir),
        "PAIRGATE_CREDENTIALS_DIR": str(data_dir / "credentials"),  # shared by processes
    }
    if store == "postgres":
        env["PAIRGATE_DATABASE_URL"] = f"{POSTGRES_URL}?schema={schema}"
    return env


def settings_of(env: dict[str, str]) -> Any:
    from entrypoints.settings import Settings

    url = env.get("PAIRGATE_DATABASE_URL")
    return Settings(
        data_dir=Path(env["PAIRGATE_DATA_DIR"]),
        credentials_dir=Path(env["PAIRGATE_CREDENTIALS_DIR"]),
        **({"database_url": url} if url else {}),
    )


@contextlib.contextmanager
def store_place(store: str) -> Iterator[tuple[Path, str | None]]:
    """A temporary data directory, and a PostgreSQL schema when the store is PostgreSQL."""
    with tempfile.TemporaryDirectory(prefix="pairgate-scale-") as tmp:
        if store != "postgres":
            yield Path(tmp), None
            return
        with postgres_schema("scale") as schema:
            yield Path(tmp), schema


def empty_rss(store: str) -> tuple[float, float]:
    """An empty store's start: (seconds to /healthz, RSS in MB)."""
    with store_place(store) as (data_dir, schema):
        started = time.monotonic()
        server = pairgate_server(data_dir, environment(store, data_dir, schema))
        took = time.monotonic() - started
        rss = server.rss_mb()
        stop(server)
    return took, rss


def plot(results: list[dict[str, Any]], directory: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for measure, label in MEASURES.items():
        figure, axes = pyplot.subplots(figsize=(5, 3.2))
        for store in sorted({r["store"] for r in results}):
            points = [(r["devices"], r.get(measure)) for r in results if r["store"] == store]
            points = [p for p in points if p[1] is not None]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=store)
        axes.set_xscale("log")
        axes.set_xlabel("devices in the store")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = directory / f"scale-{measure.removesuffix('_s').removesuffix('_kb')}.png"
        figure.savefig(path, dpi=100)
        pyplot.close(figure)
        written.append(str(path))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000,10000")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plots", type=Path, help="a directory for the PNG figures")
    parser.add_argument("--no-history", action="store_true")
    parser.add_argument("--history-events", type=int, default=HISTORY_EVENTS[0])
    parser.add_argument(
        "--smoke", action="store_true", help="one start and its stop, no history (CI)"
    )
    parser.add_argument(
        "--quick-restart",
        action="store_true",
        help="time the planned restart to /readyz only (no all resumed, no failover)",
    )
    parser.add_argument("--log-level", default="warning", help="the servers' (info: recovery)")
    parser.add_argument(
        "--resume-rate", default="0", help="PAIRGATE_RESUME_RATE (0: as fast as it can)"
    )
    args = parser.parse_args()
    RESUME_RATE[0] = args.resume_rate
    LOG_LEVEL[0] = args.log_level
    HISTORY_EVENTS[0] = args.history_events
    results: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    for store in args.stores.split(","):
        rss = 0.0
        if not args.smoke:
            took, rss = empty_rss(store)
            extra[f"{store}_empty"] = {"healthz_s": round(took, 2), "rss_mb": round(rss, 1)}
        for count in (int(n) for n in args.devices.split(",") if n):  # "": history only
            results.append(case(store, count, rss, args.smoke, args.quick_restart))
        if not (args.no_history or args.smoke):
            extra[f"{store}_history"] = history_case(store)
    output: dict[str, Any] = {"results": results, **extra}
    if args.plots is not None:
        output["plots"] = plot(results, args.plots)
    emit(output, args.json)


if __name__ == "__main__":
    main()
