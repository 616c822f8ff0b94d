"""Failover after `kill -9`: how long until a killed process's devices run on a survivor.

    python -m benchmarks.failover --processes 2,3 --runs 20 --devices 100 --json failover.json

Per number of processes, on PostgreSQL (127.0.0.1:5432, database `test`, a schema of its
own, dropped afterwards): the devices are spread over `pairgate serve --simulate`
processes as a deployment grows (before each process starts, its share is recorded
ready in the store, as a process that died would leave them, and it resumes them; the
others already hold theirs). Each run kills (SIGKILL) the process running the most
devices and times, from the kill, until every device is ready again (the survivors'
`pairgate_sessions{state="ready"}` add up to all of them), then starts a replacement,
so that every run has as many processes; the replacement waits on the others' locks
(and they on its) before the next kill. The takeover backstop
(PAIRGATE_TAKEOVER_INTERVAL) is set to an hour: survivors hear of a death only by
waiting on the dead process's own lock, which is what is measured.

The lease log (`pairgate_lease_log`) is the evidence that no key ran in two processes at
once: no two grants of a key overlap, and each device of a killed process was granted
to a survivor only after the kill (PostgreSQL's clock is this machine's).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from adapters.store.failover import PROCESSES, waiter_name
from benchmarks.common import ServerProcess, emit, pairgate_server, percentiles
from benchmarks.scale import environment, fill, progress, ready_devices, store_place, wait
from tests.helpers import POSTGRES_URL, lease_log, overlapping_grants

TAKEOVER_INTERVAL = "3600"  # seconds: the backstop that reads every live key stays out of it
TIMEOUT = 300.0  # seconds any one wait may take before the benchmark gives up


@dataclass
class Deployment:
    """Processes sharing one store, and what they were started with."""

    data_dir: Path
    schema: str
    env: dict[str, str]
    servers: list[ServerProcess] = field(default_factory=list)
    started: int = 0

    def start(self, devices: int = 0) -> ServerProcess:
        """One more process (with `devices` of its own recorded first), once it runs them
        and every process waits on every other's lock."""
        self.started += 1
        if devices:
            fill(self.env, devices, f"{uuid.uuid4().hex[:8]}p{self.started}")
        server = pairgate_server(self.data_dir / f"process{self.started}", self.env, TIMEOUT)
        self.servers.append(server)
        wait(lambda: progress(server)["http_status"] == 200, TIMEOUT)
        wait(lambda: ready_devices(server) >= devices, TIMEOUT)
        wait(self.waiting_on_each_other, TIMEOUT)
        return server

    def holders(self) -> set[str]:
        """The processes registered in the store (a dead one until a survivor has it)."""
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            rows = connection.execute(f'SELECT holder FROM "{self.schema}"."{PROCESSES}"')
            return {row[0] for row in rows.fetchall()}

    def waiting_on_each_other(self) -> bool:
        holders = self.holders()
        if len(holders) != len(self.servers):
            return False
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            found = connection.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = ANY(%s) AND wait_event_type = 'Lock'",
                ([waiter_name(holder) for holder in holders],),
            ).fetchone()
        return bool(found and found[0] == len(holders) * (len(holders) - 1))

    def stop(self) -> None:
        for server in self.servers:
            server.process.terminate()
        for server in self.servers:
            server.stop()  # (waits; kills what a grace did not stop)
        self.servers.clear()


def kill_one(deployment: Deployment, devices: int) -> dict[str, Any]:
    """SIGKILL the process running the most devices; time until all run again."""
    running = [ready_devices(server) for server in deployment.servers]
    victim = deployment.servers[running.index(max(running))]
    survivors = [server for server in deployment.servers if server is not victim]
    holders = deployment.holders()
    cpu = sum(server.cpu_s() for server in survivors)
    killed_at = time.time()
    started = time.monotonic()
    victim.process.kill()
    wait(lambda: sum(ready_devices(server) for server in survivors) >= devices, TIMEOUT)
    took = time.monotonic() - started
    cpu = sum(server.cpu_s() for server in survivors) - cpu
    victim.process.wait(TIMEOUT)
    deployment.servers.remove(victim)
    (gone,) = holders - deployment.holders()
    return {
        "failover_s": round(took, 3),
        "devices_moved": max(running),
        # The survivors' CPU time meanwhile (against the failover's: how much was their work).
        "survivors_cpu_s": round(cpu, 2),
        **granted_after(deployment.schema, gone, killed_at),
        "killed_at": datetime.fromtimestamp(killed_at, UTC).isoformat(),  # (for the logs)
    }


