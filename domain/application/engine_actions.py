"""What a saved change asks of the engine, the expiry watchdog and the lease.

These run inside the key's turn, unlike the consumers of recorded events: the key's next
command decides from them (whether the key runs here, whether its lease is this
process's, whether an engine may start on it), so they must be done before it begins.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from domain.application.dispatch import Outbox
from domain.application.ports import Clock, DeviceLeases, EngineCatalog, WhatsAppEngine
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
        timeouts: Timeouts | None = None,
    ) -> None:
        self._registry = registry
        self._engines = engines
        self.leases = leases
        self._clock = clock
        self.watchdog = watchdog
        self._timeouts = timeouts or Timeouts()

    async def settle(
        self, key: str, change: Change, outbox: Outbox, *, unlink: bool = False
    ) -> None:
        """A change was saved: its events go out after the turn; the registry, the timers,
        the engine and the lease follow it now."""
        outbox.publish(change.events)
        session = change.session
        self._registry.saved(key, session)
        self.watchdog.disarm(key)
        if session.is_live:
            self.arm(key, session)
        elif not session.holds_credentials:
            # The engine may not run here (a restarted process): its credentials go anyway.
            engine = self._registry.unrun(key) or self.engine_named(session.engine)
            if engine is not None:
                teardown = engine.logout if unlink else engine.discard
                await quietly(teardown(key), teardown.__name__, key)
            await self.leases.release(key)

    def arm(self, key: str, session: DeviceSession) -> None:
        """Expire the session unless it moves on: from `qr` as `qr expired`, from `created`
        (an engine that never showed a code) as `connection lost`."""
        if session.state is S.QR:
            delay = session.pairing_seconds_left(self._clock.now()) + self._timeouts.expiry_grace
        elif session.state is S.CREATED:
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

    def engine_named(self, name: str) -> WhatsAppEngine | None:
        try:
            return self._engines.resolve(name)
        except DeviceSessionError:
            return None


async def quietly(call: Awaitable[None], what: str, key: str) -> None:
    """Engine teardown is best effort: the session is already recorded as ended."""
    try:
        await call
    except Exception:
        log.exception("engine %s of %s failed", what, key, extra={"key": key})
