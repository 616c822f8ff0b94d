"""A takeover reads the sessions it took in one read of the store (PostgreSQL): the
same sessions as reading each stream, snapshots and encryption included."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.store.config import open_store
from entrypoints.settings import Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_one_read_of_many_streams_is_reading_each(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(settings.store_config(), snapshot_interval=3)
    if config.kind != "postgres":
        pytest.skip("SQLite reads each stream (a local file: no round trip to save)")
    writer = open_store(config)
    writer.create("short", "Phone", "simulator", "alice")
    writer.create("long", "Phone", "simulator", "alice")  # snapshots, then events after
    for index in range(7):
        writer.update("long", lambda s, i=index: s.issue_qr(f"code-{i}", 20, NOW))
    writer.update("long", lambda s: s.authenticate())
    writer.create("held", "Phone", "simulator", "alice")
    writer.close()

    reader = open_store(config)
    assert reader.streams is not None
    reader.hold(reader.stored("held"))
    each = {key: reader.stored(key) for key in ("short", "long", "held")}

    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a stream read on its own")

    monkeypatch.setattr(reader.recorder, "select_events", one_at_a_time)
    found = reader.find_many(["short", "long", "held", "never-created"])
    assert sorted(found) == ["held", "long", "short"]
    for key, session in each.items():
        assert vars(found[key]) == vars(session)
    assert found["long"].version == 9 and found["long"].state.value == "authenticated"
    reader.close()
