"""The consumers that follow the notification log from a tracked position (the sessions
read model; webhooks), wired here and started with the server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from adapters.metrics import PairgateMetrics
from adapters.store.session_rows import session_rows
from domain.application.follow import LogFollower
from domain.application.session_rows import SessionRowsIndex, SessionsProjection
from domain.application.sessions import DeviceSessions
from domain.application.store_calls import StoreAccess
from entrypoints.settings import Settings


@dataclass
class LogConsumers:
    index: SessionRowsIndex
    followers: list[LogFollower] = field(default_factory=list)
    executors: list[ThreadPoolExecutor] = field(default_factory=list)

    def start(self) -> None:
        for follower in self.followers:
            follower.start()

    async def stop(self) -> None:
        for follower in self.followers:
            await follower.stop()
        for executor in self.executors:
            executor.shutdown(wait=True)


def log_consumers(
    settings: Settings, sessions: DeviceSessions, metrics: PairgateMetrics
) -> LogConsumers:
    """Each follower gets a thread of its own: however far behind it is, it takes none of
    the threads (nor the event loop) that pairings use."""
    rows = session_rows(sessions)
    reads = ThreadPoolExecutor(2, thread_name_prefix="pairgate-index")
    index = SessionRowsIndex(rows, StoreAccess(sessions, reads, metrics.timed_store))
    projection = SessionsProjection(sessions, rows)
    own = ThreadPoolExecutor(1, thread_name_prefix="pairgate-follow-sessions")
    follower = LogFollower(
        "sessions read model",
        projection.catch_up,
        StoreAccess(sessions, own, metrics.timed_store),
        settings.follow_interval,
    )
    return LogConsumers(index, [follower], [reads, own])
