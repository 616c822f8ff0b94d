"""Start-up and shutdown: sessions an earlier run left, leases lost, devices taken offline.

All in batches of BATCH keys (turns held together, leases taken and sessions read at once,
records saved in one transaction): a device costs a share of a commit, and the loop
serves between batches. Start-up first records the sessions that may still be recorded
live as `connection lost`; then requests may come (`Recovery.settled`). Paired devices,
settled or shown offline by the index, resume in the background at `resume_rate` a
second (reconnect storms hurt the accounts too), a batch taken ahead at a time and each
looked at again under its key's turn (from memory: its lease is this process's).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from domain.application.commands import disconnect, disconnect_if
from domain.application.dispatch import Outbox
from domain.application.engine_reports import EngineReports
from domain.application.ports import RecoveryCandidates
from domain.application.shared import Shared, UseCases
from domain.model.session import DeviceSession, DisconnectReason, SessionState

log = logging.getLogger(__name__)
Reason = DisconnectReason
S = SessionState
BATCH = 250
LOG_EVERY = 5.0  # seconds between progress lines while resuming

LiveKeys = Callable[[], Awaitable[RecoveryCandidates]]


@dataclass
class Recovery:
    """What `Recoverer.recover` found: keys by what became of them, and how far it is."""

    interrupted: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    # Keys read to settle the record so far: those that may still have been recorded as
    # live (at start-up, not the ones the index shows offline: they count in to_resume).
    looked_at: int = 0
    settled: bool = False  # every live session it found is recorded as offline
    to_resume: int = 0  # paired devices found offline, to be started again

    @property
    def pending(self) -> int:
        return self.to_resume - len(self.resumed) - len(self.unavailable)


class Recoverer(UseCases):
    def __init__(self, shared: Shared, reports: EngineReports) -> None:
        super().__init__(shared)
        self._reports = reports
        # The keys that may need an engine, from an index (the sessions read model); None:
        # every key the store ever had (a read of the whole log).
        self.live_keys: LiveKeys | None = None
        self.resume_rate = 0.0  # devices started again per second (0: no bound)
        self.startup = Recovery(settled=True)  # the start-up's (/readyz, metrics)

    async def start_up(self) -> Recovery:
        """The start-up's recovery, its progress in `startup`: only the sessions that may
        still be recorded live are read before it is `settled`; offline ones wait to resume."""
        self.startup = Recovery()
        found = await self.candidates()
        if found.unsettled or found.offline:
            log.info(
                "start-up: %d sessions may still be recorded as live (settled before "
                "/readyz), %d paired devices recorded offline (resumed in the background)",
                len(found.unsettled),
                len(found.offline),
            )
        return await self._recover(found.unsettled, found.offline, self.startup)

    async def candidates(self) -> RecoveryCandidates:
        """The keys recovery looks at: the index's, or (no index) every key, unsettled."""
        if self.live_keys is not None:
            return await self.live_keys()
        return RecoveryCandidates(list(await self._store.read(self._store.sessions.keys)))

    async def recover(self, keys: Iterable[str] | None = None) -> Recovery:
        """Set the record straight about the sessions an earlier run (or a process that
        died) left, then start their paired devices again.

        Sessions still recorded live lost their engine with that process (a crash, a kill,
        a stop out of time): recorded as `connection lost`, unpaired ones lose what their
        engine stored. Every paired device offline with its credentials then starts again
        from them, no QR code, at most `resume_rate` a second (`session.ready` when back
        online). `keys`: only these (else all `candidates()`); only keys whose lease this
        process gets are touched."""
        keys = (await self.candidates()).all() if keys is None else list(keys)
        return await self._recover(keys, [], Recovery())

    async def _recover(
        self, unsettled: Sequence[str], offline: Sequence[str], recovery: Recovery
    ) -> Recovery:
        """Settle `unsettled` (batches), then resume the paired ones among them and
        `offline` (keys recorded offline: read again, under their turn, to resume)."""
        waiting = list(offline)
        recovery.to_resume = len(waiting)
        for batch in _batches(unsettled):
            await self._settle(batch, recovery, waiting)
            recovery.looked_at += len(batch)
            recovery.to_resume = len(waiting)
            await asyncio.sleep(0)  # the event loop serves between batches
        recovery.settled = True
        if waiting:
            log.info("resuming %d paired devices, %s", len(waiting), self._pace_text())
        await self._resume_all(waiting, recovery)
        if recovery.interrupted or recovery.resumed or recovery.unavailable:
            log.info(
                "recovered the store: %d interrupted sessions recorded as connection lost, "
                "%d paired devices resumed, %d waiting for an engine this server lacks",
                len(recovery.interrupted),
                len(recovery.resumed),
                len(recovery.unavailable),
            )
        return recovery

    async def _settle(self, keys: Sequence[str], recovery: Recovery, waiting: list[str]) -> None:
        """Take the leases of `keys` no process runs (one transaction; one held already is
        another use case's), read those sessions, record the live ones as lost (one
        transaction); hold the offline paired ones in memory to resume (no second read)."""
        async with contextlib.AsyncExitStack() as turns:
            outboxes: dict[str, Outbox] = {}
            for key in sorted(keys):  # one order for every batch: no two wait on each other
                outboxes[key] = await turns.enter_async_context(self._turns.turn(key))
            ours = await self._leases.acquire_many([k for k in keys if k not in self._registry])
            if not ours:
                return
            try:
                await self._take_over(sorted(ours), outboxes, recovery, waiting)
            except BaseException:
                # None of them runs: no lease (nor session held) may stay with nobody to
                # use it (a later look takes them again).
                stray = [key for key in ours if key not in self._registry]
                waiting[:] = [key for key in waiting if key not in ours]
                for key in stray:
                    self._store.sessions.release(key)
                await self._leases.release_many(stray)
                raise

    async def _take_over(
        self,
        keys: Sequence[str],
        outboxes: dict[str, Outbox],
        recovery: Recovery,
        waiting: list[str],
    ) -> None:
        """`keys` are this process's now: read them, record the live ones as lost."""
        sessions = await self._store.read(self._store.sessions.find_many, keys)
        live: list[DeviceSession] = []
        idle: list[str] = []  # nothing to run: their leases go back
        for key in keys:
            session = sessions.get(key)
            if session is None or not session.needs_an_engine:
                idle.append(key)
            elif session.is_live:
                live.append(session)
            else:
                self._wait(session, waiting)
        await self._leases.release_many(idle)
        if not live:
            return
        update = self._store.sessions.update_many
        changes = await self._store.read(update, live, disconnect(Reason.CONNECTION_LOST))
        for change in changes:
            key = change.session.key
            self._actions.settle(key, change, outboxes[key])
            recovery.interrupted.append(key)
            if change.session.offline_linked:
                self._wait(change.session, waiting)
            else:
                await self._leases.release(key)

    def _wait(self, session: DeviceSession, waiting: list[str]) -> None:
        self._store.sessions.hold(session)
        waiting.append(session.key)

    def _give_up(self, key: str) -> Awaitable[None]:
        """The key will not run here (for now): its lease and held session go."""
        if key not in self._registry:
            self._store.sessions.release(key)
        return self._leases.release(key)

    async def _resume_all(self, keys: Sequence[str], recovery: Recovery) -> None:
        interval = 1 / self.resume_rate if self.resume_rate > 0 else 0.0
        clock = asyncio.get_running_loop().time  # the event loop's (monotonic) clock
        next_start = last_log = clock()
        for count, key in enumerate(keys):
            if count % BATCH == 0:  # a batch's leases and sessions at once, as a settle's
                await self._take_ahead(keys[count : count + BATCH], recovery)
            # (At least a yield: each start may run on the loop, and the loop must serve.)
            await asyncio.sleep(max(0.0, next_start - clock()))
            async with self._turns.turn(key):
                session = await self._store.current(key)  # as it is now: it may have changed
                if (
                    session is not None
                    and key not in self._registry
                    and session.offline_linked
                    and await self._leases.acquire(key)  # (another process may run it)
                ):
                    await self._resume(key, session, recovery)
                    next_start += interval  # the pace is of starts: a key passed over
                else:
                    next_start = max(next_start, clock())  # takes no turn, and earns none
                    recovery.to_resume -= 1
                    if key not in self._registry:
                        await self._give_up(key)
            if clock() - last_log >= LOG_EVERY:
                last_log = clock()
                log.info("resuming paired devices: %d of %d", count + 1, len(keys))

    async def _take_ahead(self, keys: Sequence[str], recovery: Recovery) -> None:
        """Keys about to resume: their leases and sessions taken at once while still free
        (a failure leaves them to the one-at-a-time path)."""
        free = [key for key in keys if not self._store.sessions.holds(key)]
        try:
            if free:
                await self._settle(free, recovery, [])
        except Exception:
            log.warning("taking %d devices ahead failed; one at a time", len(keys), exc_info=True)

    def _pace_text(self) -> str:
        if self.resume_rate > 0:
            return f"at most {self.resume_rate:g} a second (PAIRGATE_RESUME_RATE)"
        return "all at once (PAIRGATE_RESUME_RATE=0)"

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
            await self._give_up(key)
            return
        self._registry.run(key, engine, session)
        try:
            await self._actions.start_engine(engine, key, self._reports, session.proxy)
        except Exception:
            log.exception("engine %s failed to resume %s", engine.name, key, extra={"key": key})
            self._registry.unrun(key)
            recovery.unavailable.append(key)
            await self._give_up(key)
        else:
            recovery.resumed.append(key)

    async def leases_lost(self, keys: Iterable[str]) -> None:
        """Its lease connection broke, so this process no longer owns these keys: stop
        their engines now, recording nothing (whoever takes a key over records it)."""
        for key in keys:
            async with self._turns.turn(key):
                if key in self._registry:
                    log.warning(
                        "lost the lease of %s: stopping its engine", key, extra={"key": key}
                    )
                await self._actions.stop(key)

    async def shutdown(self) -> None:
        """Take every device offline: they did lose their connection, so record it. A
        batch at a time: its engines stop, its records are saved in one transaction, its
        leases go. Whatever a stop cut short (its grace ran out), the next start records."""
        self._registry.closing = True
        for batch in _batches(sorted(self._registry.keys)):
            async with contextlib.AsyncExitStack() as turns:
                outboxes = {k: await turns.enter_async_context(self._turns.turn(k)) for k in batch}
                # Read while they are held (stopping releases them).
                sessions = await self._store.read(self._store.sessions.find_many, batch)
                stopped = await asyncio.gather(*(self._actions.stop(key) for key in batch))
                keys = [key for key, ran in zip(batch, stopped, strict=True) if ran]
                sessions = {key: sessions[key] for key in keys if key in sessions}
                update = self._store.sessions.update_many
                lost = disconnect_if(Reason.CONNECTION_LOST, None)
                for change in await self._store.read(update, list(sessions.values()), lost):
                    outboxes[change.session.key].publish(change.events)
            await self._leases.release_many(keys)
        await self._actions.watchdog.close()
        await self._reports.close()

    async def abandon(self) -> None:
        """After a stop whose grace ran out (`shutdown` cancelled): record nothing more.
        What it had not reached stays recorded live (engines stop with their own close,
        leases with the process) for the next start, or a survivor, to record."""
        self._registry.closing = True
        await self._actions.watchdog.close()
        await self._reports.close()


def _batches(keys: Sequence[str]) -> Iterable[Sequence[str]]:
    iterator = iter(keys)
    while batch := list(itertools.islice(iterator, BATCH)):
        yield batch