def granted_after(schema: str, gone: str, killed_at: float) -> dict[str, Any]:
    """From the lease log: when the killed process's devices were granted to survivors
    (seconds after the kill), and how many were granted before it (none may be)."""
    grants = lease_log(schema)
    later = [
        next_grant
        for grant, next_grant in zip(grants, grants[1:], strict=False)
        if grant[1] == gone and next_grant[0] == grant[0]
        if grant[3] is None or grant[3].timestamp() >= killed_at
    ]
    after = [next_grant[2].timestamp() - killed_at for next_grant in later]
    return {
        "leases_taken_over": len(after),
        "granted_before_kill": sum(1 for seconds in after if seconds < 0),
        "first_lease_s": round(min(after), 3) if after else None,
        "last_lease_s": round(max(after), 3) if after else None,
    }


def case(
    processes: int, runs: int, devices: int, resume_rate: str, log_level: str = "warning"
) -> dict[str, Any]:
    load_before = tuple(round(n, 2) for n in os.getloadavg())
    measured: list[dict[str, Any]] = []
    with store_place("postgres") as (data_dir, schema):
        assert schema is not None
        env = environment("postgres", data_dir, schema)
        env["PAIRGATE_RESUME_RATE"] = resume_rate
        env["PAIRGATE_TAKEOVER_INTERVAL"] = TAKEOVER_INTERVAL
        env["PAIRGATE_LOG_LEVEL"] = log_level
        deployment = Deployment(data_dir, schema, env)
        try:
            for index in range(processes):  # devices spread as evenly as they go
                deployment.start(devices // processes + (index < devices % processes))
            for run in range(runs):
                measured.append(kill_one(deployment, devices) | {"run": run + 1})
                print(f"{processes} processes, run {run + 1}: {measured[-1]}", flush=True)
                if run + 1 < runs:
                    deployment.start()  # the replacement
        finally:
            deployment.stop()
        grants = lease_log(schema)
    return summary(processes, devices, measured, grants, load_before)


def summary(
    processes: int,
    devices: int,
    measured: list[dict[str, Any]],
    grants: list[Any],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    def of(name: str) -> list[float]:
        return [run[name] for run in measured if run[name] is not None]

    overlaps = overlapping_grants(grants)
    return {
        "processes": processes,
        "devices": devices,
        "runs": len(measured),
        # Nearest rank: with 20 runs or fewer, p99 is the slowest run (the max).
        "failover_s": percentiles(of("failover_s")),
        "last_lease_s": percentiles(of("last_lease_s")),
        "devices_moved": {"min": min(of("devices_moved")), "max": max(of("devices_moved"))},
        "runs_over_1s": sum(1 for seconds in of("failover_s") if seconds > 1),
        "lease_log": {
            "grants": len(grants),
            "overlapping": len(overlaps),
            "granted_before_kill": sum(run["granted_before_kill"] for run in measured),
            "examples": [[str(part) for part in pair] for pair in overlaps[:3]],
        },
        "load_average": {
            "before": load_before,
            "after": tuple(round(n, 2) for n in os.getloadavg()),
        },
        "each_run": measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="2,3", help="numbers of processes, e.g. 2,3")
    parser.add_argument("--runs", type=int, default=20, help="kills per number of processes")
    parser.add_argument("--devices", type=int, default=100, help="devices in the deployment")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--resume-rate", default="0", help="PAIRGATE_RESUME_RATE (0: as fast as it can)"
    )
    parser.add_argument(
        "--log-level", default="warning", help="the processes' (info: when each device starts)"
    )
    args = parser.parse_args()
    results = [
        case(int(count), args.runs, args.devices, args.resume_rate, args.log_level)
        for count in args.processes.split(",")
    ]
    for result in results:
        print(
            f"{result['processes']} processes, {result['devices']} devices, "
            f"{result['runs']} kills: failover {result['failover_s']} s "
            f"(p99 of {result['runs']} runs is the slowest), over 1 s: {result['runs_over_1s']}; "
            f"lease log: {result['lease_log']['overlapping']} overlapping grants, "
            f"{result['lease_log']['granted_before_kill']} granted before the kill",
            flush=True,
        )
    emit({"results": results, "resume_rate": args.resume_rate}, args.json)


if __name__ == "__main__":
    main()
