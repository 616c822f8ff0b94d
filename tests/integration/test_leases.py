"""PostgresLeases against a real PostgreSQL: one holder per key, handed over on death; with
a cipher key, the lease log holds no key in plain text."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.cryptography import AESCipher

from adapters.store.failover import process_lock
from adapters.store.leases import PostgresLeases
from adapters.store.sealing import Sealer
from domain.model.errors import EngineUnavailableError
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import (
    POSTGRES_URL,
    lease_log,
    older_lease_log,
    overlapping_grants,
    postgres_available,
    postgres_schema,
)

pytestmark = pytest.mark.skipif(
    not postgres_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432"
)


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schema("leases") as name:
        yield name


@pytest.fixture(params=[None, TEST_CIPHER_KEY], ids=["plain", "cipher"])
def sealer(request: pytest.FixtureRequest) -> Sealer:
    """The store's sealer, with and without a cipher key."""
    return Sealer(request.param)


def assert_no_plain_keys(schema: str, sealer: Sealer, keys: Iterable[str]) -> None:
    """With a cipher key no row of the lease log (any column, as text) holds any of these
    keys; without one (the control: the search finds what is there) every key is there.
    (Keys of four letters or more, not all hex digits: a blind or a sealed text holds a
    short one by chance.)"""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        rows = connection.execute(
            f'SELECT grants::text FROM "{schema}".pairgate_lease_log AS grants'
        ).fetchall()
    assert rows
    found = {key for key in keys if any(key in row[0] for row in rows)}
    assert found == (set() if sealer.encrypts else set(keys)), found


def terminate(leases: PostgresLeases) -> None:
    """End, from the server side, the process's lease connection (the one holding its own
    lock), as a crash or a network cut would; its other connections stay."""
    lock = process_lock(leases.holder, leases._schema) & 0xFFFF_FFFF_FFFF_FFFF
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        [(pid,)] = admin.execute(  # (pg_locks shows a bigint lock as two oids)
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            (lock >> 32, lock & 0xFFFF_FFFF),
        ).fetchall()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def die(leases: PostgresLeases) -> None:
    """As with kill -9: every connection of the process ends, and it never reconnects."""
    for task in leases._tasks:
        task.cancel()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"pairgate:{leases.holder}",),
        )


async def opened(
    schema: str,
    handlers: dict | None = None,  # type: ignore[type-arg]
    lost: set[str] | None = None,
    sealer: Sealer | None = None,
) -> PostgresLeases:
    """Open leases; the keys they report lost are added to `lost`."""
    leases = PostgresLeases(
        POSTGRES_URL, schema=schema, check_interval=0.2, forward_timeout=1, sealer=sealer
    )

    async def on_lost(keys: Iterable[str]) -> None:
        if lost is not None:
            lost.update(keys)

    await leases.open(handlers or {}, on_lost)
    return leases


async def test_one_holder_per_key_and_a_handover_when_it_dies(schema: str, sealer: Sealer) -> None:
    lost: set[str] = set()
    first = await opened(schema, sealer=sealer)
    second = await opened(schema, lost=lost, sealer=sealer)
    try:
        assert await first.acquire("phone") is True
        assert await first.acquire("phone") is True  # already ours
        assert await second.acquire("phone") is False
        assert await second.acquire("other") is True
        await first.release("phone")
        assert await second.acquire("phone") is True
        assert await first.acquire("phone") is False
        # PostgreSQL drops the holder's lease connection (the process lives on): its
        # grants stay open, and nobody takes its keys until it has stopped their engines
        # (its lease check notices) and closed its grants.
        terminate(second)  # with "phone" too
        third = await opened(schema, sealer=sealer)
        try:
            while not await third.acquire("phone"):
                assert not lost or "phone" in lost
                await asyncio.sleep(0.05)
            assert lost == {"phone", "other"}
        finally:
            await third.close()
    finally:
        await first.close()
        await second.close()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        rows = connection.execute(
            f'SELECT key, holder, released_at IS NOT NULL FROM "{schema}".pairgate_lease_log '
            "ORDER BY id"
        ).fetchall()
    phone = [(holder, released) for key, holder, released in rows if key == sealer.blind("phone")]
    assert [holder for holder, _ in phone] == [first.holder, second.holder, third.holder]
    assert all(released for _, released in phone)  # closed by release, takeover or close
    assert_no_plain_keys(schema, sealer, ["phone", "other"])


