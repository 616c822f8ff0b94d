"""PostgresLeases at scale, against a real PostgreSQL: a process's PostgreSQL locks do not
grow with its devices (the server's lock table is shared by every database and
client), and the races the lease log's unique open grant decides: two processes
granting the same keys at once, a holder killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.store.leases import PostgresLeases
from tests.helpers import (
    POSTGRES_URL,
    lease_log,
    older_lease_log,
    overlapping_grants,
    postgres_available,
    postgres_schema,
)
from tests.integration.test_leases import opened

pytestmark = pytest.mark.skipif(
    not postgres_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432"
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema("leasescale") as name:
        yield name


def locks_of(leases: PostgresLeases) -> list[tuple[str, str]]:
    """The rows of pg_locks held or awaited by the process's connections (its own name,
    and its waiters'): (locktype, mode)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT locktype, mode FROM pg_locks WHERE pid IN (SELECT pid FROM "
            "pg_stat_activity WHERE application_name IN (%s, %s)) ORDER BY 1, 2",
            (f"pairgate:{leases.holder}", f"pairgate-wait:{leases.holder}"),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


async def settled_locks_of(
    leases: PostgresLeases, at_most: int = 0, looks: int = 10
) -> list[tuple[str, str]]:
    """`locks_of`, the fewest of `looks` looks 30 ms apart (the first of at most `at_most`
    ends them): not those a statement of its background work (its look for new
    processes, every second; its lease check) holds for a moment, however long a loaded
    machine makes that moment."""
    seen = []
    for _ in range(looks):
        seen.append(await asyncio.to_thread(locks_of, leases))
        if len(seen[-1]) <= at_most:
            break
        await asyncio.sleep(0.03)
    return min(seen, key=len)


async def test_the_locks_a_process_holds_do_not_grow_with_its_leases(schema: str) -> None:
    other = await opened(schema)  # (its lock, which this process waits on, counts too)
    leases = await opened(schema)
    try:
        while other.holder not in leases._processes._waiting:
            await asyncio.sleep(0.05)
        assert await leases.acquire("device-0")
        one = await settled_locks_of(leases)
        assert ("advisory", "ExclusiveLock") in one  # (the control: its own lock is seen)
        keys = [f"device-{n}" for n in range(2_000)]
        assert await leases.acquire_many(keys) == set(keys[1:])
        assert leases.held == set(keys)
        many = await settled_locks_of(leases, at_most=len(one), looks=300)
        assert len(many) <= len(one), many
    finally:
        await leases.close()
        await other.close()


async def test_two_processes_granting_the_same_keys_at_once_get_each_once(schema: str) -> None:
    """Each round both take the same keys in one batch each, at the same moment (in other
    orders): every key goes to one of them, and the lease log holds one grant of it."""
    first, second = await opened(schema), await opened(schema)
    keys = [f"device-{n}" for n in range(300)]
    try:
        for round in range(5):
            mine, theirs = random.sample(keys, len(keys)), random.sample(keys, len(keys))
            a, b = await asyncio.gather(first.acquire_many(mine), second.acquire_many(theirs))
            assert not a & b and a | b == set(keys), round
            assert first.held == a and second.held == b
            grants = lease_log(schema)
            assert len(grants) == len(keys) * (round + 1)
            assert sum(released is None for *_, released in grants) == len(keys)
            await asyncio.gather(first.release_many(a), second.release_many(b))
    finally:
        await first.close()
        await second.close()
    grants = lease_log(schema)
    assert overlapping_grants(grants) == []
    assert all(released is not None for *_, released in grants)


HOLDER = """
import asyncio, sys
from adapters.store.leases import PostgresLeases

async def main():
    leases = PostgresLeases(sys.argv[1], schema=sys.argv[2], check_interval=0.2)
    await leases.open({}, lambda keys: asyncio.sleep(0))
    keys = sys.argv[3].split(",")
    assert await leases.acquire_many(keys) == set(keys)
    print(leases.holder, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_holder_killed_with_sigkill_hands_its_keys_to_the_survivor(schema: str) -> None:
    keys = [f"device-{n}" for n in range(200)]
    gone: list[list[str]] = []
    survivor = PostgresLeases(POSTGRES_URL, schema=schema, check_interval=0.2)

    async def on_gone(dead: Iterable[str]) -> None:
        gone.append(sorted(dead))
        await survivor.acquire_many(list(dead))

    await survivor.open({}, lambda keys: asyncio.sleep(0), on_gone)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, POSTGRES_URL, schema, ",".join(keys)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        holder = (await asyncio.to_thread(process.stdout.readline)).strip()
        assert holder
        assert await survivor.acquire_many(keys) == set()  # its, while it lives
        while holder not in survivor._processes._waiting:
            await asyncio.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        for _ in range(200):
            if survivor.held == set(keys):
                break
            await asyncio.sleep(0.05)
        assert survivor.held == set(keys)
        assert gone == [sorted(keys)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
        await survivor.close()
    grants = lease_log(schema)
    assert overlapping_grants(grants) == []
    assert sorted(holder_ for _, holder_, _, _ in grants) == sorted(
        [holder] * len(keys) + [survivor.holder] * len(keys)
    )


async def test_a_lease_log_of_the_advisory_lock_version_gets_its_unique_open_grants(
    schema: str,
) -> None:
    """Its table has no unique index on the open grants: the first open closes a key's
    older open grants (the newest stays) and adds it, while two processes open at once."""
    table = older_lease_log(
        schema, [("k", "gone", False), ("k", "gone", False), ("j", "gone", False)]
    )
    first, second = await asyncio.gather(opened(schema), opened(schema))
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            rows = admin.execute(
                f"SELECT id, key, released_at IS NULL FROM {table} ORDER BY id"
            ).fetchall()
            assert rows == [(1, "k", False), (2, "k", True), (3, "j", True)]
            with pytest.raises(psycopg.errors.UniqueViolation):
                admin.execute(f"INSERT INTO {table} (key, holder) VALUES ('j', 'another')")
        assert await first._processes._open_grants(first._connection(), "gone") == ["j", "k"]
        assert await first.acquire("k") and not await second.acquire("k")
    finally:
        await first.close()
        await second.close()
