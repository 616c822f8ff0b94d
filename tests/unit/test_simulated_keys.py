"""The simulator's linked devices: their made-up keys in one private SQLite file."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from adapters.credentials import CredentialVault
from adapters.engines.simulated_keys import FILE, SimulatedKeys
from adapters.engines.simulator import CODE_OF_MOVE, SimulatedEngine, simulated_moves
from domain.model.session import DisconnectReason
from tests.conftest import TEST_CIPHER_KEY

KEYS = b'{"noise": "aa", "identity": "bb"}'


def test_keys_are_held_until_removed_and_survive_a_reopen(tmp_path: Path) -> None:
    vault = CredentialVault(tmp_path / "credentials")
    keys = SimulatedKeys(vault, "simulator")
    assert not keys.holds("a")
    keys.store("a", KEYS)
    keys.store("b", KEYS)
    keys.store("a", KEYS)  # stored again (a re-pairing): still one device
    assert keys.holds("a") and keys.count() == 2
    keys.close()

    reopened = SimulatedKeys(vault, "simulator")
    assert reopened.holds("a") and reopened.holds("b") and not reopened.holds("c")
    reopened.remove("a")
    reopened.remove("never stored")  # nothing to do
    assert not reopened.holds("a") and reopened.count() == 1
    reopened.close()


def test_only_the_owner_can_read_the_file(tmp_path: Path) -> None:
    vault = CredentialVault(tmp_path / "credentials")
    keys = SimulatedKeys(vault, "simulator")
    keys.store("a", KEYS)
    directory = vault.root / "simulator"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(vault.root.stat().st_mode) == 0o700
    for path in directory.iterdir():  # the database and SQLite's -wal and -shm files
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    keys.close()


@pytest.mark.parametrize("cipher_key", [TEST_CIPHER_KEY, None])
def test_with_a_cipher_key_the_keys_are_sealed(tmp_path: Path, cipher_key: str | None) -> None:
    vault = CredentialVault(tmp_path / "credentials", cipher_key)
    keys = SimulatedKeys(vault, "simulator")
    keys.store("a", KEYS)
    keys.close()  # the last connection: SQLite folds its WAL into the file
    stored = (vault.root / "simulator" / FILE).read_bytes()
    assert (KEYS in stored) is (cipher_key is None)


class Reports:
    """EngineEvents that only records what the engine says."""

    def __init__(self) -> None:
        self.said: list[str] = []

    async def qr_issued(self, key: str, code: str, timeout: float) -> None:
        self.said.append("qr")

    async def pair_code_issued(self, key: str, code: str, timeout: float) -> None:
        self.said.append("pair code")

    async def qr_expired(self, key: str) -> None:
        self.said.append("qr expired")

    async def paired(self, key: str) -> None:
        self.said.append("paired")

    async def connected(self, key: str) -> None:
        self.said.append("connected")

    async def disconnected(self, key: str, reason: DisconnectReason) -> None:
        self.said.append(f"disconnected: {reason.value}")


async def said_within(reports: Reports, count: int) -> list[str]:
    async with asyncio.timeout(5):
        while len(reports.said) < count:
            await asyncio.sleep(0.01)
    return reports.said


async def test_a_paired_device_reconnects_after_a_restart_until_it_logs_out(
    tmp_path: Path,
) -> None:
    vault = CredentialVault(tmp_path / "credentials")
    first, reports = SimulatedEngine(vault=vault), Reports()
    await first.start("k", reports)
    await said_within(reports, 1)
    await first.scan("k", first.current_code("k"))
    assert reports.said == ["qr", "paired", "connected"]
    await first.stop("k")
    await first.close()

    restarted, again = SimulatedEngine(vault=vault), Reports()
    await restarted.start("k", again)
    assert await said_within(again, 1) == ["connected"]  # no QR code: it has its keys
    await restarted.phone_logout("k")
    assert again.said == ["connected", "disconnected: user logged out"]
    await restarted.close()

    after_logout, fresh = SimulatedEngine(vault=vault), Reports()
    await after_logout.start("k", fresh)
    assert await said_within(fresh, 1) == ["qr"]  # its keys went with the logout
    await after_logout.stop("k")
    await after_logout.close()


def test_the_moves_that_take_a_code_are_moves() -> None:
    moves = simulated_moves(SimulatedEngine())
    assert set(CODE_OF_MOVE) <= set(moves), "CODE_OF_MOVE names a move the simulator lacks"
