"""Socket.IO client managers that find a client's rooms without looking through all rooms.

python-socketio keeps `rooms[namespace][room] = {sid: eio_sid}` and nothing from a client
to its rooms, so a disconnect copies the namespace's whole room table and asks every room
whether it holds the client (`BaseManager.basic_disconnect`; `get_rooms` likewise). With
one room per connection (its sid's) and one per session, that is two rooms per connected
client: 0.52 ms a disconnect with 2,000 clients connected, 23.7 ms with 50,000
(`python -m benchmarks.rooms`, docs/performance.md), and a mass disconnect (a deploy, a
network blip) costs the square of the number of clients.

`RoomIndex` keeps the other direction too, client to rooms, updated wherever the library
enters or leaves a room (`basic_enter_room`, `basic_leave_room`: every other change goes
through them), and answers `basic_disconnect` and `get_rooms` from it.
"""

from __future__ import annotations

from typing import Any

import socketio

from adapters.socketio.sends import DirectSends

Rooms = dict[Any, None]  # a client's rooms, in the order entered (None: the namespace's)


class RoomIndex(socketio.AsyncManager):  # type: ignore[misc]  # untyped library
    """Mixed in ahead of a python-socketio async manager (this process's or Redis')."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], Rooms] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), {})[room] = None

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.pop(room, None)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    @property
    def clients_indexed(self) -> int:
        """Clients whose rooms are kept (in any namespace): the ones connected."""
        return len(self._rooms_of)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The library's, with the client's rooms read from the index."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]


class IndexedManager(RoomIndex, DirectSends):
    """This process's clients only."""


class IndexedRedisManager(RoomIndex, socketio.AsyncRedisManager, DirectSends):  # type: ignore[misc]
    """Emissions fanned out to every process over Redis pub/sub (each process's share
    emitted by DirectSends)."""
