"""`GET /readyz`: may this process take traffic? Its event store and Redis (when
configured) must answer, and the start-up must have settled what the last run left
(then requests may come; paired devices keep resuming in the background: `resume` says
how far). `/healthz` stays liveness: the process itself is up, answered at once."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domain.application.ports import StoreCalls
from domain.application.recovery import Recovery
from domain.application.sessions import DeviceSessions

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds each dependency gets to answer


class Readiness:
    def __init__(
        self,
        sessions: DeviceSessions,
        executor: Executor | None,
        redis_url: str | None,
        timeout: float = CHECK_TIMEOUT,
        stopping: Callable[[], bool] = lambda: False,
        store_calls: StoreCalls | None = None,
        recovery: Callable[[], Recovery] | None = None,
    ) -> None:
        self._recovery = recovery
        self._store_calls = store_calls
        self._stopping = stopping
        self._sessions = sessions
        self._executor = executor
        self._redis_url = redis_url
        self._timeout = timeout

    async def checks(self) -> dict[str, str]:
        """Each dependency's answer: "ok", or why not."""
        probes: dict[str, Callable[[], Awaitable[object]]] = {"store": self._store}
        if self._redis_url is not None:
            probes["redis"] = self._redis
        names = list(probes)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(probes[name](), self._timeout) for name in names),
            return_exceptions=True,
        )
        # A process draining for shutdown takes no new traffic, whatever its dependencies say.
        results = {"process": "failed: shutting down" if self._stopping() else "ok"}
        if self._recovery is not None and not self._recovery().settled:
            results["recovery"] = "failed: settling what the last run left"
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                why = "timed out" if isinstance(outcome, TimeoutError) else type(outcome).__name__
                log.warning("readiness: %s check failed: %s", name, outcome or why)
                results[name] = f"failed: {why}"
            else:
                results[name] = "ok"
        return results

    def resume(self) -> dict[str, int] | None:
        """How far the start-up is: `looked_at`, the sessions it read to settle them (those
        that may still have been recorded as live; the ones recorded offline are not
        read before it is ready), then its resuming of paired devices: `to_resume`
        (those recorded offline at once, the settled ones as found; less any another
        process or a request took meanwhile), `resumed`, `unavailable`, `pending`."""
        if self._recovery is None:
            return None
        recovery = self._recovery()
        return {
            "looked_at": recovery.looked_at,
            "to_resume": recovery.to_resume,
            "resumed": len(recovery.resumed),
            "unavailable": len(recovery.unavailable),
            "pending": recovery.pending,
        }

    async def _store(self) -> object:
        # On the store's threads when it has some, so a saturated pool reads as not ready.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.ping)

    def ping(self) -> object:
        """The store's check (the `ping` store operation)."""
        query = functools.partial(ping, self._sessions)
        return query() if self._store_calls is None else self._store_calls(query)

    async def _redis(self) -> object:
        from redis import asyncio as aioredis

        assert self._redis_url is not None
        client = aioredis.Redis.from_url(
            self._redis_url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout
        )
        try:
            return await client.ping()
        finally:
            await client.aclose()


def ping(sessions: DeviceSessions) -> object:
    """One cheap query. Its name is the `operation` label the store timer gives it."""
    return sessions.recorder.max_notification_id()


def readiness_routes(readiness: Readiness) -> list[Route]:
    async def readyz(request: Request) -> JSONResponse:
        checks = await readiness.checks()
        failed = [name for name, result in checks.items() if result != "ok"]
        resume = readiness.resume()
        extra = {} if resume is None else {"resume": resume}
        if failed:
            body = {"status": "not ready", "checks": checks, "failed": failed, **extra}
            return JSONResponse(body, 503)
        return JSONResponse({"status": "ready", "checks": checks, **extra})

    return [Route("/readyz", readyz)]
