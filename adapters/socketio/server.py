"""python-socketio's AsyncServer, bounded in what a client may hold before it is served.

python-socketio bounds each Engine.IO packet (`max_http_buffer_size`) but not two things
a client can pile up in the server's memory:

- **Binary attachments.** A BINARY_EVENT header announces how many attachments follow
  (up to nine digits' worth), and python-socketio keeps each one in `_binary_packet`
  until the last has arrived: thousands of frames just under the packet limit each are
  hundreds of megabytes. `BoundedPacket` refuses a header announcing more than
  MAX_ATTACHMENTS, and an event whose header and attachments add up to more than the
  payload limit; the server then closes the sender's connection. (pairgate's protocol
  has no binary payloads; a small one is still answered like any malformed request.)
- **Engine.IO sessions without a Socket.IO connection.** Every handshake creates a
  session (its queue, its request's environ) before the client has said who it is, and
  one that never sends a Socket.IO CONNECT lives until the heartbeat gives up on it. An
  address may hold `max_handshakes_per_address` such sessions (more are refused, 401
  `"rate_limited"`, Engine.IO's only refusal), and each is closed `connect_timeout`
  seconds after its handshake unless a namespace connection has been accepted.

- **Namespace connects.** CONNECT and DISCONNECT packets are not requests the limits
  count: one websocket cycled 3,000 of each in 2.4 s. A transport that sends more than
  MAX_CONNECTS is hung up (a new one costs a handshake, bounded per address).
- **Malformed packets.** Each one was an ERROR with a traceback ("message async handler
  error"), read before any request limit, and the connection stayed open: a client could
  write the log as fast as it sent frames. A packet that is not a client's Socket.IO
  packet (`MalformedPacket`: undecodable, a type clients do not send, an event that is
  not a list starting with its name) hangs up its sender, with one warning line.

Engine.IO's own holes are closed in adapters/socketio/transport.py.

These are overrides of python-socketio's (private) `_handle_eio_*` and `_handle_connect`
methods and its `serializer` class, each calling the original.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import engineio
import socketio
from socketio import packet

from adapters.limits.addresses import AddressCounts
from adapters.socketio.gateway import client_address
from adapters.socketio.transport import BoundedEngineIO, hang_up

log = logging.getLogger(__name__)

# More than any real client sends in one event; each attachment is a separate frame and a
# list entry even when empty, so the byte bound alone would not bound their number.
MAX_ATTACHMENTS = 10
# A client connects a namespace once per transport (a few times if it reconnects one):
# CONNECT and DISCONNECT are not requests the limits count, so cycling them is bounded here.
MAX_CONNECTS = 8


# What a client may send (CONNECT_ERROR is the server's answer to a CONNECT).
CLIENT_PACKETS = {
    packet.CONNECT,
    packet.DISCONNECT,
    packet.EVENT,
    packet.ACK,
    packet.BINARY_EVENT,
    packet.BINARY_ACK,
}


# python-socketio's own refusals of a packet, by their text.
UNEXPECTED = {"Unexpected binary packet", "Unexpected binary attachment"}


def _is_event(data: Any) -> bool:
    """An event's data: a list led by the event's name."""
    return isinstance(data, list) and bool(data) and isinstance(data[0], str)


class RefusedPacket(ValueError):
    """A packet the server does not take: its sender is disconnected."""


class OversizedEvent(RefusedPacket):
    """A binary event larger than the server accepts."""


class MalformedPacket(RefusedPacket):
    """Not a client's Socket.IO packet."""


class BoundedPacket(socketio.packet.Packet):  # type: ignore[misc]  # untyped library
    max_bytes = 65536  # an event's header and attachments together; set per server
    held_bytes = 0

    def decode(self, encoded_packet: Any) -> int:
        try:
            count: int = super().decode(encoded_packet)
        except (ValueError, TypeError, IndexError, RecursionError) as undecodable:  # (JSON's)
            raise MalformedPacket(f"a malformed Socket.IO packet ({undecodable})") from None
        if self.packet_type not in CLIENT_PACKETS:
            raise MalformedPacket(f"a malformed Socket.IO packet (type {self.packet_type!r})")
        if self.packet_type in (packet.EVENT, packet.BINARY_EVENT) and not _is_event(self.data):
            raise MalformedPacket("a malformed Socket.IO event (not a list led by its name)")
        if count > MAX_ATTACHMENTS:
            raise OversizedEvent(
                f"{count} binary attachments announced (at most {MAX_ATTACHMENTS})"
            )
        self.held_bytes = len(encoded_packet)
        return count

    def add_attachment(self, attachment: bytes) -> bool:
        self.held_bytes += len(attachment)
        if self.held_bytes > self.max_bytes:
            raise OversizedEvent(f"a binary event over {self.max_bytes} bytes")
        done: bool = super().add_attachment(attachment)
        return done


