"""GET /api/sessions over the real SessionIndex (SessionRowsIndex) on a memory store's rows;
the read model's projection and its SQL stores have their own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette

from adapters.http.rest import Api
from adapters.http.sessions_api import control_routes
from adapters.http.web import HTTP_ERROR_HANDLERS
from adapters.identity import Identities
from adapters.limits.requests import RequestLimits
from adapters.store.memory_rows import MemorySessionRows
from domain.application.ports import SessionRow
from domain.application.session_index import SessionRowsIndex
from domain.application.store_calls import StoreAccess
from domain.model.session import DisconnectReason, SessionState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = SessionState


def row(key: str, owner: str, state: S, minute: int, engine: str = "simulator") -> SessionRow:
    reason = DisconnectReason.USER_LOGGED_OUT if state is S.DISCONNECTED else None
    stamp = T0 + timedelta(minutes=minute)
    return SessionRow(key, owner, key.title(), engine, state, reason, minute + 1, stamp)


ROWS = [
    row("a", "alice", S.READY, 1),
    row("b", "alice", S.QR, 5, engine="baileys"),
    row("c", "alice", S.DISCONNECTED, 3),
    row("d", "alice", S.READY, 4),
    row("e", "bob", S.READY, 9),
]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    identities = Identities({"alice-token": "alice", "bob-token": "bob"})
    api = Api(identities, RequestLimits("", ""), 4096)
    rows = MemorySessionRows()
    rows.save(ROWS, previous=0, position=len(ROWS))
    index = SessionRowsIndex(rows, StoreAccess(cast(Any, None)))
    routes = control_routes(cast(Any, None), api, index)
    app = Starlette(routes=routes, exception_handlers=HTTP_ERROR_HANDLERS)
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": "Bearer alice-token"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        yield c


async def keys(http: httpx.AsyncClient, query: str) -> tuple[list[str], str | None]:
    response = await http.get(f"/api/sessions?{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    return [item["key"] for item in body["sessions"]], body["next"]


async def test_the_caller_s_sessions_newest_change_first(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/sessions")
    body = response.json()
    assert [item["key"] for item in body["sessions"]] == ["b", "d", "c", "a"]
    assert body["next"] is None
    assert body["sessions"][2] == {
        "key": "c",
        "name": "C",
        "engine": "simulator",
        "state": "disconnected",
        "reason": "user logged out",
        "version": 4,
        "updated_at": "2026-01-01T00:03:00+00:00",
    }


async def test_filters_and_a_cursor_walk_every_row_once(http: httpx.AsyncClient) -> None:
    assert (await keys(http, "state=ready"))[0] == ["d", "a"]
    assert (await keys(http, "engine=baileys"))[0] == ["b"]
    seen, cursor = await keys(http, "limit=3")
    assert cursor is not None
    rest, last = await keys(http, f"limit=3&after={cursor}")
    assert seen + rest == ["b", "d", "c", "a"] and last is None


async def test_a_cursor_the_index_cannot_read_is_a_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/sessions?after=nonsense")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
