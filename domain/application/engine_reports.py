"""Engine reports (EngineEvents) recorded as the session's events, one key at a time."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from domain.application.commands import Command, disconnect, disconnect_if
from domain.application.grouped import GroupedUpdates
from domain.application.ports import Clock
from domain.application.shared import Shared, UseCases
from domain.model.errors import InvalidTransitionError
from domain.model.session import (
    PAIRING_STATES,
    DeviceSession,
    DisconnectCause,
    DisconnectReason,
    SessionState,
)

log = logging.getLogger(__name__)
Reason = DisconnectReason
S = SessionState


class EngineReports(UseCases):
    """What engines are given as their EngineEvents.

    A report about a key whose turn is taken (by a request, or by the very `start` that
    runs the engine) waits for it on a task of its own: an engine that reports from
    inside `start` cannot deadlock, and reports still reach the store in the order they
    were made (the key's lock serves its waiters first come, first served).
    """

    def __init__(self, shared: Shared, clock: Clock) -> None:
        super().__init__(shared)
        self._clock = clock
        self._waiting: set[asyncio.Task[None]] = set()
        self._grouped = GroupedUpdates(self._store)  # reports of many keys, one commit

    async def qr_issued(self, key: str, code: str, timeout: float) -> None:
        now = self._clock.now()
        await self._report(key, lambda s: s.issue_qr(code, timeout, now))

    async def pair_code_issued(self, key: str, code: str, timeout: float) -> None:
        now = self._clock.now()
        await self._report(key, lambda s: s.issue_pair_code(code, timeout, now))

    async def qr_expired(self, key: str) -> None:
        await self._report(key, disconnect_if(Reason.QR_EXPIRED, PAIRING_STATES))

    async def passkey_required(self, key: str, options: dict[str, Any], timeout: float) -> None:
        now = self._clock.now()
        await self._report(key, lambda s: s.request_passkey(options, timeout, now))

    async def passkey_rejected(self, key: str) -> None:
        await self._report(
            key, disconnect(Reason.SESSION_REVOKED, DisconnectCause.PASSKEY_REJECTED)
        )

    async def paired(self, key: str) -> None:
        await self._report(key, lambda s: s.authenticate())

    async def connected(self, key: str) -> None:
        await self._report(key, lambda s: s.mark_ready())

    async def disconnected(self, key: str, reason: DisconnectReason) -> None:
        await self._report(key, disconnect(reason))

    async def expire_if_unchanged(self, key: str, version: int) -> None:
        """The watchdog's: end a session its engine left where it was at `version`."""

        def expire(session: DeviceSession) -> None:
            if session.version == version:
                reason = Reason.QR_EXPIRED if session.state is S.QR else Reason.CONNECTION_LOST
                log.warning(
                    "engine went quiet on %s; ending it as %r",
                    key,
                    reason.value,
                    extra={"key": key},
                )
                session.disconnect(reason)

        await self._report(key, expire)

    async def close(self) -> None:
        """Drop the reports still waiting for their key (shutdown)."""
        for task in self._waiting:
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)
        await self._grouped.close()

    async def _report(self, key: str, command: Command) -> None:
        if not self._turns.busy(key):
            await self._record(key, command)
            return
        task = asyncio.ensure_future(self._record(key, command))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _record(self, key: str, command: Command) -> None:
        # The engine is not held up by deliveries ahead of its report's: one of them may
        # be waiting for this very engine (its teardown).
        async with self._turns.turn(key, await_delivery=False) as outbox:
            if key not in self._registry:
                log.debug("ignoring a late engine report for %s", key, extra={"key": key})
                return
            try:
                change = await self._grouped.update(key, command)
            except InvalidTransitionError as refused:
                log.warning(
                    "engine report for %s refused: %s", key, refused.message, extra={"key": key}
                )
                return
            except Exception:
                log.exception("engine report for %s failed", key, extra={"key": key})
                return
            self._actions.settle(key, change, outbox)
