"""A takeover in batches: the dead process's leases at once, its sessions read once, its
devices' `Ready` saved together; a key another process holds is left alone."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.store.config import StoreConfig, open_store
from adapters.store.failover import ProcessWatch
from domain.application.commands import disconnect
from domain.application.pairing import PairingService
from domain.application.ports import RecoveryCandidates
from domain.application.sessions import DeviceSessions, IntegrityError
from domain.application.store_calls import StoreAccess
from domain.model.errors import InvalidTransitionError
from domain.model.session import DisconnectReason, SessionState
from tests.unit.fakes import FakeEngine
from tests.unit.test_pairing_service import FakeCatalog, FakeClock, FakeNotifier, _describe

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = ["a", "b", "c"]


@dataclass
class OthersHold:
    """DeviceLeases where another live process holds `theirs`."""

    theirs: set[str]
    held: set[str] = field(default_factory=set)
    batches: list[set[str]] = field(default_factory=list)  # what each acquire_many took

    async def acquire(self, key: str) -> bool:
        if key in self.theirs:
            return False
        self.held.add(key)
        return True

    async def acquire_many(self, keys: Collection[str]) -> set[str]:
        taken = {key for key in keys if key not in self.theirs and key not in self.held}
        self.held |= taken
        self.batches.append(taken)
        return taken

    async def release(self, key: str) -> None:
        self.held.discard(key)

    async def release_many(self, keys: Collection[str]) -> None:
        self.held -= set(keys)

    async def forward(self, key: str, command: str, args: dict[str, str]) -> None:
        raise AssertionError("nothing is forwarded here")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A store where a process that died ran KEYS, all ready."""
    dead = open_store(StoreConfig(data_dir=tmp_path))
    for key in KEYS:
        dead.create(key, "Phone", "simulator", "alice")
        dead.update(key, lambda s: s.issue_qr("code", 20, NOW))
        dead.update(key, lambda s: s.authenticate())
        dead.update(key, lambda s: s.mark_ready())
    dead.close()
    yield tmp_path


def history(sessions: DeviceSessions, key: str) -> list[str]:
    return [_describe(event) for event in sessions.history(key)]