class BoundedAsyncServer(socketio.AsyncServer):  # type: ignore[misc]  # untyped library
    def __init__(
        self,
        *,
        max_http_buffer_size: int,
        max_handshakes_per_address: int,
        connect_timeout: float,
        max_sessions_per_address: int = 0,
        **options: Any,
    ) -> None:
        """`max_sessions_per_address`: Engine.IO sessions one address may hold, whatever
        their transport (0: no bound); a websocket is a connection, which the web server
        counts too, but a polling session is only requests that come and go."""
        packets = type("BoundedPacket", (BoundedPacket,), {"max_bytes": max_http_buffer_size})
        super().__init__(serializer=packets, max_http_buffer_size=max_http_buffer_size, **options)
        self._sessions_at = AddressCounts(max_sessions_per_address, "sessions", log)
        self._address_of: dict[str, str] = {}  # each session's address, while it lasts
        self._connect_timeout = connect_timeout
        # Engine.IO sessions without a Socket.IO connection: their address and deadline.
        self._unconnected: dict[str, tuple[str, asyncio.TimerHandle]] = {}
        self._unconnected_at = AddressCounts(
            max_handshakes_per_address, "unconnected handshakes", log
        )
        self._hang_ups: set[asyncio.Task[None]] = set()
        self._connects: Counter[str] = Counter()  # namespace CONNECTs per transport

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        address = client_address(environ)
        if self._unconnected_at.full(address) or self._sessions_at.full(address):
            return "rate_limited"  # Engine.IO refuses the handshake
        await super()._handle_eio_connect(eio_sid, environ)
        self._address_of[eio_sid] = address
        self._sessions_at.add(address)
        timer = asyncio.get_running_loop().call_later(
            self._connect_timeout, self._connect_too_late, eio_sid
        )
        self._unconnected[eio_sid] = (address, timer)
        self._unconnected_at.add(address)
        return None

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        self._connects[eio_sid] += 1
        if self._connects[eio_sid] > MAX_CONNECTS:
            log.warning(
                "disconnecting %s: more than %d connects on one transport", eio_sid, MAX_CONNECTS
            )
            await self._hang_up(eio_sid)
            return
        await super()._handle_connect(eio_sid, namespace, data)
        if self.manager.sid_from_eio_sid(eio_sid, namespace or "/") is not None:
            self._settled(eio_sid)  # accepted; a refused one may still try until its deadline

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return  # hung up on: what it still sent in the meantime is not read
        try:
            if (isinstance(data, bytes) and eio_sid not in self._binary_packet) or data == "":
                # (python-socketio takes either for an event without data)
                raise MalformedPacket("a malformed Socket.IO packet (empty, or unannounced binary)")
            await super()._handle_eio_message(eio_sid, data)
        except (RefusedPacket, ValueError) as refused:
            if not isinstance(refused, RefusedPacket) and str(refused) not in UNEXPECTED:
                raise
            log.warning("disconnecting %s: %s", eio_sid, refused)
            self._binary_packet.pop(eio_sid, None)
            await self._hang_up(eio_sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self._settled(eio_sid)
        self._connects.pop(eio_sid, None)
        address = self._address_of.pop(eio_sid, None)
        if address is not None:
            self._sessions_at.remove(address)
        await super()._handle_eio_disconnect(eio_sid, reason)

    def _settled(self, eio_sid: str) -> None:
        entry = self._unconnected.pop(eio_sid, None)
        if entry is None:
            return
        address, timer = entry
        timer.cancel()
        self._unconnected_at.remove(address)

    def _connect_too_late(self, eio_sid: str) -> None:
        task = asyncio.create_task(self._hang_up(eio_sid))
        self._hang_ups.add(task)
        task.add_done_callback(self._hang_ups.discard)

    async def _hang_up(self, eio_sid: str) -> None:
        await hang_up(self.eio, eio_sid)
        self._settled(eio_sid)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return BoundedEngineIO