async def test_commands_reach_the_holder_and_its_refusals_come_back(schema: str) -> None:
    ran: list[tuple[str, dict[str, str]]] = []

    async def scan(key: str, args: dict[str, str]) -> None:
        ran.append((key, args))
        if args["code"] == "wrong":
            raise EngineUnavailableError("not the current code", key=key)

    holder, other = await opened(schema, {"sim.scan": scan}), await opened(schema)
    try:
        assert await holder.acquire("phone")
        await other.forward("phone", "sim.scan", {"code": "right"})
        assert ran == [("phone", {"code": "right"})]
        with pytest.raises(EngineUnavailableError, match="not the current code"):
            await other.forward("phone", "sim.scan", {"code": "wrong"})
        # Nobody holds this key: nobody answers, and the caller is told so in time.
        with pytest.raises(EngineUnavailableError, match="did not answer"):
            await other.forward("nobody", "sim.scan", {"code": "x"})
    finally:
        await holder.close()
        await other.close()


async def test_a_broken_lease_connection_gives_every_lease_up(schema: str) -> None:
    lost: set[str] = set()
    leases = await opened(schema, lost=lost)
    try:
        assert await leases.acquire("a") and await leases.acquire("b")
        terminate(leases)
        for _ in range(50):
            if lost:
                break
            await asyncio.sleep(0.05)
        assert lost == {"a", "b"}
        assert leases.held == frozenset()
        # It reconnects: leases can be taken again.
        for _ in range(50):
            try:
                assert await leases.acquire("a")
                break
            except (EngineUnavailableError, psycopg.Error):
                await asyncio.sleep(0.05)
        assert leases.held == {"a"}
    finally:
        await leases.close()


async def test_a_process_that_dies_is_heard_of_at_once_with_its_keys(
    schema: str, sealer: Sealer
) -> None:
    """Every process waits on each other one's own lock: when a process dies (all its
    connections end, as with kill -9), a survivor is granted it and told its keys."""
    gone: list[list[str]] = []
    heard = asyncio.Event()

    async def on_gone(keys: Iterable[str]) -> None:
        gone.append(sorted(keys))
        heard.set()

    survivor = PostgresLeases(POSTGRES_URL, schema=schema, check_interval=0.2, sealer=sealer)
    await survivor.open({}, lambda keys: asyncio.sleep(0), on_gone)
    dying = await opened(schema, sealer=sealer)
    try:
        assert await dying.acquire("dev-a") and await dying.acquire("dev-b")
        # The survivor finds the new process (it looks every second) and waits on it.
        while dying.holder not in survivor._processes._waiting:
            await asyncio.sleep(0.05)
        die(dying)
        await asyncio.wait_for(heard.wait(), 5)
        assert gone == [["dev-a", "dev-b"]]
        assert await survivor.acquire("dev-a") and await survivor.acquire("dev-b")
    finally:
        await dying.close()
        await survivor.close()
    assert overlapping_grants(lease_log(schema)) == []
    assert_no_plain_keys(schema, sealer, ["dev-a", "dev-b"])


async def test_a_batch_of_leases_takes_only_what_no_live_process_runs(
    schema: str, sealer: Sealer
) -> None:
    """acquire_many, one transaction: keys another process holds are refused (nothing of
    them kept), and so are those of a process whose lease connection PostgreSQL dropped
    until it has stopped their engines; a dead holder's grants are closed."""
    lost: set[str] = set()
    holder = await opened(schema, lost=lost, sealer=sealer)
    taker = await opened(schema, sealer=sealer)
    try:
        assert await holder.acquire("theirs") and await taker.acquire("mine")
        assert await taker.acquire_many(["mine", "theirs", "free", "free"]) == {"free"}
        assert taker.held == {"mine", "free"}  # ("mine" was held already: not taken now)
        assert await holder.acquire("free") is False
        assert await holder.acquire_many(["free", "mine"]) == set()
        await holder.release("theirs")  # the taker kept no lock of it: taken again at once
        assert await holder.acquire_many(["theirs"]) == {"theirs"}
        # PostgreSQL drops the holder's connection; the holder lives on. Its key is not
        # taken until it has stopped the engine and closed its grant.
        terminate(holder)
        while not await taker.acquire_many(["theirs"]):
            assert not lost or "theirs" in lost
            await asyncio.sleep(0.05)
        assert lost == {"theirs"}
        assert taker.held == {"mine", "free", "theirs"}
    finally:
        await holder.close()
        await taker.close()
    assert overlapping_grants(lease_log(schema)) == []
    assert all(released is not None for _, _, _, released in lease_log(schema))
    assert_no_plain_keys(schema, sealer, ["theirs", "mine", "free"])


