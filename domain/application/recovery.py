"""Start-up and shutdown: sessions an earlier run left, leases lost, devices taken offline."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from domain.application.commands import disconnect, disconnect_if
from domain.application.engine_reports import EngineReports
from domain.application.shared import Shared, UseCases
from domain.model.session import DeviceSession, DisconnectReason, SessionState

log = logging.getLogger(__name__)
Reason = DisconnectReason
S = SessionState


@dataclass
class Recovery:
    """What `Recoverer.recover` found: keys by what became of them."""

    interrupted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


LiveKeys = Callable[[], Awaitable[Iterable[str]]]


class Recoverer(UseCases):
    def __init__(self, shared: Shared, reports: EngineReports) -> None:
        super().__init__(shared)
        self._reports = reports
        # The keys that may need an engine, from an index (the sessions read model); None:
        # every key the store ever had (a read of the whole log).
        self.live_keys: LiveKeys | None = None

    async def candidates(self) -> Iterable[str]:
        """The keys recovery looks at: the index's, or (no index) every key."""
        if self.live_keys is not None:
            return await self.live_keys()
        return await self._store.read(self._store.sessions.keys)

    async def recover(self, keys: Iterable[str] | None = None) -> Recovery:
        """At start-up, set the record straight about the sessions an earlier run left.

        Sessions still recorded as live lost their engine with that process (a crash, a
        kill): they are recorded as `connection lost`, and unpaired ones lose whatever
        their engine had stored. Every paired device that is offline with its credentials
        is then started again from them, without a QR code; `session.ready` follows when
        its engine is back online. `keys`: only these (else `candidates()`).
        """
        recovery = Recovery()
        for key in await self.candidates() if keys is None else keys:
            async with self._turns.turn(key) as outbox:
                session = await self._store.find(key)
                if session is None or key in self._registry or not session.needs_an_engine:
                    continue
                if not await self._leases.acquire(key):
                    continue  # another process runs it
                if session.is_live:
                    change = await self._store.update(key, disconnect(Reason.CONNECTION_LOST))
                    self._actions.settle(key, change, outbox)
                    recovery.interrupted.append(key)
                    session = change.session
                if session.offline_linked:
                    await self._resume(key, session, recovery)
        if recovery.interrupted or recovery.resumed or recovery.unavailable:
            log.info(
                "recovered the store: %d interrupted sessions recorded as connection lost, "
                "%d paired devices resumed, %d waiting for an engine this server lacks",
                len(recovery.interrupted),
                len(recovery.resumed),
                len(recovery.unavailable),
            )
        return recovery

    async def _resume(self, key: str, session: DeviceSession, recovery: Recovery) -> None:
        engine = self._actions.engine_named(session.engine)
        if engine is None:
            log.warning(
                "cannot resume %s: engine %r is not available",
                key,
                session.engine,
                extra={"key": key},
            )
            recovery.unavailable.append(key)
            await self._leases.release(key)
            return
        self._registry.run(key, engine, session)
        try:
            await engine.start(key, self._reports, proxy=session.proxy)
        except Exception:
            log.exception("engine %s failed to resume %s", engine.name, key, extra={"key": key})
            self._registry.unrun(key)
            recovery.unavailable.append(key)
            await self._leases.release(key)
        else:
            recovery.resumed.append(key)

    async def leases_lost(self, keys: Iterable[str]) -> None:
        """This process can no longer prove it owns these keys (its lease connection
        broke): stop their engines at once, recording nothing; the process that takes
        a key over records what happened to it."""
        for key in keys:
            async with self._turns.turn(key):
                if key in self._registry:
                    log.warning(
                        "lost the lease of %s: stopping its engine", key, extra={"key": key}
                    )
                await self._actions.stop(key)

    async def shutdown(self) -> None:
        """Take every device offline: they did lose their connection, so record it."""
        self._registry.closing = True
        for key in self._registry.keys:
            async with self._turns.turn(key) as outbox:
                if not await self._actions.stop(key):
                    continue
                change = await self._store.update(key, disconnect_if(Reason.CONNECTION_LOST, None))
                outbox.publish(change.events)
                await self._leases.release(key)
        await self._actions.watchdog.close()
        await self._reports.close()
