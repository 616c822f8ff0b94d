"""PairingService: the asyncio face of pairgate's application layer.

It turns client requests and engine reports into DeviceSessions commands, one key at a
time, then projects what was recorded: onto subscribers (through the notifier), onto
the engine (start, stop, logout) and onto the QR-expiry watchdog.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from domain.application.history import PAGE_SIZE, HistoryPage, history_page
from domain.application.ports import (
    Clock,
    DeviceLeases,
    EngineCatalog,
    SessionNotifier,
    SoleProcess,
    StoreCalls,
    WhatsAppEngine,
)
from domain.application.sessions import Change, DeviceSessions, IntegrityError
from domain.application.watchdog import Watchdog
from domain.model.errors import (
    DeviceSessionError,
    EngineUnavailableError,
    InvalidTransitionError,
    LimitReachedError,
    SessionNotFoundError,
    VersionOutOfRangeError,
)
from domain.model.session import (
    PAIRING_STATES,
    SETTLED_STATES,
    DeviceSession,
    DisconnectReason,
    SessionState,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Reason = DisconnectReason
S = SessionState


@dataclass(frozen=True)
class Outcome:
    """A session as a client request left it. `joined`: the request joined a live session."""

    session: DeviceSession
    joined: bool = False


@dataclass(frozen=True, slots=True)
class Standing:
    """Whose a session is and where it stands: what a request about a key checks first."""

    owner: str
    state: SessionState


@dataclass
class Recovery:
    """What `PairingService.recover` found: keys by what became of them."""

    interrupted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


class PairingService:
    def __init__(
        self,
        sessions: DeviceSessions,
        engines: EngineCatalog,
        notifier: SessionNotifier,
        clock: Clock,
        *,
        executor: Executor | None = None,
        store_calls: StoreCalls | None = None,
        expiry_grace: float = 5.0,
        start_timeout: float = 60.0,
        max_sessions: int = 0,
        max_unpaired: int = 0,
        max_unpaired_per_owner: int = 0,
        leases: DeviceLeases | None = None,
    ) -> None:
        self.sessions = sessions
        self._engines = engines
        self._notifier = notifier
        self._clock = clock
        # The store's threads (None: a local store, called from the event loop), and what
        # runs each store call there (an adapter may time them).
        self._executor = executor
        self._run_store: StoreCalls = store_calls or _call
        # Engines may go quiet. A watchdog ends a pairing `expiry_grace` after its last code,
        # and a start that shows no QR code within `start_timeout`.
        self._expiry_grace = expiry_grace
        self._start_timeout = start_timeout
        self._running: dict[str, WhatsAppEngine] = {}
        # Which process runs which key, when several share the store.
        self._leases: DeviceLeases = leases or SoleProcess()
        # Caps (0: none): live sessions per quota holder, and pairings under way here.
        self._max_sessions = max_sessions
        self._max_unpaired = max_unpaired
        # Pairings under way per owner (0: no cap): keys are one namespace, so one identity
        # must not hold so many at once that others are locked out of theirs.
        self._max_unpaired_per_owner = max_unpaired_per_owner
        self._standings: dict[str, Standing] = {}  # each running key's, as last saved
        # Whom each running key counts against (see `create`), and how many each has.
        self._holders: dict[str, str] = {}
        self._live_by_holder: Counter[str] = Counter()
        self._unpaired: set[str] = set()  # running keys still showing codes
        self._closing = False
        self._watchdog = Watchdog(self._expire_if_unchanged)
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

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
        """Start pairing `key` for `owner`, or join it if it is live. A key that still holds
        a linked device's credentials restarts only with `relink`: a restart discards them.

        `holder` is whom the new session counts against for PAIRGATE_MAX_SESSIONS, the
        owner if None: an adapter may count by something finer than the owner (without
        tokens every client is one owner; the gateway counts each address apart). It is
        not recorded: sessions this process runs after a restart (or takes over from
        another) count against their owner.
        """
        holder = holder or owner
        engine = self._engines.resolve(engine_name)
        if self._closing:
            raise EngineUnavailableError("pairgate is shutting down; try again shortly", key=key)
        async with self._lock(key):
            session, change = None, None
            if key not in self._running:
                change = await self._create_if_new(key, name, engine_name, owner, holder)
            if change is None:
                session = await self._store(self.sessions.find, key)
                if session is not None:
                    await self._check_owner(session, owner, claim=True)
                    if session.is_live and key in self._running:
                        await self._notifier.subscribe(key, subscriber)
                        return Outcome(session, joined=True)
                if key not in self._running and not await self._leases.acquire(key):
                    # Another process runs the key's engine: follow it from here.
                    if session is not None and session.is_live:
                        await self._notifier.subscribe(key, subscriber)
                        return Outcome(session, joined=True)
                    raise InvalidTransitionError(key, "start a new pairing", ELSEWHERE)
                try:
                    self._check_pairings_of(key, owner)
                    self._check_capacity(key, holder)
                    change = await self._record_start(
                        key, session, name, engine_name, owner, relink
                    )
                except Exception:
                    if key not in self._running:
                        await self._leases.release(key)
                    raise
            if session is not None and session.owner != owner:
                # The key changed hands: its previous owner's clients hear nothing more.
                await self._notifier.unsubscribe_all(key)
            await self._notifier.subscribe(key, subscriber)
            await self._notifier.publish(key, change.events)
            if session is not None:
                await self._forget_previous_link(key, engine)
            self._run(key, engine, change.session, holder)
            self._unpaired.add(key)
            try:
                await engine.start(key, self, phone=phone)
            except Exception as error:
                log.exception("engine %s failed to start %s", engine.name, key)
                lost = await self._update(key, _disconnect(Reason.CONNECTION_LOST))
                await self._settle(key, lost)
                raise EngineUnavailableError(
                    f"engine {engine_name!r} could not start: {error}", key=key
                ) from error
            self._arm(key, change.session)
            return Outcome(change.session)

    async def join(self, key: str, owner: str, subscriber: str) -> DeviceSession:
        session = await self._owned(key, owner)
        await self._notifier.subscribe(key, subscriber)
        return session

    async def logout(self, key: str, owner: str) -> DeviceSession:
        return await self._end_by_owner(key, owner, Reason.USER_LOGGED_OUT)

    async def delete(self, key: str, owner: str) -> DeviceSession:
        return await self._end_by_owner(key, owner, Reason.SESSION_REVOKED)

    async def state(self, key: str, owner: str, at: int | None = None) -> DeviceSession:
        """The session now, or right after its event number `at` (of the owner's tenure)."""
        session = await self._owned(key, owner, at)
        return session if at is None else await self._read(self.sessions.state_at, key, at)

    async def history(
        self,
        key: str,
        owner: str,
        at: int | None = None,
        *,
        after: int = 0,
        limit: int = PAGE_SIZE,
    ) -> HistoryPage:
        """One page of the key's records since its owner took the key (see
        domain.application.history.history_page)."""
        session = await self._owned(key, owner, at)
        # Up to the version whose owner was checked: the key may change hands meanwhile.
        last = session.version if at is None else at
        first = max(after, session.tenure_from - 1)  # versions run 1, 2, 3 ... without gaps

        def history() -> HistoryPage:  # its name labels the store call in the metrics
            return history_page(self.sessions, key, after=first, limit=limit, at=last)

        return await self._read(history)

    async def find(self, key: str) -> DeviceSession | None:
        return await self._store(self.sessions.find, key)

    async def standing_for(self, key: str, owner: str) -> Standing | None:
        """The key's standing if it is `owner`'s; None, at the same cost, if the key is
        missing or another identity's."""
        running = self._standings.get(key)
        if running is None:
            running = await self.standing(key)
        elif running.owner != owner:
            await self._as_costly_as_a_missing_key(key)
        return running if running is not None and running.owner == owner else None

    async def standing(self, key: str) -> Standing | None:
        """The key's owner and state (None: no such session). Known without reading the
        store for the devices this process runs, since it alone records their events."""
        if (running := self._standings.get(key)) is not None:
            return running
        session = await self.find(key)
        return None if session is None else Standing(session.owner, session.state)

    # -- engine reports (EngineEvents) ------------------------------------------------

    async def qr_issued(self, key: str, code: str, timeout: float) -> None:
        now = self._clock.now()
        await self._from_engine(key, lambda s: s.issue_qr(code, timeout, now))

    async def pair_code_issued(self, key: str, code: str, timeout: float) -> None:
        now = self._clock.now()
        await self._from_engine(key, lambda s: s.issue_pair_code(code, timeout, now))

    async def qr_expired(self, key: str) -> None:
        await self._from_engine(key, _disconnect_if(Reason.QR_EXPIRED, PAIRING_STATES))

    async def paired(self, key: str) -> None:
        await self._from_engine(key, lambda s: s.authenticate())

    async def connected(self, key: str) -> None:
        await self._from_engine(key, lambda s: s.mark_ready())

    async def disconnected(self, key: str, reason: DisconnectReason) -> None:
        await self._from_engine(key, _disconnect(reason))

    # -- lifecycle --------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Shutting down: no new sessions are started."""
        return self._closing

    @property
    def running_keys(self) -> frozenset[str]:
        return frozenset(self._running)

    @property
    def running_states(self) -> dict[str, SessionState]:
        """Each running key's state as last saved."""
        return {key: standing.state for key, standing in self._standings.items()}

    @property
    def watched_keys(self) -> frozenset[str]:
        """Keys with an armed expiry watchdog: live sessions waiting on their engine."""
        return self._watchdog.keys

    async def recover(self) -> Recovery:
        """At start-up, set the record straight about the sessions an earlier run left.

        Sessions still recorded as live lost their engine with that process (a crash, a
        kill): they are recorded as `connection lost`, and unpaired ones lose whatever
        their engine had stored. Every paired device that is offline with its credentials
        is then started again from them, without a QR code; `session.ready` follows when
        its engine is back online.
        """
        recovery = Recovery()
        for key in await self._read(self.sessions.keys):
            async with self._lock(key):
                session = await self._store(self.sessions.find, key)
                if session is None or key in self._running or not session.needs_an_engine:
                    continue
                if not await self._leases.acquire(key):
                    continue  # another process runs it
                if session.is_live:
                    change = await self._update(key, _disconnect(Reason.CONNECTION_LOST))
                    await self._settle(key, change)
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
        engine = self._engine_named(session.engine)
        if engine is None:
            log.warning("cannot resume %s: engine %r is not available", key, session.engine)
            recovery.unavailable.append(key)
            await self._leases.release(key)
            return
        self._run(key, engine, session)
        try:
            await engine.start(key, self)
        except Exception:
            log.exception("engine %s failed to resume %s", engine.name, key)
            self._unrun(key)
            recovery.unavailable.append(key)
            await self._leases.release(key)
        else:
            recovery.resumed.append(key)

    async def leases_lost(self, keys: Iterable[str]) -> None:
        """This process can no longer prove it owns these keys (its lease connection
        broke): stop their engines at once, recording nothing; the process that takes
        a key over records what happened to it."""
        for key in keys:
            async with self._lock(key):
                engine = self._unrun(key)
                self._watchdog.disarm(key)
                if engine is not None:
                    log.warning("lost the lease of %s: stopping its engine", key)
                    await _quietly(engine.stop(key), "stop", key)

    async def shutdown(self) -> None:
        """Take every device offline: they did lose their connection, so record it."""
        self._closing = True
        for key in list(self._running):
            async with self._lock(key):
                engine = self._unrun(key)
                if engine is None:
                    continue
                self._watchdog.disarm(key)
                await _quietly(engine.stop(key), "stop", key)
                change = await self._update(key, _disconnect_if(Reason.CONNECTION_LOST, None))
                await self._notifier.publish(key, change.events)
                await self._leases.release(key)
        await self._watchdog.close()

    # -- internals --------------------------------------------------------------------

    async def _create_if_new(
        self, key: str, name: str, engine: str, owner: str, holder: str
    ) -> Change | None:
        """Record a key this process does not run as a new session, if it is one.

        Most keys asked for are new, and a new key's stream is empty: trying to record it
        (one insert, refused if the key has events) costs less than reading the stream
        first. None: it was not recorded (the key has a history, its lease is another
        process's, or a cap stands in the way); the caller reads it and decides, releasing
        nothing it did not take.
        """
        if not await self._leases.acquire(key):
            return None
        try:
            self._check_pairings_of(key, owner)
            self._check_capacity(key, holder)
            return await self._store(self.sessions.create, key, name, engine, owner)
        except (IntegrityError, LimitReachedError):
            await self._leases.release(key)
            return None
        except Exception:
            await self._leases.release(key)
            raise

    async def _record_start(
        self,
        key: str,
        session: DeviceSession | None,
        name: str,
        engine: str,
        owner: str,
        relink: bool,
    ) -> Change:
        if session is None:
            try:
                return await self._store(self.sessions.create, key, name, engine, owner)
            except IntegrityError:
                # Another process created the key a moment ago and runs its engine: this
                # one must neither restart nor run a second engine for it.
                raise InvalidTransitionError(key, "create", "being created elsewhere") from None
        if session.holds_credentials and not relink:
            # A restart unlinks the device for good. Asking for a key is what a page load
            # does (the Scan page's ?key=), so unlinking takes a request that says so.
            raise InvalidTransitionError(key, RELINK_ACTION, LINKED)
        events = []
        if session.is_live:
            # Recorded as live, but no engine runs it here: the process that did has gone.
            events = (await self._update(key, _disconnect(Reason.CONNECTION_LOST))).events
        change = await self._update(key, lambda s: s.restart(name, engine, owner))
        return Change(change.session, events + change.events)

    async def _forget_previous_link(self, key: str, engine: WhatsAppEngine) -> None:
        """A restart is a new pairing: no engine may resume the key's old credentials."""
        previous = self._unrun(key)
        for stale in {id(e): e for e in (previous, engine) if e is not None}.values():
            await _quietly(stale.discard(key), "discard", key)

    async def _end_by_owner(self, key: str, owner: str, reason: DisconnectReason) -> DeviceSession:
        async with self._lock(key):
            session = await self._owned(key, owner)
            if (
                key not in self._running
                and session.needs_an_engine
                and not await self._leases.acquire(key)
            ):
                # The engine runs in another process: that process must end it.
                command = "logout" if reason is Reason.USER_LOGGED_OUT else "delete"
                await self._leases.forward(key, command, {"owner": owner})
                return await self._owned(key, owner)
            change = await self._update(key, _disconnect(reason))
            await self._settle(key, change, unlink=True)
            return change.session

    async def _owned(self, key: str, owner: str, at: int | None = None) -> DeviceSession:
        """The owner's session; `at`, if given, must be a version of the owner's tenure."""
        session = await self._store(self.sessions.get, key)
        await self._check_owner(session, owner)
        if at is not None and not session.tenure_from <= at <= session.version:
            raise VersionOutOfRangeError(key, at, session.version, session.tenure_from)
        return session

    async def _check_owner(
        self, session: DeviceSession, owner: str, *, claim: bool = False
    ) -> None:
        """Another identity's key reads exactly as a missing one, so nobody learns which
        keys exist. Creating (`claim`) may take over a key that ended holding nothing."""
        if session.owner == owner or (claim and session.claimable):
            return
        if self.sessions.holds(session.key):
            await self._as_costly_as_a_missing_key(session.key)
        raise SessionNotFoundError(session.key)

    async def _as_costly_as_a_missing_key(self, key: str) -> None:
        """A missing key is answered after a read of the store; a key known from memory
        would be refused sooner, and the time would tell that it exists."""
        await self._store(self.sessions.stored, key)

    async def _from_engine(self, key: str, command: Callable[[DeviceSession], None]) -> None:
        async with self._lock(key):
            if key not in self._running:
                log.debug("ignoring a late engine report for %s", key)
                return
            try:
                change = await self._update(key, command)
            except InvalidTransitionError as refused:
                log.warning("engine report for %s refused: %s", key, refused.message)
                return
            except Exception:
                log.exception("engine report for %s failed", key)
                return
            await self._settle(key, change)

    async def _settle(self, key: str, change: Change, *, unlink: bool = False) -> None:
        """Project a saved change: to subscribers first, then to timers and the engine."""
        await self._notifier.publish(key, change.events)
        session = change.session
        if key in self._running:
            self._standings[key] = Standing(session.owner, session.state)
        self._watchdog.disarm(key)
        if session.state not in PAIRING_STATES:
            self._unpaired.discard(key)
        if session.state in SETTLED_STATES:
            # Paired (or over): its events are rare from here on, and a process may carry
            # thousands of such devices, so memory is kept for sessions being paired.
            self.sessions.release(key)
        if session.is_live:
            self._arm(key, session)
        elif not session.holds_credentials:
            # The engine may not run here (a restarted process): its credentials go anyway.
            engine = self._unrun(key) or self._engine_named(session.engine)
            if engine is not None:
                teardown = engine.logout if unlink else engine.discard
                await _quietly(teardown(key), teardown.__name__, key)
            await self._leases.release(key)

    def _check_pairings_of(self, key: str, owner: str) -> None:
        cap = self._max_unpaired_per_owner
        if not cap:
            return
        standings = self._standings
        pairing = sum(1 for k in self._unpaired if (s := standings.get(k)) and s.owner == owner)
        if pairing >= cap:
            raise LimitReachedError(
                f"this identity is pairing {cap} devices, the most it may at once "
                "(PAIRGATE_MAX_UNPAIRED_PER_IDENTITY); finish or delete one, or let its "
                "codes expire, first",
                key=key,
                retry_after=20.0,
            )

    def _check_capacity(self, key: str, holder: str) -> None:
        if self._max_sessions and self._live_by_holder[holder] >= self._max_sessions:
            raise LimitReachedError(
                f"this identity (without tokens: this address) already has "
                f"{self._max_sessions} live sessions, the most allowed "
                "(PAIRGATE_MAX_SESSIONS); log out or delete one first",
                key=key,
            )
        if self._max_unpaired and len(self._unpaired) >= self._max_unpaired:
            raise LimitReachedError(
                f"the server is pairing {self._max_unpaired} devices, the most it allows "
                "at once (PAIRGATE_MAX_UNPAIRED); try again in a minute",
                key=key,
                retry_after=20.0,
            )

    def _run(
        self, key: str, engine: WhatsAppEngine, session: DeviceSession, holder: str | None = None
    ) -> None:
        """Run the key's engine here: this process alone records the session from now on
        (and holds it in memory until it is paired). It counts against `holder` (its
        owner if None) until it stops running here."""
        self._unrun(key)
        self._running[key] = engine
        self._standings[key] = Standing(session.owner, session.state)
        holder = self._holders[key] = holder or session.owner
        self._live_by_holder[holder] += 1
        self.sessions.hold(session)

    def _unrun(self, key: str) -> WhatsAppEngine | None:
        """Forget the key's engine (returned, if any): it no longer runs here."""
        self._unpaired.discard(key)
        self.sessions.release(key)
        self._standings.pop(key, None)
        holder = self._holders.pop(key, None)
        if holder is not None:
            self._live_by_holder[holder] -= 1
            if not self._live_by_holder[holder]:
                del self._live_by_holder[holder]
        return self._running.pop(key, None)

    def _engine_named(self, name: str) -> WhatsAppEngine | None:
        try:
            return self._engines.resolve(name)
        except DeviceSessionError:
            return None

    def _arm(self, key: str, session: DeviceSession) -> None:
        """Expire the session unless it moves on: from `qr` as `qr expired`, from `created`
        (an engine that never showed a code) as `connection lost`."""
        if session.state is S.QR:
            delay = session.pairing_seconds_left(self._clock.now()) + self._expiry_grace
        elif session.state is S.CREATED:
            delay = self._start_timeout
        else:
            return
        self._watchdog.arm(key, delay, session.version)

    async def _expire_if_unchanged(self, key: str, version: int) -> None:
        def expire(session: DeviceSession) -> None:
            if session.version == version:
                reason = Reason.QR_EXPIRED if session.state is S.QR else Reason.CONNECTION_LOST
                log.warning("engine went quiet on %s; ending it as %r", key, reason.value)
                session.disconnect(reason)

        await self._from_engine(key, expire)

    async def _update(self, key: str, command: Callable[[DeviceSession], None]) -> Change:
        return await self._store(self.sessions.update, key, command)

    async def _store(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call about one session: on the store's threads or, when it has none (a
        local store: an SQLite file, memory), right here, which costs less than waking a
        thread: the session is held in memory or its stream is short."""
        if self._executor is None:
            return self._run_store(functools.partial(call, *args, **kwargs))
        return await self._read(call, *args, **kwargs)

    async def _read(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call that may take long (a whole history, every key): never on the loop
        (asyncio's default threads when the store has none of its own)."""
        loop = asyncio.get_running_loop()
        bound = functools.partial(call, *args, **kwargs)
        return await loop.run_in_executor(self._executor, self._run_store, bound)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


ELSEWHERE = "handled by another pairgate process"
RELINK_ACTION = 'restart a linked device without "relink": true'
LINKED = "offline holding its credentials (a new pairing would unlink it)"


def _call(call: Callable[[], T]) -> T:
    return call()


def _disconnect(reason: DisconnectReason) -> Callable[[DeviceSession], None]:
    return lambda session: session.disconnect(reason)


def _disconnect_if(
    reason: DisconnectReason, states: frozenset[SessionState] | None
) -> Callable[[DeviceSession], None]:
    """Disconnect only from `states` (any live state if None); otherwise record nothing."""

    def command(session: DeviceSession) -> None:
        if session.is_live and (states is None or session.state in states):
            session.disconnect(reason)

    return command


async def _quietly(call: Awaitable[None], what: str, key: str) -> None:
    """Engine teardown is best effort: the session is already recorded as ended."""
    try:
        await call
    except Exception:
        log.exception("engine %s of %s failed", what, key)
