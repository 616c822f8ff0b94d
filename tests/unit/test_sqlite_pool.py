"""The SQLite store hands out the connection returned last: it wrote last, so its page
cache is still good (a connection that begins after another one wrote drops its cache)."""

from __future__ import annotations

from pathlib import Path

from adapters.store.config import StoreConfig, open_store


def test_the_connection_returned_last_is_handed_out_first(tmp_path: Path) -> None:
    store = open_store(StoreConfig(data_dir=tmp_path))
    pool = store.factory.datastore.pool  # type: ignore[attr-defined]
    first, second = pool.get_connection(), pool.get_connection()  # two threads at once
    assert first is not second
    pool.put_connection(first)
    pool.put_connection(second)  # the writer that finished last
    assert pool.get_connection() is second
    assert pool.get_connection() is first
    store.close()
