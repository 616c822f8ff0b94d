"""What a saved change asks of the engine, the expiry watchdog and the lease.

`settle` runs inside the key's turn and keeps the bookkeeping the key's next command
decides from (what runs here, the watchdog). The slow part of a link that ended for
good, tearing its engine down and releasing its lease, is `ended`: a handler of the
recorded `Disconnected` event, run after the turn like every other consumer; a new
pairing of the key waits for it (`teardown_done`), so it never meets the old engine.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from domain.application.dispatch import Event, EventBus, Outbox
from domain.application.ports import (
    Clock,
    DeviceLeases,
    EngineCatalog,
    EngineEvents,
    WhatsAppEngine,
)
from domain.application.registry import Registry
from domain.application.sessions import Change
from domain.application.watchdog import Watchdog
from domain.model.errors import DeviceSessionError
from domain.model.session import DeviceSession, SessionState

log = logging.getLogger(__name__)
S = SessionState


@dataclass(frozen=True)
class Timeouts:
    """Engines may go quiet. A watchdog ends a pairing `expiry_grace` after its last code,
    and a start that shows no QR code within `start_timeout`."""

    expiry_grace: float = 5.0
    start_timeout: float = 60.0


class EngineActions:
    def __init__(
        self,
        registry: Registry,
        engines: EngineCatalog,
        leases: DeviceLeases,
        clock: Clock,
        watchdog: Watchdog,
        bus: EventBus,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._registry = registry
        self._bus = bus
        self._engines = engines
        self.leases = leases
        self._clock = clock
        self.watchdog = watchdog
        self._timeouts = timeouts or Timeouts()
        self._ending: dict[str, _Ending] = {}  # links ended for good, until `ended` runs

    def settle(self, key: str, change: Change, outbox: Outbox, *, unlink: bool = False) -> None:
        """A change was saved: the registry and the timers follow it now, its events go
        out after the turn. `unlink`: the owner ended the link, so the engine tells
        WhatsApp (a logout) rather than only dropping the credentials."""
        session = change.session
        self._registry.saved(key, session)
        self.watchdog.disarm(key)
        if session.is_live:
            self.arm(key, session)
        elif not session.holds_credentials:
            # The engine may not run here (a restarted process): its credentials go anyway.
            engine = self._registry.unrun(key) or self.engine_named(session.engine)
            self._ending[key] = _Ending(engine, unlink)
            if not any(isinstance(e, DeviceSession.Disconnected) for e in change.events):
                # Nothing recorded now (it had ended already): no handler will be called.
                outbox.then(functools.partial(self.ended, key, None))
        outbox.publish(change.events)

    async def ended(self, key: str, event: Event | None) -> None:
        """Handler of `Disconnected`: a link that ended for good loses its engine's
        credentials (and the device, on a logout), then its lease."""
        ending = self._ending.get(key)
        if ending is None or ending.done.done():
            return  # the device may come back (connection lost): its engine keeps them
        try:
            if ending.engine is not None:
                teardown = ending.engine.logout if ending.unlink else ending.engine.discard
                await quietly(teardown(key), teardown.__name__, key)
            await self.leases.release(key)
        finally:
            ending.done.set_result(None)
            if self._ending.get(key) is ending:
                del self._ending[key]

    async def teardown_done(self, key: str) -> None:
        """Wait until the key's ended link, if any, has lost its engine and lease."""
        ending = self._ending.get(key)
        if ending is None:
            return
        if self._bus.pending(key):
            await asyncio.shield(ending.done)
        else:  # no delivery of the key will run it (no handler registered?): do it now
            await self.ended(key, None)

    def arm(self, key: str, session: DeviceSession) -> None:
        """Expire the session unless it moves on: from `qr` as `qr expired`, from `created`
        (an engine that never showed a code) as `connection lost`."""
        state = session.state
        if state is S.QR:
            delay = session.pairing_seconds_left(self._clock.now()) + self._timeouts.expiry_grace
        elif state is S.CREATED:
            delay = self._timeouts.start_timeout
        else:
            return
        self.watchdog.arm(key, delay, session.version)

    async def forget_previous_link(self, key: str, engine: WhatsAppEngine) -> None:
        """A restart is a new pairing: no engine may resume the key's old credentials."""
        previous = self._registry.unrun(key)
        for stale in {id(e): e for e in (previous, engine) if e is not None}.values():
            await quietly(stale.discard(key), "discard", key)

    async def stop(self, key: str) -> bool:
        """Stop the key's engine here, if it runs here (True), keeping its credentials."""
        engine = self._registry.unrun(key)
        self.watchdog.disarm(key)
        if engine is None:
            return False
        await quietly(engine.stop(key), "stop", key)
        return True

    async def start_engine(
        self,
        engine: WhatsAppEngine,
        key: str,
        reports: EngineEvents,
        proxy: str | None,
        phone: str | None = None,
    ) -> None:
        """Start the key's engine, its proxy checked at each dial (EngineCatalog.dialable)."""
        dialed = None if proxy is None else await self._engines.dialable(proxy)
        await engine.start(key, reports, phone=phone, proxy=dialed)

    def engine_named(self, name: str) -> WhatsAppEngine | None:
        try:
            return self._engines.resolve(name)
        except DeviceSessionError:
            return None


@dataclass(frozen=True)
class _Ending:
    engine: WhatsAppEngine | None
    unlink: bool
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


async def quietly(call: Awaitable[None], what: str, key: str) -> None:
    """Engine teardown is best effort: the session is already recorded as ended."""
    try:
        await call
    except Exception:
        log.exception("engine %s of %s failed", what, key, extra={"key": key})
