"""The composition root: settings in, a wired pairgate out. Nothing else builds adapters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import socketio

from adapters.clock import SystemClock
from adapters.credentials import CredentialVault
from adapters.engines.catalog import Engines
from adapters.engines.proxies import ProxyPolicy
from adapters.engines.simulator import SimulatedEngine
from adapters.identity import DEFAULT_IDENTITY, Identities
from adapters.limits.history import HistoryAllowance
from adapters.limits.requests import RequestLimits
from adapters.metrics import PairgateMetrics
from adapters.socketio.gateway import PairingNamespace
from adapters.socketio.projection import SocketIoNotifier
from adapters.store.in_use import SqliteLock, open_served
from adapters.store.leases import PostgresLeases
from adapters.store.rekey_marker import refuse_during_rekey
from adapters.store.sqlite import WalCheckpoints
from domain.application.activity import SessionActivity
from domain.application.dispatch import EventBus, Handlers
from domain.application.follow import LogFollower
from domain.application.history import MAX_PAGE_SIZE
from domain.application.pairing import Caps, PairingService, Timeouts
from domain.application.ports import Clock, SessionIndex
from domain.application.sessions import DeviceSessions
from domain.application.store_calls import StoreAccess
from domain.model.session import DeviceSession
from entrypoints.consumers import LogConsumers, log_consumers
from entrypoints.engines import installed_engines
from entrypoints.fanout import socketio_server
from entrypoints.forwarded import forwarded_commands
from entrypoints.settings import Settings, reveal

log = logging.getLogger("pairgate")


@dataclass
class Pairgate:
    settings: Settings
    sessions: DeviceSessions
    service: PairingService
    sio: socketio.AsyncServer
    simulator: SimulatedEngine | None
    executor: ThreadPoolExecutor | None  # None: the store runs on the event loop
    identities: Identities
    engines: Engines
    leases: PostgresLeases | None = None
    checkpoints: WalCheckpoints | None = None
    store_lock: SqliteLock | None = None  # a SQLite store's: this process serves it alone
    session_index: SessionIndex | None = None  # the sessions read model (GET /api/sessions)
    activity: SessionActivity | None = None  # what consoles watch (session.changed, /api/stats)
    # History records per reader, shared by the HTTP API and Socket.IO; HTTP API requests.
    history_allowance: HistoryAllowance = field(
        default_factory=lambda: HistoryAllowance("", MAX_PAGE_SIZE)
    )
    http_limits: RequestLimits = field(default_factory=lambda: RequestLimits("", ""))
    consumers: LogConsumers | None = None
    _takeover: asyncio.Task[None] | None = field(default=None, repr=False)
    _recovering: asyncio.Task[object] | None = field(default=None, repr=False)
    _checkpointing: asyncio.Task[None] | None = field(default=None, repr=False)
    _cut_short: bool = field(default=False, repr=False)  # the drain's grace ran out

    async def start(self) -> None:
        """Before serving: take part in the leases; then, in the background (the server
        answers /healthz at once, /readyz once the record is settled), settle what
        earlier runs left and resume their devices, and (several processes) keep taking
        over devices whose process has gone."""
        if self.checkpoints is not None and self._checkpointing is None:
            self._checkpointing = asyncio.create_task(self.checkpoints.run(), name="checkpoints")
        if self.leases is not None:
            # A process that dies is heard of at once: its devices are taken over then.
            commands = forwarded_commands(self)
            await self.leases.open(commands, self.service.leases_lost, self.service.recover)
            # Registered: a rekey now counts this process, or marked the store before this.
            await asyncio.to_thread(refuse_during_rekey, self.settings.store_config())
        if self.consumers is not None:
            self.consumers.start()
        if self.settings.recover:
            self._recovering = asyncio.create_task(self._recover(), name="recovery")
        if self.leases is not None:
            # Failover does not depend on PAIRGATE_RECOVER: a device without a holder would
            # stay offline, and the leases already keep each device to one process.
            self._takeover = asyncio.create_task(self._take_over_orphans(), name="takeover")

    async def _recover(self) -> object:
        try:
            return await self.service.recoverer.start_up()
        except Exception:
            log.exception("recovering the store failed")
            self.service.recoverer.startup.settled = True  # (what could be, was)
            return None

    async def recovered(self) -> None:
        """Returns once the start-up's recovery is over (devices resumed included)."""
        if self._recovering is not None:
            await asyncio.gather(asyncio.shield(self._recovering), return_exceptions=True)

    async def _take_over_orphans(self) -> None:
        await self.recovered()
        while True:
            await asyncio.sleep(self.settings.takeover_interval)
            try:
                await self.service.recover()
            except Exception:
                log.exception("looking for devices without a process failed")

    async def drain(self, grace: float | None = None) -> bool:
        """Before the web server closes connections: record and announce, then hang up.

        Clients still connected get `session.disconnected` ("connection lost") for their
        devices, and long-polling clients are released at once instead of at their next
        ping, which would hold a graceful shutdown for up to 25 s. Recording takes `grace`
        seconds at most: False if they ran out first (nothing more is recorded then, and
        the next start records the rest: see Recoverer.abandon).
        """
        try:
            await asyncio.wait_for(self._take_offline(), grace)
        except TimeoutError:
            self._cut_short = True
        engineio = self.sio.eio
        # Not `eio.disconnect()`: it waits for every polling client to fetch its close packet.
        for socket in list(engineio.sockets.values()):
            await socket.close(wait=False, reason=engineio.reason.SERVER_DISCONNECT)
        engineio.sockets = {}
        await self.sio.shutdown()
        return not self._cut_short

    async def _take_offline(self) -> None:
        await self.drain_tasks()
        if self.consumers is not None:
            await self.consumers.pause()
        await self.service.shutdown()

    async def drain_tasks(self) -> None:
        for task in (self._takeover, self._recovering):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._takeover = self._recovering = None

    async def close(self) -> None:
        await self.drain_tasks()
        await (self.service.abandon() if self._cut_short else self.service.shutdown())
        for engine in self.engines.distinct:
            await engine.close()
        if self.consumers is not None:
            await self.consumers.stop()
        if self.leases is not None:
            await self.leases.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        if self._checkpointing is not None:
            self._checkpointing.cancel()
            await asyncio.gather(self._checkpointing, return_exceptions=True)
            self._checkpointing = None
        if self.checkpoints is not None:
            await asyncio.to_thread(self.checkpoints.close)
        self.sessions.close()
        if self.store_lock is not None:
            self.store_lock.release()


