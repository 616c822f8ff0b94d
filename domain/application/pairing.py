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

from domain.application.dispatch import EventBus, KeyTurns
from domain.application.engine_actions import EngineActions, Timeouts
from domain.application.engine_reports import EngineReports
from domain.application.ports import Clock, DeviceLeases, EngineCatalog, SoleProcess, Subscriptions
from domain.application.reads import Reads
from domain.application.recovery import Recoverer, Recovery
from domain.application.registry import Caps, Registry, Standing
from domain.application.requests import Outcome, Requests
from domain.application.shared import Shared
from domain.application.store_calls import StoreAccess
from domain.application.watchdog import Watchdog
from domain.model.session import SessionState


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
        default_proxy: str | None = None,
    ) -> None:
        self.sessions = store.sessions
        self.registry = Registry(store.sessions, caps)
        self._watchdog = Watchdog(lambda key, version: reports.expire_if_unchanged(key, version))
        # Which process runs which key, when several share the store: SoleProcess if one.
        bus = bus or EventBus()
        actions = EngineActions(
            self.registry, engines, leases or SoleProcess(), clock, self._watchdog, bus, timeouts
        )
        shared = Shared(KeyTurns(bus), store, self.registry, actions)
        self.reports = reports = EngineReports(shared, clock)
        self.reads = reads = Reads(store, self.registry)
        self.requests = requests = Requests(
            shared, reads, engines, subscriptions, reports, default_proxy
        )
        self.recoverer = recoverer = Recoverer(shared, reports)
        # What the adapters call.
        self.create = requests.create
        self.join = requests.join
        self.logout = requests.logout
        self.delete = requests.delete
        self.answer_passkey = requests.answer_passkey
        self.state = reads.state
        self.history = reads.history
        self.find = reads.find
        self.standing = reads.standing
        self.standing_for = reads.standing_for
        self.recover = recoverer.recover
        self.leases_lost = recoverer.leases_lost
        self.shutdown = recoverer.shutdown
        self.abandon = recoverer.abandon
        # The handler of `Disconnected` that tears an ended link's engine down and releases
        # its lease: the composition root registers it with the bus's other consumers.
        self.link_ended = actions.ended

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


__all__ = ["Caps", "Outcome", "PairingService", "Recovery", "Standing", "Timeouts"]
