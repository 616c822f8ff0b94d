"""Recovery and takeover read an index of live keys (the sessions read model and the
log's tail it does not reflect yet), never every stream."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from adapters.identity import DEFAULT_IDENTITY
from adapters.store.config import open_store
from adapters.store.sealing import Sealer
from adapters.store.session_rows import session_rows
from domain.model.session import SessionState, session_id
from entrypoints.settings import Settings
from tests.helpers import Server, clients, pair, running, unique_key


async def caught_up(server: Server) -> None:
    for follower in server.pairgate.consumers.followers:
        await asyncio.wait_for(follower.caught_up(), 10)


async def test_the_live_index_names_live_and_linked_keys_only(server: Server) -> None:
    ready, pairing, ended = unique_key("ready"), unique_key("qr"), unique_key("ended")
    async with clients(server.url, 3) as [first, second, client]:
        await pair(server, first, ready)
        await pair(server, second, ended)
        assert (await second.call("session.logout", {"key": ended}))["ok"]
        ack = await client.call(
            "session.create", {"key": pairing, "name": "P", "engine": "simulator"}
        )
        assert ack["ok"], ack
        await caught_up(server)
        index = server.pairgate.session_index
        found = await index.live_keys()
        assert {ready, pairing} <= set(found.unsettled) and ended not in found.all()
        assert not {ready, pairing} & set(found.offline)

        # The rows lag the log (their follower stopped): keys changed since are named too.
        for follower in server.pairgate.consumers.followers:
            await follower.stop()
        index.caught_up = None  # (a page would wait for it)
        late = unique_key("late")
        ack = await client.call("session.create", {"key": late, "name": "L", "engine": "simulator"})
        assert ack["ok"], ack
        page = await index.page(DEFAULT_IDENTITY, limit=200)
        assert late not in {row.key for row in page.rows}  # not projected
        found = await index.live_keys()
        assert {ready, pairing, late} <= set(found.unsettled) and ended not in found.all()


async def test_a_restart_resumes_a_device_the_rows_never_saw(settings: Settings) -> None:
    key = unique_key("unprojected")
    async with running(settings) as server:
        for follower in server.pairgate.consumers.followers:
            await follower.stop()
        async with clients(server.url) as [client]:
            await pair(server, client, key)
    async with running(settings) as server:
        # Recovery read the index (rows and the log's tail after their position).
        assert server.pairgate.service.recoverer.live_keys is not None
        assert key in server.pairgate.service.running_keys
        state = (await server.get(f"/api/sessions/{key}")).json()["state"]
        assert state in (SessionState.DISCONNECTED, SessionState.READY)


@pytest.mark.parametrize("linked", [False, True], ids=["before-linked", "before-tenure"])
def test_rows_kept_before_a_column_was_recorded_read_as_before(
    tmp_path: Path, linked: bool
) -> None:
    """A store whose rows table predates the `linked` column (and `tenure_from`, or only
    `tenure_from`) gains them on start; its offline rows stay candidates (recovery reads
    each session), its ended ones too; their versions read as stored until they change."""
    settings = Settings(data_dir=tmp_path)
    path = settings.store_config().sqlite_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE pairgate_sessions (id TEXT PRIMARY KEY, key TEXT NOT NULL, "
            "tie TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, engine TEXT NOT NULL, "
            "state TEXT NOT NULL, reason TEXT, version BIGINT NOT NULL, "
            f"updated_at BIGINT NOT NULL{', linked INTEGER' if linked else ''})"
        )
        for key, state in (("old-ready", "ready"), ("old-off", "disconnected")):
            db.execute(
                f"INSERT INTO pairgate_sessions VALUES (?, ?, ?, 'o', 'n', 'simulator', ?, "
                f"NULL, 4, 1{', NULL' if linked else ''})",
                (str(session_id(key)), key, key, state),
            )
    sessions = open_store(settings.store_config())
    try:
        rows = session_rows(sessions, Sealer(None))
        assert rows.live() == {
            "old-off": SessionState.DISCONNECTED,
            "old-ready": SessionState.READY,
        }
        (row,) = rows.rows([session_id("old-ready")]).values()
        assert (row.linked, row.tenure_from, row.tenure_version) == (None, None, 4)
    finally:
        sessions.close()


async def test_the_index_tells_devices_recorded_offline_from_maybe_live_ones(
    settings: Settings,
) -> None:
    """Offline paired devices need no settling before serving: named apart whether the
    rows say so or only the log's tail does (its last event a lost connection)."""
    quiet = settings.model_copy(update={"recover": False})
    paired, pairing = [unique_key("paired"), unique_key("paired")], unique_key("qr")
    async with running(quiet) as server, clients(server.url, 3) as pages:
        for key, page in zip(paired, pages[:2], strict=True):
            await pair(server, page, key)
        ack = await pages[2].call(
            "session.create", {"key": pairing, "name": "P", "engine": "simulator"}
        )
        assert ack["ok"], ack
        await caught_up(server)
        index = server.pairgate.session_index
        found = await index.live_keys()
        assert {*paired, pairing} <= set(found.unsettled) and not found.offline
        # The rows stop at this position: what a stop records is in the log's tail only.
        for follower in server.pairgate.consumers.followers:
            await follower.stop()
        index.caught_up = None
        await server.pairgate.service.shutdown()  # (a SIGTERM's drain: connection lost)
        found = await index.live_keys()
        assert set(paired) <= set(found.offline) and not set(found.unsettled) & set(paired)
        assert pairing not in found.unsettled  # offline too (recovery finds it unlinked)
        for follower in server.pairgate.consumers.followers:
            follower.start()
        await caught_up(server)  # the rows say so now
        found = await index.live_keys()
        assert set(paired) <= set(found.offline) and not set(found.unsettled) & set(paired)
        assert pairing not in found.all()  # its row: offline, not linked
