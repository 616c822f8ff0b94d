"""The sessions read model: a projection of the log, tracked in the events' database,
listed per owner without reading streams, rebuilt by `pairgate reindex`."""

from __future__ import annotations

import asyncio
import io
import string

import psycopg
import pytest

from adapters.identity import DEFAULT_IDENTITY
from adapters.store.config import postgres_conninfo
from domain.application.ports import SessionRow
from domain.model.errors import InvalidPageError
from domain.model.session import DisconnectReason, SessionState
from entrypoints.consumers import rebuild_index
from entrypoints.settings import Settings
from tests.helpers import Server, clients, pair, running, unique_key


async def rows_of(
    server: Server, owner: str = DEFAULT_IDENTITY, **filters: object
) -> list[SessionRow]:
    pairgate = server.pairgate
    for follower in pairgate.consumers.followers:
        await asyncio.wait_for(follower.caught_up(), 10)
    page = await pairgate.session_index.page(owner, limit=200, **filters)
    return list(page.rows)


async def test_listing_follows_pairings_by_owner_state_engine_and_cursor(server: Server) -> None:
    first, second = unique_key("rows"), unique_key("rows")
    async with clients(server.url) as [client]:
        await pair(server, client, first, engine="simulator")
        ack = await client.call(
            "session.create", {"key": second, "name": "Second", "engine": "baileys"}
        )
        assert ack["ok"], ack
        await client.wait_for("session.qr")
    rows = await rows_of(server)
    assert [(r.key, r.state, r.engine, r.name) for r in rows[:2]] == [
        (second, SessionState.QR, "baileys", "Second"),
        (first, SessionState.READY, "simulator", "Phone"),
    ]
    assert rows[1].version == 4 and rows[1].reason is None and rows[1].owner == DEFAULT_IDENTITY
    assert rows[0].updated_at >= rows[1].updated_at

    assert [r.key for r in await rows_of(server, state=SessionState.READY)] == [first]
    assert [r.key for r in await rows_of(server, engine="baileys")] == [second]
    assert await rows_of(server, owner="someone-else") == []

    index = server.pairgate.session_index
    page = await index.page(DEFAULT_IDENTITY, limit=1)
    assert [r.key for r in page.rows] == [second] and page.next is not None
    rest = await index.page(DEFAULT_IDENTITY, limit=1, after=page.next)
    assert [r.key for r in rest.rows] == [first] and rest.next is None
    # Another owner's cursor position shows that owner nothing of this one's.
    assert (await index.page("someone-else", after=page.next)).rows == []
    assert set(page.next) <= set(string.ascii_letters + string.digits + "_.~=-")  # URL-safe
    for bad in ("", "x", "12", "~k", "1e3~k", "９~k", "99999999999999999999~k", "12:k"):
        with pytest.raises(InvalidPageError):
            await index.page(DEFAULT_IDENTITY, after=bad)


async def test_reindex_rebuilds_the_same_rows(server: Server, settings: Settings) -> None:
    key = unique_key("reindex")
    async with clients(server.url) as [client]:
        await pair(server, client, key)
        assert (await client.call("session.logout", {"key": key}))["ok"]
        await client.wait_for("session.disconnected")
    before = await rows_of(server)
    assert before[0].key == key and before[0].state is SessionState.DISCONNECTED
    assert before[0].reason is DisconnectReason.USER_LOGGED_OUT

    if settings.cipher_key is not None:  # rows hold what events hold: encrypted
        conninfo, schema = postgres_conninfo(settings.store_config())
        with psycopg.connect(conninfo) as db:
            stored = str(db.execute(f'SELECT * FROM "{schema}".pairgate_sessions').fetchall())
        assert key not in stored and "Phone" not in stored and "logged out" not in stored
        assert "enc:" in stored

    out = io.StringIO()
    assert await asyncio.to_thread(rebuild_index, settings, out) == 0
    assert "rebuilt up to log position" in out.getvalue()
    assert await rows_of(server) == before


async def test_a_second_process_sees_the_first_ones_pairings(
    store_settings: dict[str, object],
) -> None:
    if "database_url" not in store_settings:
        pytest.skip("several processes share a PostgreSQL store")
    settings = Settings(simulate=True, follow_interval=0.2, **store_settings)
    async with running(settings) as one, running(settings) as other:
        key = unique_key("shared")
        async with clients(one.url) as [client]:
            await pair(one, client, key)
        # Woken by nothing of its own, the other process's follower reads the shared log.
        seen = await rows_of(other)
        assert [(r.key, r.state) for r in seen] == [(key, SessionState.READY)]
        assert seen == await rows_of(one)
