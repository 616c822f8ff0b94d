"""SimulatedKeys: the made-up keys of the devices the simulator has linked.

One SQLite file for all of them, `<credentials>/simulator/devices.sqlite3` (0600, in the
vault's 0700 engine directory), one row per device (named as the vault names devices), its
keys sealed with the vault's cipher when pairgate has a key. Not a directory and a file
per device, as the real engines' stores are: those cost file-system metadata updates (a
directory, a file, a rename) at every pairing, which on a busy server took more kernel
time than the rest of the pairing (1.0 to 1.7 ms of CPU per device on the benchmark VM;
an SQLite row 30 to 46 µs), for keys nobody will ever use.

Calls are a few tens of microseconds of SQLite and run on the event loop, as the SQLite
event store's do. No fsync (`synchronous=OFF`): a killed process loses none of the keys
(the OS has them), which is what simulated restarts need; an OS crash may lose the last
ones. Several processes may share the file: SQLite locks it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from adapters.credentials import FILE_MODE, CredentialVault, device_name
from adapters.resealing import Resealer

FILE = "devices.sqlite3"
BUSY_TIMEOUT = 5.0  # seconds another process's write may hold the file


class SimulatedKeys:
    def __init__(self, vault: CredentialVault, engine: str) -> None:
        self._vault = vault
        self._engine = engine
        self._connection: sqlite3.Connection | None = None  # opened on first use

    def holds(self, key: str) -> bool:
        found = self._table().execute("SELECT 1 FROM devices WHERE device = ?", (device_name(key),))
        return found.fetchone() is not None

    def store(self, key: str, keys: bytes) -> None:
        statement = "INSERT OR REPLACE INTO devices (device, keys) VALUES (?, ?)"
        self._table().execute(statement, (device_name(key), self._vault.seal(keys)))

    def remove(self, key: str) -> None:
        self._table().execute("DELETE FROM devices WHERE device = ?", (device_name(key),))

    def count(self) -> int:
        (count,) = self._table().execute("SELECT count(*) FROM devices").fetchone()
        return int(count)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _table(self) -> sqlite3.Connection:
        if self._connection is None:
            path = self._vault.engine_directory(self._engine) / FILE
            # Created 0600 before SQLite opens it: its -wal and -shm files take its mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
            connection = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS devices "
                "(device TEXT PRIMARY KEY, keys BLOB NOT NULL) WITHOUT ROWID"
            )
            self._connection = connection
        return self._connection


def rekey(vault: CredentialVault, resealer: Resealer, step: Callable[[], None]) -> int:
    """`pairgate rekey` for the simulator's rows (every `devices.sqlite3` in the vault):
    each row's keys sealed with the new key, a row at a time. Returns how many rows."""
    resealed = 0
    for path in sorted(vault.root.glob(f"*/{FILE}")):
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            rows = connection.execute("SELECT device, keys FROM devices").fetchall()
            for device, keys in rows:
                sealed = resealer.reseal(keys)
                if sealed is not None:
                    update = "UPDATE devices SET keys = ? WHERE device = ?"
                    connection.execute(update, (sealed, device))
                    resealed += 1
                step()
        finally:
            connection.close()
    return resealed