def recorded_event_handlers(
    service: PairingService,
    metrics: PairgateMetrics,
    notifier: SocketIoNotifier,
    followers: Sequence[LogFollower] = (),
) -> Handlers:
    """What each recorded event is handed to, in order, once its key's lock is released
    (an event's own type's handlers first, then its base types'). A new consumer is one
    more handler here. The log's followers are only woken: they read what was saved from
    the log, on threads of their own."""
    return {
        DeviceSession.Disconnected: [service.link_ended],  # engine teardown, lease release
        DeviceSession.Event: [
            metrics.recorded,
            notifier.recorded,
            *(follower.recorded for follower in followers),
        ],
    }


def bootstrap(
    settings: Settings, clock: Clock | None = None, metrics: PairgateMetrics | None = None
) -> Pairgate:
    clock = clock or SystemClock()
    metrics = metrics or PairgateMetrics()
    store = settings.store_config()
    checkpoints = None
    if store.kind == "sqlite":
        # Commits never checkpoint (they may run on the event loop): a worker thread does.
        store = dataclasses.replace(store, sqlite_autocheckpoint=0)
        checkpoints = WalCheckpoints(store.sqlite_path)
    sessions, lock = open_served(store)  # a SQLite store: this process's alone
    threads = settings.store_threads
    if threads is None:
        threads = 4 if store.kind == "postgres" else 0  # a network round trip is worth a thread
    executor = ThreadPoolExecutor(threads, thread_name_prefix="pairgate-store") if threads else None
    vault = CredentialVault(settings.credentials_path, settings.cipher)
    simulator: SimulatedEngine | None = None
    if settings.simulate:
        simulator = SimulatedEngine(
            settings.sim_qr_timeouts,
            reconnect_delay=settings.sim_reconnect_delay,
            vault=vault,
            passkey_timeout=settings.sim_passkey_timeout,
        )
        engines = Engines.simulated(simulator)
    else:
        engines = installed_engines(settings, vault)
    engines.proxies = ProxyPolicy(settings.proxy_allowed_networks, reveal(settings.proxy))

    sio = socketio_server(settings, store)
    notifier = SocketIoNotifier(sio)
    identities = settings.identities()
    leases = None
    if store.kind == "postgres":
        # A shared store may have several processes: one owner per device, by lease.
        leases = PostgresLeases.of(store, settings.lease_check_interval)
    bus = EventBus()
    service = PairingService(
        StoreAccess(sessions, executor, metrics.timed_store),
        engines,
        notifier,
        clock,
        bus=bus,
        caps=Caps(
            sessions=settings.max_sessions,
            unpaired=settings.max_unpaired,
            unpaired_per_owner=settings.unpaired_per_identity(identities),
        ),
        timeouts=Timeouts(settings.expiry_grace, settings.start_timeout),
        leases=leases,
        default_proxy=reveal(settings.proxy),
    )
    consumers = log_consumers(settings, store, sessions, metrics, clock)
    # Recovery and takeover read the index of live keys, not every stream.
    service.recoverer.live_keys = consumers.index.live_keys
    service.recoverer.resume_rate = settings.resume_rate
    bus.register(recorded_event_handlers(service, metrics, notifier, consumers.wakers))
    consumers.activity.listen(notifier.changed)
    metrics.watch(service, sio)
    limits = RequestLimits(settings.rate_limit_connection, settings.rate_limit_identity)
    history_allowance = HistoryAllowance(settings.rate_limit_history, MAX_PAGE_SIZE)
    sio.register_namespace(
        PairingNamespace(
            service, notifier, clock, identities, limits, history_allowance=history_allowance
        )
    )
    if identities.required:
        log.info("access tokens required: %d identities", len(identities.names))
    else:
        log.warning("no PAIRGATE_TOKENS: every client is the single identity %r", DEFAULT_IDENTITY)
    log.info(
        "pairgate ready: store=%s engines=%s%s",
        store.kind,
        ", ".join(engines.names) or "none",
        " (simulator mode)" if simulator else "",
    )
    return Pairgate(
        settings,
        sessions,
        service,
        sio,
        simulator,
        executor,
        identities,
        engines,
        leases,
        checkpoints,
        lock,
        history_allowance=history_allowance,
        # Per identity (per client address without tokens): no connections to count.
        http_limits=RequestLimits("", settings.rate_limit_http),
        session_index=consumers.index,
        consumers=consumers,
        activity=consumers.activity,
    )