async def test_a_key_another_process_holds_is_left_alone_and_the_others_resume(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = open_store(StoreConfig(data_dir=store))
    threads = ThreadPoolExecutor(2)  # as on PostgreSQL: reports that come together, one commit
    engine = FakeEngine("simulator")
    leases = OthersHold(theirs={"b"})
    survivor = PairingService(
        StoreAccess(sessions, threads),
        FakeCatalog({"simulator": engine}),
        FakeNotifier(),
        FakeClock(),
        leases=leases,
    )
    recovery = await survivor.recover(KEYS)
    assert leases.batches == [{"a", "c"}]  # one batch, without the key held elsewhere
    assert sorted(recovery.interrupted) == sorted(recovery.resumed) == ["a", "c"]
    assert engine.told("a") == engine.told("c") == ["start"]
    assert engine.told("b") == []  # never started here
    assert survivor.running_keys == {"a", "c"} and leases.held == {"a", "c"}
    assert history(sessions, "b")[-1] == "Ready"  # nothing recorded for it

    puts = 0
    put = sessions.events.put

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal puts
        puts += 1
        return put(*args, **kwargs)

    monkeypatch.setattr(sessions.events, "put", counted)
    # Both engines come back online at once: their `Ready` go in one transaction.
    await asyncio.gather(*(engine.events[key].connected(key) for key in ("a", "c")))
    assert puts == 1
    for key in ("a", "c"):
        assert history(sessions, key)[-3:] == ["Ready", "Disconnected(connection lost)", "Ready"]
    assert survivor.running_states == {"a": SessionState.READY, "c": SessionState.READY}
    await survivor.shutdown()
    threads.shutdown()
    sessions.close()


async def test_a_takeover_that_fails_gives_its_leases_back(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = open_store(StoreConfig(data_dir=store))
    leases = OthersHold(theirs=set())
    survivor = PairingService(
        StoreAccess(sessions), FakeCatalog({}), FakeNotifier(), FakeClock(), leases=leases
    )

    def unreachable(*args: Any) -> Any:
        raise ConnectionError("the store went away")

    monkeypatch.setattr(sessions, "update_many", unreachable)
    with pytest.raises(ConnectionError):
        await survivor.recover(KEYS)
    assert leases.held == set() and not any(sessions.holds(key) for key in KEYS)
    monkeypatch.undo()
    # The next look takes them over.
    recovery = await survivor.recover(KEYS)
    assert sorted(recovery.interrupted) == KEYS
    sessions.close()


def test_commands_saved_together_fail_only_for_their_own_key(store: Path) -> None:
    sessions = open_store(StoreConfig(data_dir=store))
    elsewhere = open_store(StoreConfig(data_dir=store))
    for key in KEYS:
        sessions.hold(sessions.get(key))
    lost = disconnect(DisconnectReason.CONNECTION_LOST)
    elsewhere.update("c", lost)  # moved on by another process
    refused = lambda s: s.authenticate()  # noqa: E731 (a ready session is paired already)
    a, b, c = sessions.update_each([("a", lost), ("b", refused), ("c", lost)])
    assert not isinstance(a, Exception) and a.session.state is SessionState.DISCONNECTED
    assert isinstance(b, InvalidTransitionError)
    assert isinstance(c, IntegrityError)  # its held copy was stale: refused, and dropped
    assert history(elsewhere, "a")[-1] == "Disconnected(connection lost)"
    assert history(elsewhere, "b")[-1] == "Ready"
    assert not sessions.holds("c") and sessions.holds("a")
    elsewhere.close()
    sessions.close()


def test_each_death_splits_the_dead_process_keys_afresh() -> None:
    """The keys of one survivor's share, when that survivor dies in turn, are split
    between the next survivors again (not all to one of them)."""

    async def never(name: str | None) -> Any:
        raise AssertionError("no connection here")

    keys = [f"device-{n}" for n in range(200)]
    a, b = ProcessWatch(never, "a", None), ProcessWatch(never, "b", None)
    for_a, rest = a._share(keys, ["b"], gone="x")
    for_b, _ = b._share(keys, ["a"], gone="x")
    assert sorted(for_a + for_b) == sorted(keys) and sorted(rest) == sorted(for_b)
    assert 60 < len(for_a) < 140
    # "b" dies, "a" and a new "c" survive: b's keys go to both.
    again, others = a._share(for_b, ["c"], gone="b")
    assert again and others


async def test_a_planned_restart_takes_its_offline_devices_a_batch_at_a_time(store: Path) -> None:
    """Devices a clean stop recorded offline: their leases are taken for a batch at once
    (with their sessions, in one read on PostgreSQL), a key another process holds is left
    alone, the others resume."""
    sessions = open_store(StoreConfig(data_dir=store))
    for key in KEYS:  # the stop recorded them
        sessions.update(key, disconnect(DisconnectReason.CONNECTION_LOST))
    engine = FakeEngine("simulator")
    leases = OthersHold(theirs={"b"})
    restarted = PairingService(
        StoreAccess(sessions), FakeCatalog({"simulator": engine}), FakeNotifier(), FakeClock(),
        leases=leases,
    )  # fmt: skip

    async def index() -> RecoveryCandidates:
        return RecoveryCandidates(unsettled=[], offline=KEYS)

    restarted.recoverer.live_keys = index
    recovery = await restarted.recoverer.start_up()
    assert leases.batches == [{"a", "c"}]  # one batch, without the key held elsewhere
    assert sorted(recovery.resumed) == ["a", "c"] and recovery.interrupted == []
    assert engine.told("a") == engine.told("c") == ["start"] and engine.told("b") == []
    assert leases.held == {"a", "c"}
    await restarted.shutdown()
    sessions.close()
