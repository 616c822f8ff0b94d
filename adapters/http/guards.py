"""Guards around the whole ASGI app, Socket.IO's HTTP and WebSocket requests included.

`Guards` checks, in one pass:

- the host allow-list: pairgate answers only to the host names it is meant to be reached by. The
  same-origin check compares `Origin` with `Host`, and a page on a name the attacker
  controls, rebound by DNS to this server (DNS rebinding), sends both as its own name.
- cross-site requests: refused when they change something (POST, DELETE, ...) sent
  by a browser from another site: without tokens (one default identity) the only
  credential is being able to reach the server, and a page on any site can make a
  browser on the operator's machine send a form or a `fetch` there.
- security headers: a content security policy (scripts and styles from the server
  itself, no framing), `nosniff` and `no-referrer` to every HTTP response.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Guards:
    """The three guards in one pass over a request's headers (one ASGI call, not three):

    - the **host allow-list** refuses requests whose `Host` is not allowed: HTTP and
      Socket.IO polling with the API's JSON error (400, `invalid_host`), WebSockets before
      they are accepted. No `Host` at all is no browser (they always send one), so no
      rebinding either.
    - **cross-site requests**: 403 `forbidden` for a request that changes something and
      whose `Origin` is neither the server's own (the same `Host`) nor one of the allowed
      origins (as Socket.IO connections are checked: PAIRGATE_ALLOWED_ORIGINS, `*` for
      any). Browsers send `Origin` with every such request from a page; without it,
      `Sec-Fetch-Site: cross-site` still tells one. Clients that are not browsers send
      neither and pass.
    - **security headers** on every HTTP response. A WebSocket's frames are not documents:
      only a refused upgrade has a response (it gets them too), and not wrapping a
      WebSocket's `send` spares every Socket.IO frame a call.
    """

    def __init__(self, app: ASGIApp, hosts: HostPolicy, origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = frozenset(origin.rstrip("/").lower() for origin in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        host = origin = fetch_site = None
        # The first of each, as starlette reads them (ASGI servers give names in lower case).
        for name, value in scope["headers"]:
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
            elif name == b"sec-fetch-site" and fetch_site is None:
                fetch_site = value.decode("latin-1")
        if host is not None and not self.hosts.allows(normalize(host)):
            await _refuse_host(host, scope, receive, send)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS and not self._same_site(origin, host, fetch_site):
            refusal = error_response(
                403,
                "forbidden",
                "a cross-site request; if this origin is yours, add it to PAIRGATE_ALLOWED_ORIGINS",
            )
            await refusal(scope, receive, _secured(send))
            return
        await self.app(scope, receive, _secured(send))

    def _same_site(self, origin: str | None, host: str | None, fetch_site: str | None) -> bool:
        if "*" in self.origins:
            return True
        if origin is None:
            return fetch_site not in ("cross-site", "same-site")
        origin = origin.rstrip("/").lower()
        own = origin.partition("://")[2] == (host or "").lower()
        return own or origin in self.origins


def _secured(send: Send) -> Send:
    async def send_secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
        await send(message)

    return send_secured


async def _refuse_host(host: str, scope: Scope, receive: Receive, send: Send) -> None:
    refusal = error_response(
        400,
        "invalid_host",
        f"this server does not answer to the host {host[:100]!r}; "
        "if it should, add it to PAIRGATE_ALLOWED_HOSTS",
    )
    refusal.headers.update({name.decode(): value.decode() for name, value in SECURITY_HEADERS})
    if scope["type"] == "http" or "websocket.http.response" in scope.get("extensions", {}):
        await refusal(scope, receive, send)  # starlette sends a WebSocket's as its denial
    else:
        await send({"type": "websocket.close", "code": 1008})


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
