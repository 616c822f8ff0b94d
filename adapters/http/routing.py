"""IndexedRouter: Starlette's router, trying only the routes a path can match.

Starlette tries a request's path against every route in turn (a regular expression each).
pairgate has some thirty routes, and the ones a phone or a backend calls most (a session's
code, a scan, the REST reads) sit behind the others: a request paid for thirty matches
before its own. Here each route is filed under the literal segments its path starts with
(at most two: `/api/sessions/{key}` under `api/sessions`, `/healthz` under `healthz`,
`/static` under `static`), and a request tries, in the table's order, only the routes
filed under its own path's first segments or a shorter start of them. Any route that could
match is among those (a route matches only a path that starts with its literal segments),
so what matches, the 405 of a path whose methods differ, and the order of precedence are
Starlette's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Host, Match, Router
from starlette.types import Receive, Scope, Send

Key = tuple[str, ...]
DEPTH = 2  # segments a route is filed under, at most


def route_key(route: BaseRoute) -> Key:
    """The literal segments a route's path starts with (none for a host route)."""
    path = getattr(route, "path", None)
    if path is None or isinstance(route, Host):
        return ()
    literal: list[str] = []
    for segment in path.split("/", DEPTH + 1)[1 : DEPTH + 1]:
        if "{" in segment:
            break
        literal.append(segment)
    return tuple(literal)


def path_key(path: str) -> Key:
    """A request path's first segments, as route_key files them."""
    return tuple(path.split("/", DEPTH + 1)[1 : DEPTH + 1])


class IndexedRouter(Router):
    """A Router (no trailing-slash redirects) whose routes are looked up by key."""

    def __init__(self, routes: Sequence[BaseRoute], **options: Any) -> None:
        super().__init__(routes, redirect_slashes=False, **options)
        self._filed: list[tuple[BaseRoute, Key]] = []  # each route with its key, in order
        self._keys: set[Key] = set()  # the keys routes are filed under
        # The candidates found so far, by the route keys a path starts with.
        self.cached: dict[tuple[Key, ...], list[BaseRoute]] = {}

    def candidates(self, path: str) -> list[BaseRoute]:
        """The routes `path` can match, in the table's order."""
        if len(self._filed) != len(self.routes):  # routes added since (Router.add_route)
            self._filed = [(route, route_key(route)) for route in self.routes]
            self._keys = {key for _, key in self._filed}
            self.cached = {}
        key = path_key(path)
        # Only keys routes are filed under: a bounded cache whatever the paths asked for.
        starts = tuple(key[:n] for n in range(len(key) + 1) if key[:n] in self._keys)
        found = self.cached.get(starts)
        if found is None:
            found = [route for route, filed_key in self._filed if filed_key in starts]
            self.cached[starts] = found
        return found

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().app(scope, receive, send)
            return
        scope.setdefault("router", self)
        partial: tuple[BaseRoute, Scope] | None = None
        for route in self.candidates(get_route_path(scope)):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = route, child_scope
        if partial is not None:  # the path's route, another method: 405
            route, child_scope = partial
            scope["route"] = route
            scope.update(child_scope)
            await route.handle(scope, receive, send)
            return
        await self.default(scope, receive, send)
