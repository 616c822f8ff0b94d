"""RoomIndex answers as python-socketio's own manager does, whatever clients do."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.socketio.rooms import IndexedManager

NAMESPACES = ("/", "/other")
CLIENTS = 3
ROOMS = ("session:a", "session:b", "console:x")

steps = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, CLIENTS - 1), st.sampled_from(NAMESPACES)),
        st.tuples(
            st.sampled_from(["enter", "leave"]),
            st.integers(0, CLIENTS - 1),
            st.sampled_from(NAMESPACES),
            st.sampled_from(ROOMS),
        ),
        st.tuples(st.just("close"), st.sampled_from(ROOMS), st.sampled_from(NAMESPACES)),
        st.tuples(
            st.sampled_from(["disconnect", "pre_disconnect", "callback"]),
            st.integers(0, CLIENTS - 1),
            st.sampled_from(NAMESPACES),
        ),
    ),
    max_size=40,
)


class Twin:
    """A manager with its clients named by their Engine.IO sids (each manager makes up
    its own Socket.IO sids)."""

    def __init__(self, manager: socketio.AsyncManager) -> None:
        manager.set_server(socketio.AsyncServer())
        manager.initialize()
        self.manager = manager
        self.sids: dict[tuple[int, str], str] = {}
        self.client_of: dict[str, int] = {}  # every sid ever given, to its client

    async def apply(self, step: tuple[Any, ...]) -> None:
        manager, kind = self.manager, step[0]
        if kind == "connect":
            _, client, namespace = step
            if manager.sid_from_eio_sid(f"eio{client}", namespace) is not None:
                return  # connected already (as on a server: once per namespace)
            sid = await manager.connect(f"eio{client}", namespace)
            if sid is not None:
                self.sids[(client, namespace)] = sid
                self.client_of[sid] = client
            return
        if kind == "close":
            await manager.close_room(step[1], step[2])
            return
        sid = self.sids.get((step[1], step[2]))
        if sid is None or manager.eio_sid_from_sid(sid, step[2]) is None:
            return  # never connected, or gone
        if kind == "disconnect":
            await manager.disconnect(sid, step[2])
        elif not manager.is_connected(sid, step[2]):
            return  # on its way out: only its disconnect is left
        elif kind == "enter":
            await manager.enter_room(sid, step[2], step[3])
        elif kind == "leave":
            await manager.leave_room(sid, step[2], step[3])
        elif kind == "pre_disconnect":
            manager.pre_disconnect(sid, step[2])
        else:
            manager._generate_ack_id(sid, lambda *_: None)

    def state(self) -> dict[str, Any]:
        """Every room's members, each client's rooms, and the pending and callback books,
        by Engine.IO sid."""
        manager = self.manager
        eio = self.client_of
        rooms = {
            (namespace, room if room not in eio else "own"): sorted(members.values())
            for namespace, by_room in manager.rooms.items()
            for room, members in by_room.items()
        }
        of_client = {
            (client, namespace): sorted(
                room if room != sid else "own" for room in manager.get_rooms(sid, namespace)
            )
            for (client, namespace), sid in self.sids.items()
        }
        pending = {
            name: {ns: sorted(eio[s] for s in sids) for ns, sids in book.items()}
            for name, book in (
                ("connect", manager.pending_connect),
                ("disconnect", manager.pending_disconnect),
            )
        }
        callbacks = sorted(eio[sid] for sid in manager.callbacks)
        return {"rooms": rooms, "of_client": of_client, "pending": pending, "callbacks": callbacks}


@settings(max_examples=300, deadline=None)
@given(steps)
@example([("connect", 0, "/"), ("callback", 0, "/"), ("disconnect", 0, "/")])
@example([("connect", 1, "/"), ("pre_disconnect", 1, "/"), ("disconnect", 1, "/")])
@example(
    [
        ("connect", 0, "/"),
        ("connect", 1, "/"),
        ("connect", 0, "/other"),
        ("enter", 0, "/", "session:a"),
        ("enter", 1, "/", "session:a"),
        ("enter", 0, "/other", "session:a"),
        ("close", "session:a", "/"),
        ("enter", 1, "/", "session:b"),
        ("disconnect", 1, "/"),
        ("connect", 1, "/"),
        ("disconnect", 0, "/other"),
    ]
)
def test_the_index_agrees_with_the_library(script: list[tuple[Any, ...]]) -> None:
    async def run() -> None:
        library, indexed = Twin(socketio.AsyncManager()), Twin(IndexedManager())
        for step in script:
            await library.apply(step)
            await indexed.apply(step)
            assert indexed.state() == library.state(), step

    asyncio.run(run())


def test_a_disconnect_does_not_look_at_other_clients_rooms() -> None:
    """The library's own disconnect reads the whole room table; this one only the
    client's rooms (here: a table that fails if anything else is read)."""

    async def run() -> None:
        manager = Twin(IndexedManager())
        for client in range(3):
            await manager.apply(("connect", client, "/"))
            await manager.apply(("enter", client, "/", f"session:{client}"))
        table = manager.manager.rooms["/"]
        leaving = manager.sids[(0, "/")]
        own_rooms = {None, leaving, "session:0"}

        class Watched(dict[Any, Any]):
            def copy(self) -> dict[Any, Any]:
                raise AssertionError("the whole room table was copied")

            def items(self) -> Any:
                raise AssertionError("every room was looked at")

            def __getitem__(self, room: Any) -> Any:
                assert room in own_rooms, f"looked in {room!r}"
                return super().__getitem__(room)

        manager.manager.rooms["/"] = Watched(table)
        await manager.manager.disconnect(leaving, "/")
        assert set(manager.manager.rooms["/"]) == {None, "session:1", "session:2"} | {
            manager.sids[(1, "/")],
            manager.sids[(2, "/")],
        }

    asyncio.run(run())
