"""A Socket.IO client manager that emits without a task per recipient.

python-socketio's `AsyncManager.emit` encodes a packet once, starts a task per recipient
to queue it (`_send_eio_packet`), and waits for them all. Queueing a packet never waits
(Engine.IO's queue has no bound: its writer sends it, and a client that does not read is
cut off, entrypoints/connections.py), so the tasks only cost: a task, its wake-ups and a
wait per recipient, four per pairing. And the emitting coroutine gives the loop up while
they run: a key's delivery that emits is then still under way when its engine's next
report comes, which must queue behind it on a task of its own (domain.application.dispatch).

`DirectSends.emit` queues each recipient's packet in turn, in the caller's task. The
recipients are listed first: queueing may close a client (a slow reader's session), which
changes the rooms. A recipient whose packet fails is logged, and the others still get
theirs, as with the library's tasks. Emits that ask for an answer (`callback`) are the
library's.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

log = logging.getLogger(__name__)


class DirectSends(socketio.AsyncManager):  # type: ignore[misc]  # untyped library
    """Mixed in just above `socketio.AsyncManager` (below a pub/sub manager, whose own
    `emit` fans out and then hands each process's share to this one)."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):  # a tuple is several arguments, anything else one
            data = list(data)
        else:
            data = [] if data is None else [data]
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        recipients = [e for sid, e in self.get_participants(namespace, room) if sid not in skip]
        if not recipients:
            return
        encoded = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *data]
        ).encode()
        frames = [
            eio_packet.Packet(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]
        for eio_sid in recipients:
            try:
                for frame in frames:
                    await self.server._send_eio_packet(eio_sid, frame)
            except Exception:
                log.exception("emitting %s to %s failed", event, eio_sid)
