"""Recorded domain events, projected onto the seed's Socket.IO emissions."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from uuid import UUID

import socketio
from eventsourcing.domain import DomainEventProtocol

from adapters import payloads
from adapters.console_payloads import changed, console_room
from adapters.qr.png import qr_data_uri
from domain.application.ports import SessionRow
from domain.model.session import DeviceSession

Emission = tuple[str, payloads.Emission]


# Rendering a code takes a fraction of a millisecond of CPU: off the event loop, on one
# thread of its own. Codes due together (rotations the timer slack lets end together) are
# rendered back to back by that one thread, woken once, instead of each waking a thread of
# asyncio's pool; rendering holds the GIL, so more threads would not render more at once.
# 2,000 rotating sessions: 10% less CPU (docs/performance.md).
_renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pairgate-qr")


async def qr_emission(key: str, code: str, seconds_left: float) -> Emission:
    image = await asyncio.get_running_loop().run_in_executor(_renderer, qr_data_uri, code)
    return "session.qr", payloads.SessionQr(key=key, qr=image, timeout=math.ceil(seconds_left))


def passkey_emission(key: str, options: dict[str, Any], seconds_left: float) -> Emission:
    timeout = math.ceil(seconds_left)
    payload = payloads.SessionPasskeyRequired(key=key, options=options, timeout=timeout)
    return "session.passkey_required", payload


def pair_code_emission(key: str, code: str, seconds_left: float) -> Emission:
    payload = payloads.SessionPairCode(key=key, code=code, timeout=math.ceil(seconds_left))
    return "session.pair_code", payload


async def project(key: str, event: DomainEventProtocol[UUID]) -> list[Emission]:
    """The emissions one recorded event makes."""
    match event:
        case DeviceSession.SessionCreated() | DeviceSession.Restarted():
            return [("session.created", payloads.SessionCreated(key=key))]
        case DeviceSession.QrIssued(code=code, timeout=timeout):
            return [await qr_emission(key, code, timeout)]
        case DeviceSession.PairCodeIssued(code=code, timeout=timeout):
            return [pair_code_emission(key, code, timeout)]
        case DeviceSession.Authenticated():
            return [("session.authenticated", payloads.SessionKey(key=key))]
        case DeviceSession.Ready():
            return [("session.ready", payloads.SessionKey(key=key))]
        case DeviceSession.PasskeyRequested(options=options, timeout=timeout):
            return [passkey_emission(key, options, timeout)]
        case DeviceSession.Disconnected(reason=reason, cause=cause):
            ended = ("session.disconnected", payloads.SessionDisconnected(key=key, reason=reason))
            if cause is None:
                return [ended]
            return [
                ("session.passkey_failed", payloads.SessionPasskeyFailed(key=key, cause=cause)),
                ended,
            ]
    return []


def room(key: str) -> str:
    """The key's room. python-socketio puts each connection in a room named after its sid,
    which a client may send as a key: session rooms have a namespace of their own (no sid
    has a colon)."""
    return f"session:{key}"


class SocketIoNotifier:
    """Subscriptions over python-socketio, and the projection of recorded events onto
    them: one room per key, nothing to anyone else."""

    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    async def subscribe(self, key: str, subscriber: str) -> None:
        await self._sio.enter_room(subscriber, room(key))

    async def watch(self, identity: str, subscriber: str) -> None:
        """A console hears `session.changed` for every session of `identity`."""
        await self._sio.enter_room(subscriber, console_room(identity))

    async def changed(self, row: SessionRow) -> None:
        """A session's row after a recorded change, to its owner's consoles connected
        here only: every process follows the whole log and tells its own consoles (no
        fan-out), and nothing is made for an owner without a console here."""
        watching = console_room(row.owner)
        if not self._sio.manager.rooms.get("/", {}).get(watching):
            return
        payload = changed(row).model_dump()
        await self._sio.emit("session.changed", payload, room=watching, ignore_queue=True)

    async def unsubscribe_all(self, key: str) -> None:
        await self._sio.close_room(room(key))  # in every process, through the client manager

    async def recorded(self, key: str, event: DomainEventProtocol[UUID]) -> None:
        """Project an event that has been saved onto the key's subscribers (a handler of
        recorded events: the bus hands it a key's events in order)."""
        for name, payload in await project(key, event):
            await self._sio.emit(name, payload.model_dump(), room=room(key))

    async def send_current(self, session: DeviceSession, now: datetime, to: str) -> None:
        """Re-send the live QR code and pairing code to one rejoining connection, with the
        time each has left."""
        emissions = []
        if session.qr_code is not None and (left := session.qr_seconds_left(now)) > 0:
            emissions.append(await qr_emission(session.key, session.qr_code, left))
        if session.pair_code is not None and (left := session.pair_code_seconds_left(now)) > 0:
            emissions.append(pair_code_emission(session.key, session.pair_code, left))
        options = session.passkey_options
        if session.passkey_pending and options and (left := session.pairing_seconds_left(now)):
            emissions.append(passkey_emission(session.key, options, left))
        for name, payload in emissions:
            await self._sio.emit(name, payload.model_dump(), to=to)
