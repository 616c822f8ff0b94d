"""PairingService: pairgate's application layer wired together, as the adapters see it.

Each part has one reason to change: `Requests` (client use cases), `Reads` (what a
client may read), `EngineReports` (what engines report), `Recoverer` (start-up, lost
leases, shutdown), `Registry` (what this process runs, and its caps), `EngineActions`
(what a saved change asks of the engine, the watchdog and the lease), `StoreAccess`
(where a store call runs) and `KeyTurns` + `EventBus` (one key at a time; recorded
events handed to their handlers after the key's lock). This class only builds them and
gives the adapters (gateway, HTTP API, bootstrap, metrics) one object to call.
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.application.dispatch import EventBus, KeyTurns
from domain.application.engine_actions import EngineActions, Timeouts
from domain.application.engine_reports import EngineReports
from domain.application.history import PAGE_SIZE, HistoryPage
from domain.application.ports import Clock, DeviceLeases, EngineCatalog, SoleProcess, Subscriptions
from domain.application.reads import Reads
from domain.application.recovery import Recoverer, Recovery
from domain.application.registry import Caps, Registry, Standing
from domain.application.requests import Outcome, Requests
from domain.application.store_calls import StoreAccess
from domain.application.watchdog import Watchdog
from domain.model.session import DeviceSession, SessionState


class PairingService:
    def __init__(
        self,
        store: StoreAccess,
        engines: EngineCatalog,
        subscriptions: Subscriptions,
        clock: Clock,
        *,
        bus: EventBus | None = None,
        caps: Caps | None = None,
        timeouts: Timeouts | None = None,
        leases: DeviceLeases | None = None,
    ) -> None:
        self.sessions = store.sessions
        self.registry = Registry(store.sessions, caps)
        turns = KeyTurns(bus or EventBus())
        watchdog = Watchdog(lambda key, version: self.reports.expire_if_unchanged(key, version))
        # Which process runs which key, when several share the store.
        leases = leases or SoleProcess()
        actions = EngineActions(self.registry, engines, leases, clock, watchdog, timeouts)
        self.reports = EngineReports(turns, store, self.registry, actions, clock)
        self.reads = Reads(store, self.registry)
        self.requests = Requests(
            turns, store, self.registry, self.reads, actions, engines, subscriptions, self.reports
        )
        self.recoverer = Recoverer(turns, store, self.registry, actions, self.reports)
        self._watchdog = watchdog

    # -- client requests --------------------------------------------------------------

    async def create(
        self,
        key: str,
        name: str,
        engine_name: str,
        owner: str,
        subscriber: str,
        *,
        phone: str | None = None,
        relink: bool = False,
        holder: str | None = None,
    ) -> Outcome:
        """See Requests.create."""
        return await self.requests.create(
            key, name, engine_name, owner, subscriber, phone=phone, relink=relink, holder=holder
        )

    async def join(self, key: str, owner: str, subscriber: str) -> DeviceSession:
        return await self.requests.join(key, owner, subscriber)

    async def logout(self, key: str, owner: str) -> DeviceSession:
        return await self.requests.logout(key, owner)

    async def delete(self, key: str, owner: str) -> DeviceSession:
        return await self.requests.delete(key, owner)

    async def state(self, key: str, owner: str, at: int | None = None) -> DeviceSession:
        return await self.reads.state(key, owner, at)

    async def history(
        self, key: str, owner: str, at: int | None = None, *, after: int = 0, limit: int = PAGE_SIZE
    ) -> HistoryPage:
        return await self.reads.history(key, owner, at, after=after, limit=limit)

    async def find(self, key: str) -> DeviceSession | None:
        return await self.reads.find(key)

    async def standing_for(self, key: str, owner: str) -> Standing | None:
        return await self.reads.standing_for(key, owner)

    async def standing(self, key: str) -> Standing | None:
        return await self.reads.standing(key)

    # -- the process ------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Shutting down: no new sessions are started."""
        return self.registry.closing

    @property
    def running_keys(self) -> frozenset[str]:
        return self.registry.keys

    @property
    def running_states(self) -> dict[str, SessionState]:
        """Each running key's state as last saved."""
        return self.registry.states

    @property
    def watched_keys(self) -> frozenset[str]:
        """Keys with an armed expiry watchdog: live sessions waiting on their engine."""
        return self._watchdog.keys

    async def recover(self) -> Recovery:
        return await self.recoverer.recover()

    async def leases_lost(self, keys: Iterable[str]) -> None:
        await self.recoverer.leases_lost(keys)

    async def shutdown(self) -> None:
        await self.recoverer.shutdown()


__all__ = ["Caps", "Outcome", "PairingService", "Recovery", "Standing", "Timeouts"]
