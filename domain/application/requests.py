"""Client requests that change a session: create (or join), join, logout, delete."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from domain.application.commands import disconnect
from domain.application.dispatch import Outbox
from domain.application.ports import EngineCatalog, EngineEvents, Subscriptions, WhatsAppEngine
from domain.application.reads import Reads
from domain.application.sessions import Change, IntegrityError
from domain.application.shared import Shared, UseCases
from domain.model.errors import EngineUnavailableError, InvalidTransitionError, LimitReachedError
from domain.model.session import DeviceSession, DisconnectReason

log = logging.getLogger(__name__)
Reason = DisconnectReason

ELSEWHERE = "handled by another pairgate process"
PASSKEY_ACTION = "answer a passkey request"
RELINK_ACTION = 'restart a linked device without "relink": true'
LINKED = "offline holding its credentials (a new pairing would unlink it)"


@dataclass(frozen=True)
class Outcome:
    """A session as a client request left it. `joined`: the request joined a live session."""

    session: DeviceSession
    joined: bool = False


@dataclass(frozen=True)
class _Start:
    """What a create asks for: the pairing it records if it does not join one."""

    name: str
    engine: str
    owner: str
    holder: str
    relink: bool
    proxy: str | None


@dataclass(frozen=True)
class Claim:
    """What `create` found or recorded: a live session to join (`change` None), or a
    pairing it recorded (`previous`: the key's session before it, if it had one)."""

    session: DeviceSession
    change: Change | None = None
    previous: DeviceSession | None = None


class Requests(UseCases):
    def __init__(
        self,
        shared: Shared,
        reads: Reads,
        engines: EngineCatalog,
        subscriptions: Subscriptions,
        reports: EngineEvents,
        default_proxy: str | None = None,
    ) -> None:
        """`default_proxy`: the proxy of a pairing that names none (None: direct)."""
        super().__init__(shared)
        self._default_proxy = default_proxy
        self._reads = reads
        self._engines = engines
        self._subscriptions = subscriptions
        self._reports = reports

    async def create(
        self,
        key: str,
        name: str,
        engine_name: str,
        owner: str,
        subscriber: str | None,
        *,
        phone: str | None = None,
        relink: bool = False,
        holder: str | None = None,
        proxy: str | None = None,
    ) -> Outcome:
        """Start pairing `key` for `owner`, or join it if it is live. A key that still holds
        a linked device's credentials restarts only with `relink`: a restart discards them.
        `subscriber` (a connection) follows the key's events from here; None (an HTTP
        request): nobody new does.

        `holder` is whom the new session counts against for PAIRGATE_MAX_SESSIONS, the
        owner if None: an adapter may count by something finer than the owner (without
        tokens every client is one owner; the gateway counts each address apart). It is
        not recorded: sessions this process runs after a restart (or takes over from
        another) count against their owner.

        `proxy` (or else the default proxy) is recorded with the pairing: its engine dials
        through it now and whenever the device is resumed.
        """
        holder = holder or owner
        if proxy is not None:
            await self._engines.dialable(proxy)  # refused before anything is recorded
        start = _Start(name, engine_name, owner, holder, relink, proxy or self._default_proxy)
        engine = self._engines.resolve(engine_name)
        if self._registry.closing:
            raise EngineUnavailableError("pairgate is shutting down; try again shortly", key=key)
        async with self._turns.turn(key) as outbox:
            await self._actions.teardown_done(key)  # the key's last link, if it just ended
            claim = await self._claim(key, start)
            self._follow(outbox, key, claim, owner, subscriber)
            if claim.change is not None:
                await self._start(key, engine, claim, holder, phone, outbox)
        return Outcome(claim.session, joined=claim.change is None)

    async def join(self, key: str, owner: str, subscriber: str) -> DeviceSession:
        async with self._turns.turn(key) as outbox:
            session = await self._reads.owned(key, owner)
            outbox.then(lambda: self._subscriptions.subscribe(key, subscriber))
        return session

    async def answer_passkey(self, key: str, owner: str, response: dict[str, Any]) -> DeviceSession:
        """Hand the engine the passkey assertion WhatsApp asked the key's owner for. What
        WhatsApp makes of it comes back as the engine's reports."""
        async with self._turns.turn(key):
            session = await self._reads.owned(key, owner)
            if not session.passkey_pending:
                raise InvalidTransitionError(key, PASSKEY_ACTION, "not waiting for a passkey")
            engine = self._registry.engine(key)
            if engine is None:
                raise InvalidTransitionError(key, PASSKEY_ACTION, ELSEWHERE)
            try:
                await engine.answer_passkey(key, response)
            except NotImplementedError as error:
                raise EngineUnavailableError(
                    f"engine {session.engine!r} cannot answer a passkey: {error}", key=key
                ) from None
        return session

    async def logout(self, key: str, owner: str) -> DeviceSession:
        return await self._end_by_owner(key, owner, Reason.USER_LOGGED_OUT)

    async def delete(self, key: str, owner: str) -> DeviceSession:
        return await self._end_by_owner(key, owner, Reason.SESSION_REVOKED)

    # -- the steps of create ----------------------------------------------------------

    async def _claim(self, key: str, start: _Start) -> Claim:
        """The live session to join, or the pairing recorded for its owner."""
        owner, holder = start.owner, start.holder
        if key not in self._registry:
            created = await self._create_if_new(key, start)
            if created is not None:
                return Claim(created.session, created)
        session = await self._store.find(key)
        if session is not None:
            await self._reads.check_owner(session, owner, claim=True)
            if session.is_live and key in self._registry:
                return Claim(session)
        if key not in self._registry and not await self._leases.acquire(key):
            # Another process runs the key's engine: follow it from here.
            if session is not None and session.is_live:
                return Claim(session)
            raise InvalidTransitionError(key, "start a new pairing", ELSEWHERE)
        try:
            self._registry.check_room(key, owner, holder)
            change = await self._record_start(key, session, start)
        except Exception:
            if key not in self._registry:
                await self._leases.release(key)
            raise
        return Claim(change.session, change, session)

    async def _create_if_new(self, key: str, start: _Start) -> Change | None:
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
            self._registry.check_room(key, start.owner, start.holder)
            return await self._new_session(key, start)
        except (IntegrityError, LimitReachedError):
            await self._leases.release(key)
            return None
        except Exception:
            await self._leases.release(key)
            raise

    async def _new_session(self, key: str, start: _Start) -> Change:
        """Record the key's first pairing (IntegrityError if it has a stream)."""
        args = (start.name, start.engine, start.owner, start.proxy)
        return await self._store.call(self._store.sessions.create, key, *args)

    async def _record_start(self, key: str, session: DeviceSession | None, start: _Start) -> Change:
        if session is None:
            try:
                return await self._new_session(key, start)
            except IntegrityError:
                # Another process created the key a moment ago and runs its engine: this
                # one must neither restart nor run a second engine for it.
                raise InvalidTransitionError(key, "create", "being created elsewhere") from None
        if session.holds_credentials and not start.relink:
            # A restart unlinks the device for good. Asking for a key is what a page load
            # does (the Scan page's ?key=), so unlinking takes a request that says so.
            raise InvalidTransitionError(key, RELINK_ACTION, LINKED)
        events = []
        if session.is_live:
            # Recorded as live, but no engine runs it here: the process that did has gone.
            events = (await self._store.update(key, disconnect(Reason.CONNECTION_LOST))).events
        change = await self._store.update(
            key, lambda s: s.restart(start.name, start.engine, start.owner, start.proxy)
        )
        return Change(change.session, events + change.events)

    def _follow(
        self, outbox: Outbox, key: str, claim: Claim, owner: str, subscriber: str | None
    ) -> None:
        """The subscriber follows the key from here; a pairing's records go out to it."""
        subscriptions = self._subscriptions
        if claim.previous is not None and claim.previous.owner != owner:
            # The key changed hands: its previous owner's clients hear nothing more.
            outbox.then(lambda: subscriptions.unsubscribe_all(key))
        if subscriber is not None:
            outbox.then(lambda: subscriptions.subscribe(key, subscriber))
        if claim.change is not None:
            outbox.publish(claim.change.events)

    async def _start(
        self,
        key: str,
        engine: WhatsAppEngine,
        claim: Claim,
        holder: str,
        phone: str | None,
        outbox: Outbox,
    ) -> None:
        """Run the key's engine here. Its reports wait for this turn to end (see
        EngineReports), so a report from inside `start` cannot deadlock."""
        if claim.previous is not None:
            await self._actions.forget_previous_link(key, engine)
        self._registry.run(key, engine, claim.session, holder)
        try:
            proxy = claim.session.proxy
            await self._actions.start_engine(engine, key, self._reports, proxy, phone)
        except Exception as error:
            log.exception("engine %s failed to start %s", engine.name, key, extra={"key": key})
            lost = await self._store.update(key, disconnect(Reason.CONNECTION_LOST))
            self._actions.settle(key, lost, outbox)
            raise EngineUnavailableError(
                f"engine {claim.session.engine!r} could not start: {error}", key=key
            ) from error
        self._actions.arm(key, claim.session)

    # -- ending -----------------------------------------------------------------------

    async def _end_by_owner(self, key: str, owner: str, reason: DisconnectReason) -> DeviceSession:
        async with self._turns.turn(key) as outbox:
            session = await self._reads.owned(key, owner)
            if (
                key not in self._registry
                and session.needs_an_engine
                and not await self._leases.acquire(key)
            ):
                # The engine runs in another process: that process must end it.
                command = "logout" if reason is Reason.USER_LOGGED_OUT else "delete"
                await self._leases.forward(key, command, {"owner": owner})
                return await self._reads.owned(key, owner)
            change = await self._store.update(key, disconnect(reason))
            self._actions.settle(key, change, outbox, unlink=True)
        return change.session
