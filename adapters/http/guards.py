"""Guards around the whole ASGI app, Socket.IO's HTTP and WebSocket requests included.

- `HostAllowList` answers only to the host names pairgate is meant to be reached by. The
  same-origin check compares `Origin` with `Host`, and a page on a name the attacker
  controls, rebound by DNS to this server (DNS rebinding), sends both as its own name.
- `CrossSiteRequests` refuses requests that change something (POST, DELETE, ...) sent
  by a browser from another site: without tokens (one default identity) the only
  credential is being able to reach the server, and a page on any site can make a
  browser on the operator's machine send a form or a `fetch` there.
- `SecurityHeaders` adds a content security policy (scripts and styles from the server
  itself, no framing), `nosniff` and `no-referrer` to every HTTP response.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.web import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

# The Scan page's needs exactly: its own scripts, styles and Socket.IO connection, and the
# QR code as a data: image. Nothing may frame any response (clickjacking, hidden pages).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors, for browsers without CSP level 2
)


@dataclass(frozen=True)
class HostPolicy:
    """Which `Host` names to answer to. IP literals cannot be rebound (a page served from
    an IP address is that address's own origin), so `any_address` allows them all."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()  # from "*.example.com": ".example.com"
    any_address: bool = False
    anything: bool = False

    @classmethod
    def for_bind(cls, bind: str, configured: Iterable[str] = ()) -> HostPolicy:
        """Bound to loopback: the loopback names only. Bound elsewhere: also any IP address
        and this machine's host name. `configured` names (PAIRGATE_ALLOWED_HOSTS) add to
        these; "*" answers to any Host, "*.example.com" to its subdomains."""
        listed = [normalize(name) for name in configured if name.strip()]
        names = set(LOOPBACK_NAMES) | {normalize(bind)}
        loopback = _is_loopback(bind)
        if not loopback:
            names.add(normalize(socket.gethostname()))
        suffixes = tuple(name[1:] for name in listed if name.startswith("*."))
        names |= {name for name in listed if not name.startswith("*")}
        return cls(frozenset(names), suffixes, any_address=not loopback, anything="*" in listed)

    def allows(self, host: str) -> bool:
        if self.anything or host in self.names:
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        return self.any_address and _is_address(host)


def normalize(host: str) -> str:
    """A Host header's name: lower case, without port, brackets or the root's dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


class HostAllowList:
    """Refuses requests whose `Host` is not allowed: HTTP and Socket.IO polling with the
    API's JSON error (400, `invalid_host`), WebSockets before they are accepted."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = _host_of(scope)
        # No Host at all is no browser (they always send one), so no rebinding either.
        if raw is None or self.policy.allows(normalize(raw)):
            await self.app(scope, receive, send)
            return
        refusal = error_response(
            400,
            "invalid_host",
            f"this server does not answer to the host {raw[:100]!r}; "
            "if it should, add it to PAIRGATE_ALLOWED_HOSTS",
        )
        refusal.headers.update({name.decode(): value.decode() for name, value in SECURITY_HEADERS})
        if scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
            await refusal(scope, receive, send)  # starlette sends a WebSocket's as its denial
        else:
            await send({"type": "websocket.close", "code": 1008})


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CrossSiteRequests:
    """403 `forbidden` for a request that changes something and whose `Origin` is neither
    the server's own (the same `Host`) nor one of the allowed origins (as Socket.IO
    connections are checked: PAIRGATE_ALLOWED_ORIGINS, `*` for any). Browsers send
    `Origin` with every such request from a page; without it, `Sec-Fetch-Site: cross-site`
    still tells one. Clients that are not browsers send neither and pass."""

    def __init__(self, app: ASGIApp, origins: Iterable[str] = ()) -> None:
        self.app = app
        self.origins = frozenset(origin.rstrip("/").lower() for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or "*" in self.origins:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            allowed = headers.get("sec-fetch-site") not in ("cross-site", "same-site")
        else:
            origin = origin.rstrip("/").lower()
            own = origin.partition("://")[2] == headers.get("host", "").lower()
            allowed = own or origin in self.origins
        if allowed:
            await self.app(scope, receive, send)
            return
        refusal = error_response(
            403,
            "forbidden",
            "a cross-site request; if this origin is yours, add it to PAIRGATE_ALLOWED_ORIGINS",
        )
        await refusal(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A WebSocket's frames are not documents: only a refused upgrade has a response,
        # and HostAllowList adds these headers to its own. Not wrapping its `send` spares
        # every Socket.IO frame a call.
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if SECURITY_HEADERS[-1] not in headers:  # not set already (HostAllowList)
                    message["headers"] = [*headers, *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_secured)


def _host_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"host":  # ASGI servers give header names in lower case
            return str(value.decode("latin-1"))
    return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(bind: str) -> bool:
    if normalize(bind) == "localhost":
        return True
    try:
        return ipaddress.ip_address(normalize(bind)).is_loopback
    except ValueError:
        return False
