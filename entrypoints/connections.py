"""uvicorn's HTTP and WebSocket protocols, bounded against clients that hold connections.

Every open connection costs a file descriptor, and the process has a fixed number of
them, shared with the event store's files: a client that opens connections and never
completes a request must not be able to take them all. uvicorn bounds neither how long
request headers may take (its keep-alive timeout starts after a response and is dropped
at the first byte of the next request) nor how many connections one address may open.
These subclasses of the protocols uvicorn would pick add both:

- a **request deadline**: a connection that has not sent a request's complete headers
  and body within `header_timeout` seconds of opening, or of its previous response, is
  closed (a body trickling in a byte at a time holds a connection as slow headers do);
- a **cap per address**: a connection from an address that already holds
  `per_address` open connections (HTTP or upgraded to a websocket) is closed at once.
  Trusted proxies are exempt: every client behind them shares their address.
- a **cap in all**: past `total` open connections (by default the open-files limit
  less 128, or less an eighth of it if that is more), new ones are closed at once,
  however many addresses they come from: the store's files and the engines keep the
  rest of the descriptors.
- a **read deadline**: a client that leaves what the server sends unread until the
  buffers fill (asyncio pauses writing) has `header_timeout` seconds to read, else its
  connection is cut, as it is when the request deadline finds an answer still unread
  (a close would wait for the client to read it). Unread answers held the connection,
  and its place under the caps, for as long as the client wished; blind Engine.IO
  pongs keep a websocket session alive without reading, and its messages piled up in
  the kernel, in uvicorn and in Engine.IO's queue.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from collections.abc import Sequence
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from adapters.limits.addresses import AddressCounts, counted

log = logging.getLogger("pairgate")

# Descriptors kept from client connections: 128, or an eighth of the limit if more.
RESERVE, RESERVE_SHARE = 128, 8


def default_total(open_files: int) -> int:
    """Connections allowed in all under this open-files limit (1,024: 896)."""
    return max(open_files - max(RESERVE, open_files // RESERVE_SHARE), 16)


class OpenConnections:
    """Open connections: all of them up to `total` (None: the process's open-files limit
    less a reserve, read at the first connection, once `pairgate serve` has raised it; 0:
    no cap), and those of each client address up to `per_address` (0: none; `exempt`
    networks, trusted proxies, have no cap of their own). The reserve keeps descriptors
    for the store's files, the engines and their sidecars, whatever the number of
    addresses a flood comes from."""

    def __init__(
        self, per_address: int, exempt: Sequence[str] = (), total: int | None = None
    ) -> None:
        self._per_address = AddressCounts(
            per_address, "connections", log, "closing new connections"
        )
        self._total_cap = total
        self._exempt = [ipaddress.ip_network(network, strict=False) for network in exempt]
        self._counted: dict[asyncio.BaseTransport, str | None] = {}  # to its capped address
        self._full = False  # at the cap in all (logged once until a connection closes)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        if self._total_cap is None:
            self._total_cap = default_total(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        if self._total_cap and len(self._counted) >= self._total_cap:
            if not self._full:
                self._full = True
                log.warning("%d connections are open: closing new connections", self._total_cap)
            return False
        peer = transport.get_extra_info("peername")
        address = None
        if self._per_address.cap and isinstance(peer, tuple) and not self._is_exempt(peer[0]):
            address = counted(peer[0])  # an IPv6 client by its /64
            if self._per_address.full(address):
                return False
            self._per_address.add(address)
        self._counted[transport] = address
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        if transport not in self._counted:
            return
        address = self._counted.pop(transport)
        self._full = False
        if address is not None:
            self._per_address.remove(address)

    def _is_exempt(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._exempt)


class ReadDeadline(asyncio.Protocol):
    """Mixed into uvicorn's HTTP and WebSocket protocols (which pause their writers while
    the transport's buffer is full): a client must read within `header_timeout`."""

    header_timeout: float
    transport: asyncio.Transport
    _stalled: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            loop = asyncio.get_running_loop()
            self._stalled = loop.call_later(self.header_timeout, self._cut_off)

    def resume_writing(self) -> None:
        self._stop_waiting()
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _stop_waiting(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _cut_off(self) -> None:
        self._stop_waiting()
        if self.transport.get_protocol() is self and not self.transport.is_closing():
            unread = self.transport.get_write_buffer_size()
            peer = self.transport.get_extra_info("peername")
            log.warning(
                "closing a connection from %s: %d bytes sent to it stayed unread for %g s",
                peer[0] if isinstance(peer, tuple) else peer,
                unread,
                self.header_timeout,
            )
            self.transport.abort()


class HeaderDeadline(ReadDeadline):
    """Mixed into uvicorn's HTTP protocol (httptools or h11): both keep the request being
    served in `cycle`, replaced when the next request's headers are complete."""

    open_connections: OpenConnections
    header_timeout: float
    transport: asyncio.Transport
    cycle: Any
    _deadline: asyncio.TimerHandle | None = None
    _answered: Any = None  # the cycle whose response completed before the wait began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.open_connections.admit(transport):
            transport.close()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is None:
            return
        upgraded = self.transport.get_protocol() is not self  # now a websocket
        # A new request's headers are complete, and so is its body (a body that trickles
        # in would hold the connection, and the task waiting for it, as slow headers do).
        received = self.cycle is not self._answered and not self.cycle.more_body
        if upgraded or received:
            self._deadline.cancel()
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]  # uvicorn's protocols have it
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_headers()  # idle, or on its way to the next request

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.open_connections.release(self.transport)
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._answered = self.cycle
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.get_protocol() is self and not self.transport.is_closing():
            if self.transport.get_write_buffer_size():
                self._cut_off()  # a close would wait for the client to read it all
            else:
                self.transport.close()


class ReleasesAddress(ReadDeadline):
    """Mixed into uvicorn's WebSocket protocol, which takes a connection over from the
    HTTP protocol on upgrade and is the one told when it closes."""

    open_connections: OpenConnections
    transport: asyncio.Transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_connections.release(self.transport)
        super().connection_lost(exc)


def bounded_protocols(
    header_timeout: float,
    per_address: int,
    exempt: Sequence[str] = (),
    total: int | None = None,
) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn's `http` and `ws` protocol classes with these bounds, sharing one count."""
    websockets: Any = AutoWebSocketsProtocol  # a class, typed by uvicorn as a factory
    if websockets is None:
        raise RuntimeError("no WebSocket library: install uvicorn[standard]")
    shared = {"open_connections": OpenConnections(per_address, exempt, total)}
    http = type(
        "BoundedHTTPProtocol",
        (HeaderDeadline, AutoHTTPProtocol),
        {**shared, "header_timeout": header_timeout},
    )
    ws = type(
        "BoundedWebSocketProtocol",
        (ReleasesAddress, websockets),
        {**shared, "header_timeout": header_timeout},
    )
    return http, ws
