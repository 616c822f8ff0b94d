"""SQLite checkpoints: off the committing connection, done by WalCheckpoints instead."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from adapters.store.config import StoreConfig, open_store
from adapters.store.sqlite import WalCheckpoints

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def wal_bytes(config: StoreConfig) -> int:
    wal = config.sqlite_path.with_name(config.sqlite_path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_commits_no_longer_checkpoint_and_the_checkpointer_does(tmp_path: Path) -> None:
    manual = StoreConfig(data_dir=tmp_path, sqlite_autocheckpoint=0)
    store = open_store(manual)  # kept open, as the server does: close() would checkpoint
    for number in range(600):
        store.create(f"dev{number}", "Phone", "simulator", "alice")
        store.update(f"dev{number}", lambda s: s.issue_qr("code " * 40, 20, NOW))
    # Commits would have checkpointed at 1,000 pages, keeping the WAL near 4 MB.
    assert wal_bytes(manual) > 2 * 1000 * 4096

    checkpoints = WalCheckpoints(manual.sqlite_path, interval=0.05)

    async def a_few_checkpoints() -> None:
        running = asyncio.create_task(checkpoints.run())
        await asyncio.sleep(0.3)
        running.cancel()

    asyncio.run(a_few_checkpoints())
    checkpoints.close()  # a TRUNCATE checkpoint at the end
    assert wal_bytes(manual) == 0
    store.update("dev1", lambda s: s.issue_qr("again", 20, NOW))
    assert len(store.history("dev1")) == 3
    reader = open_store(manual)
    assert [s.version for s in map(reader.get, ("dev0", "dev599"))] == [2, 2]
    reader.close()
    store.close()