async def test_the_survivors_split_a_dead_process_keys_and_take_each_once(
    schema: str, sealer: Sealer
) -> None:
    """Each survivor is told its share of the dead process's keys first (the same split
    in both), then the rest; the leases give every key to one of them."""
    told: dict[str, list[list[str]]] = {"first": [], "second": []}
    survivors: list[PostgresLeases] = []
    for name in told:
        leases = PostgresLeases(POSTGRES_URL, schema=schema, check_interval=0.2, sealer=sealer)

        async def on_gone(keys: Iterable[str], name: str = name, leases: Any = leases) -> None:
            told[name].append(sorted(keys))
            await leases.acquire_many(list(keys))

        await leases.open({}, lambda keys: asyncio.sleep(0), on_gone)
        survivors.append(leases)
    dying = await opened(schema, sealer=sealer)
    keys = sorted(f"device-{n}" for n in range(20))
    try:
        assert await dying.acquire_many(keys) == set(keys)
        while any(dying.holder not in s._processes._waiting for s in survivors) or any(
            len(s._processes._waiting) < 2 for s in survivors
        ):
            await asyncio.sleep(0.05)  # (each looks for new processes every second)
        die(dying)
        while len(survivors[0].held | survivors[1].held) < len(keys):
            await asyncio.sleep(0.05)
        first, second = told["first"][0], told["second"][0]
        assert first and second and not set(first) & set(second)
        assert sorted(first + second) == keys
        assert not survivors[0].held & survivors[1].held
    finally:
        await dying.close()
        for leases in survivors:
            await leases.close()
    assert overlapping_grants(lease_log(schema)) == []
    assert_no_plain_keys(schema, sealer, keys)


async def test_rows_an_older_version_wrote_are_converted_at_open(
    schema: str, sealer: Sealer
) -> None:
    """A lease log from before `sealed_key` (keys in plain text): opening converts every
    row (the key blinded, and sealed), and its grants are found as before."""
    table = older_lease_log(
        schema, [("old-one", "gone", True), ("old-one", "gone", False), ("old-two", "gone", False)]
    )
    leases = await opened(schema, sealer=sealer)
    try:
        # What a survivor reads to learn a dead process's keys.
        grants = await leases._processes._open_grants(leases._connection(), "gone")
        assert grants == ["old-one", "old-two"]
        assert await leases.acquire("old-one")  # the dead holder's open grant is closed
    finally:
        await leases.close()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        rows = admin.execute(
            f"SELECT key, sealed_key, holder, released_at IS NULL FROM {table} ORDER BY id"
        ).fetchall()
    assert [(key, sealer.open(sealed), holder, held) for key, sealed, holder, held in rows] == [
        (sealer.blind("old-one"), "old-one", "gone", False),
        (sealer.blind("old-one"), "old-one", "gone", False),
        (sealer.blind("old-two"), "old-two", "gone", True),
        (sealer.blind("old-one"), "old-one", leases.holder, False),
    ]
    assert_no_plain_keys(schema, sealer, ["old-one", "old-two"])


async def test_a_dead_process_sealed_with_another_key_is_reported_not_taken(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A process whose cipher key differs (a misconfigured deployment): when it dies, the
    survivor cannot open its lease log, says so, takes none of its keys, and goes on."""
    gone: list[list[str]] = []
    survivor = PostgresLeases(
        POSTGRES_URL, schema=schema, check_interval=0.2, sealer=Sealer(AESCipher.create_key(16))
    )

    async def on_gone(keys: Iterable[str]) -> None:
        gone.append(sorted(keys))

    await survivor.open({}, lambda keys: asyncio.sleep(0), on_gone)
    dying = await opened(schema, sealer=Sealer(TEST_CIPHER_KEY))
    try:
        assert await dying.acquire("dev-a")
        while dying.holder not in survivor._processes._waiting:
            await asyncio.sleep(0.05)
        die(dying)
        while dying.holder in survivor._processes._waiting:
            await asyncio.sleep(0.05)
        assert gone == []
        assert "sealed its lease log with another PAIRGATE_CIPHER_KEY" in caplog.text
        assert await survivor.acquire("dev-b")  # the survivor goes on
    finally:
        await dying.close()
        await survivor.close()
