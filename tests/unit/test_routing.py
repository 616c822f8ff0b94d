"""IndexedRouter picks the route Starlette's router picks, for any path and method, on the
app's real route table; and it tries fewer routes to get there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route

from adapters.http.routing import IndexedRouter, path_key, route_key
from entrypoints.asgi import create_app
from entrypoints.settings import Settings
from tests.helpers import web_app


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BaseRoute]]:
    data_dir = tmp_path_factory.mktemp("routing") / "data"
    app = create_app(Settings(simulate=True, data_dir=data_dir))
    try:
        yield list(web_app(app).routes)
    finally:
        app.pairgate.sessions.close()


def chosen(routes: list[BaseRoute], path: str, method: str) -> tuple[int, Match] | None:
    """Router.app's choice: the first full match, else the first partial one (a 405)."""
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return id(route), match
        if match is Match.PARTIAL and partial is None:
            partial = id(route), match
    return partial


def both(table: list[BaseRoute], path: str, method: str) -> None:
    indexed = IndexedRouter(table)
    assert chosen(indexed.candidates(path), path, method) == chosen(table, path, method), path


# Paths built from the table's own segments (and a few others), so that most of them
# start like a route, some match one, and some match one route's path but not its method.
SEGMENTS = st.sampled_from(
    ["api", "sessions", "simulator", "devices", "k1", "scan", "code", "history", "qr",
     "webhooks", "dead-letters", "stats", "info", "static", "scan.js", "console", "healthz",
     "readyz", "metrics", "openapi.json", "", "pair-code", "logout", "x%2F", "{key}", "."]
)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    segments=st.lists(SEGMENTS, max_size=6),
    method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PUT"]),
)
def test_it_picks_the_route_starlette_picks(
    table: list[BaseRoute], segments: list[str], method: str
) -> None:
    both(table, "/" + "/".join(segments), method)


@pytest.mark.parametrize(
    "path",
    ["/", "/api/sessions", "/api/sessions/", "/api/sessions/k1", "/api/sessions/k1/history",
     "/api/simulator/devices/k1/scan", "/api/simulator/devices/k1/code", "/static/scan.js",
     "/static", "/healthz", "/healthz/", "//healthz", "/api", "/nowhere/at/all", ""],
)  # fmt: skip
def test_each_route_and_its_neighbours(table: list[BaseRoute], path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        both(table, path, method)


def test_a_request_tries_only_the_routes_filed_under_its_path(table: list[BaseRoute]) -> None:
    indexed = IndexedRouter(table)
    scan = indexed.candidates("/api/simulator/devices/k1/scan")
    assert scan and len(scan) < len(table) / 3, len(scan)
    assert all(route_key(r) in {(), ("api",), ("api", "simulator")} for r in scan)
    assert indexed.candidates("/healthz") == [r for r in table if route_key(r) == ("healthz",)]


def test_route_keys() -> None:
    assert route_key(Route("/api/sessions/{key}/qr", lambda r: None)) == ("api", "sessions")
    assert route_key(Route("/healthz", lambda r: None)) == ("healthz",)
    assert route_key(Route("/{key}/x", lambda r: None)) == ()
    assert route_key(Route("/", lambda r: None)) == ("",)
    assert route_key(Mount("/static", routes=[])) == ("static",)
    assert path_key("/api/sessions/a/b") == ("api", "sessions")
    assert path_key("/") == ("",)


def test_the_cache_holds_only_keys_of_routes() -> None:
    indexed = IndexedRouter([Route("/a/b", lambda r: None)])
    for n in range(500):
        indexed.candidates(f"/p{n}/q{n}")
        indexed.candidates(f"/a/b{n}")
    assert len(indexed.cached) <= 2


async def endpoint(request: Request) -> Response:
    return Response()


def test_routes_added_later_are_found() -> None:
    indexed = IndexedRouter([Route("/a", lambda r: None)])
    assert indexed.candidates("/b") == []
    indexed.add_route("/b", endpoint)
    assert [r.path for r in indexed.candidates("/b")] == ["/b"]  # type: ignore[attr-defined]
