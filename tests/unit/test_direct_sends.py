"""DirectSends: what python-socketio's `emit` sends, without a task per recipient."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from adapters.socketio.rooms import IndexedManager


class Recorded:
    """Packets as a server would queue them for each client (by Engine.IO sid)."""

    def __init__(self, manager: socketio.AsyncManager, failing: str | None = None) -> None:
        self.server = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
        self.sent: list[tuple[str, str, str | None]] = []
        self.failing = failing
        self.server._send_eio_packet = self._queue  # what each recipient is handed
        self.manager = manager

    async def _queue(self, eio_sid: str, pkt: Any) -> None:
        if eio_sid == self.failing:
            raise ConnectionError("gone")
        self.sent.append((eio_sid, pkt.data, asyncio.current_task().get_name()))  # type: ignore[union-attr]

    async def join(self, eio_sid: str, room: str) -> str:
        sid = await self.manager.connect(eio_sid, "/")
        await self.manager.enter_room(sid, "/", room, eio_sid)
        return sid


@pytest.mark.parametrize("manager", [socketio.AsyncManager, IndexedManager])
async def test_the_same_packets_reach_the_same_clients(manager: type) -> None:
    """Against the library's own manager: the same packets for the same recipients,
    `skip_sid` and a list of rooms included (the order of recipients aside)."""
    seen = []
    for kind in (socketio.AsyncManager, manager):
        record = Recorded(kind())
        a = await record.join("ea", "session:k")
        await record.join("eb", "session:k")
        await record.join("ec", "session:other")
        await record.manager.emit("session.qr", {"qr": "x"}, "/", room="session:k")
        await record.manager.emit(
            "two", ("a", 1), "/", to=["session:k", "session:other"], skip_sid=a
        )
        await record.manager.emit("none", None, "/", room="session:missing")
        seen.append(sorted((sid, data) for sid, data, _ in record.sent))
    assert seen[0] == seen[1]
    assert ("ea", '2["session.qr",{"qr":"x"}]') in seen[1]
    assert ("ea", '2["two","a",1]') not in seen[1]


async def test_packets_are_queued_in_the_callers_task_and_a_failure_spares_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = Recorded(IndexedManager(), failing="eb")
    for eio_sid in ("ea", "eb", "ec"):
        await record.join(eio_sid, "session:k")
    task = asyncio.current_task()
    assert task is not None
    await record.manager.emit("session.ready", {"key": "k"}, "/", room="session:k")
    assert sorted(sid for sid, _, _ in record.sent) == ["ea", "ec"]
    assert {name for _, _, name in record.sent} == {task.get_name()}  # no task of its own
    assert [r.getMessage() for r in caplog.records] == ["emitting session.ready to eb failed"]


async def test_a_client_closed_while_packets_are_queued_changes_nothing_underway() -> None:
    """Queueing a packet may close a client (a slow reader's session): the rooms change
    during the emit, which went on with the recipients it had listed."""
    record = Recorded(IndexedManager())
    sids = {e: await record.join(e, "session:k") for e in ("ea", "eb", "ec")}

    async def closing(eio_sid: str, pkt: Any) -> None:
        record.sent.append((eio_sid, pkt.data, None))
        if eio_sid == "ea":
            await record.manager.disconnect(sids["ea"], "/")

    record.server._send_eio_packet = closing
    await record.manager.emit("session.qr", {"qr": "x"}, "/", room="session:k")
    assert sorted(sid for sid, _, _ in record.sent) == ["ea", "eb", "ec"]
    assert record.manager.get_rooms(sids["ea"], "/") == []
