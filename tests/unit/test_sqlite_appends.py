"""The SQLite event log's appends: a connection of their own, the pool's writer lock shared."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import (
    ConnectionPoolClosedError,
    ConnectionUnavailableError,
    IntegrityError,
    StoredEvent,
)

from adapters.store.sqlite import Appends, Factory


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Factory]:
    made = Factory({"SQLITE_DBNAME": str(tmp_path / "log.db"), "SQLITE_SYNCHRONOUS": "NORMAL"})
    yield made
    made.close()


def recorder(factory: Factory) -> Appends:
    made = factory.application_recorder()
    assert isinstance(made, Appends)
    return made


def event(stream: object = None, version: int = 1) -> StoredEvent:
    return StoredEvent(
        originator_id=stream or uuid4(), originator_version=version, topic="t", state=b"{}"
    )


def test_appends_are_read_back_in_the_log_and_by_another_connection(factory: Factory) -> None:
    log = recorder(factory)
    stream = uuid4()
    ids = log.insert_events([event(stream, 1), event(stream, 2)])
    assert ids is not None and len(ids) == 2 and ids[1] == ids[0] + 1
    assert [e.originator_version for e in log.select_events(stream)] == [1, 2]  # the pool's
    assert [n.id for n in log.select_notifications(start=1, limit=10)] == list(ids)


def test_a_conflicting_append_is_refused_and_the_connection_is_left_clean(
    factory: Factory,
) -> None:
    log = recorder(factory)
    stream = uuid4()
    log.insert_events([event(stream, 1)])
    with pytest.raises(IntegrityError):
        log.insert_events([event(uuid4(), 1), event(stream, 1)])  # one transaction: neither
    assert log.max_notification_id() == 1
    log.insert_events([event(stream, 2)])  # the refused transaction was rolled back
    assert [e.originator_version for e in log.select_events(stream)] == [1, 2]


def test_an_append_waits_for_the_pools_writer(factory: Factory) -> None:
    log = recorder(factory)
    pool = factory.datastore.pool
    pool.pool_timeout = 0.2
    writer = pool.get_connection(is_writer=True)  # e.g. a follower writing its position
    try:
        with pytest.raises(ConnectionUnavailableError):
            log.insert_events([event()])
    finally:
        pool.put_connection(writer)
    appended = threading.Event()
    writer = pool.get_connection(is_writer=True)
    appending = threading.Thread(
        target=lambda: (log.insert_events([event()]), appended.set()), daemon=True
    )
    pool.pool_timeout = 10
    appending.start()
    assert not appended.wait(0.2)  # held back while the pool's writer writes
    pool.put_connection(writer)
    assert appended.wait(10)
    appending.join(10)
    assert log.max_notification_id() == 1


def test_the_pools_writers_wait_for_an_append(factory: Factory) -> None:
    log = recorder(factory)
    pool = factory.datastore.pool
    pool.pool_timeout = 0.2
    with pool._writer_lock:  # what an append holds while it writes
        with pytest.raises(ConnectionUnavailableError):
            pool.get_connection(is_writer=True)
    log.insert_events([event()])
    pool.put_connection(pool.get_connection(is_writer=True))  # free again after the append


def test_appends_after_the_store_closed_are_refused(factory: Factory) -> None:
    log = recorder(factory)
    log.insert_events([event()])
    factory.close()
    with pytest.raises(ConnectionPoolClosedError):
        log.insert_events([event()])


def test_an_in_memory_database_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Factory({"SQLITE_DBNAME": "file::memory:?cache=shared"})
