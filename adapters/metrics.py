"""Prometheus metrics, read off what pairgate already does: recorded events, store calls,
connections. Nothing in the domain knows about them.

Each wired pairgate has its own registry (several servers can share one test process);
`GET /metrics` serves it in the text exposition format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import socketio
from eventsourcing.domain import DomainEventProtocol
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.application.pairing import PairingService
from domain.model.session import DeviceSession, DisconnectReason, SessionState

log = logging.getLogger(__name__)

T = TypeVar("T")

# DeviceSessions calls worth telling apart; anything else is "other" (bounded labels).
STORE_OPERATIONS = {
    "find",
    "get",
    "create",
    "update",
    "update_each",  # engine reports of several keys, one transaction
    "history",
    "state_at",
    "keys",
    "ping",
}
PAIR_BUCKETS = (2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PairgateMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.qr_codes = Counter(
            "pairgate_qr_codes_issued", "QR codes shown to clients.", registry=self.registry
        )
        self.disconnects = Counter(
            "pairgate_disconnects",
            "Sessions recorded as disconnected, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in DisconnectReason:
            self.disconnects.labels(reason.value)
        self.pair_seconds = Histogram(
            "pairgate_pair_duration_seconds",
            "Seconds from a pairing's start (session.created) to session.ready.",
            buckets=PAIR_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "pairgate_store_seconds",
            "Seconds each event store call took (queueing for a store thread not included).",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        # One labelled child per operation, looked up once: a store call is timed several
        # times per pairing, and `labels()` takes a lock and builds a key each time.
        self._store_timers = {
            operation: self.store_seconds.labels(operation)
            for operation in (*STORE_OPERATIONS, "other")
        }
        ProcessCollector(registry=self.registry)
        self._pairing_since: dict[str, datetime] = {}

    def observe(self, key: str, events: Sequence[DomainEventProtocol[UUID]]) -> None:
        """Count what a key's newly recorded events say."""
        for event in events:
            match event:
                case DeviceSession.SessionCreated() | DeviceSession.Restarted():
                    self._pairing_since[key] = _timestamp(event)
                case DeviceSession.QrIssued():
                    self.qr_codes.inc()
                case DeviceSession.Ready():
                    started = self._pairing_since.pop(key, None)
                    if started is not None:
                        self.pair_seconds.observe((_timestamp(event) - started).total_seconds())
                case DeviceSession.Disconnected(reason=reason):
                    self._pairing_since.pop(key, None)
                    self.disconnects.labels(reason).inc()

    def recorded(self, key: str, event: DomainEventProtocol[UUID]) -> None:
        """A handler of recorded events (a plain function: nothing to await): count it."""
        self.observe(key, (event,))
        log.debug("%s recorded %s", key, type(event).__name__, extra={"key": key})

    def watch(self, service: PairingService, sio: socketio.AsyncServer) -> None:
        """Gauges read at scrape time: sessions by state, Socket.IO connections."""
        self.registry.register(_LiveSessions(service))
        self.registry.register(_Resuming(service))
        self.registry.register(_Connections(sio))

    def timed_store(self, call: Callable[[], T], /) -> T:
        """Run one event store call and time it, by operation (StoreCalls)."""
        operation = getattr(getattr(call, "func", call), "__name__", "")
        timer = self._store_timers.get(operation) or self._store_timers["other"]
        started = time.perf_counter()
        try:
            return call()
        finally:
            timer.observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Resuming(Collector):
    def __init__(self, service: PairingService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        startup = self._service.recoverer.startup
        yield GaugeMetricFamily(
            "pairgate_devices_to_resume",
            "Paired devices the start-up's recovery has yet to start again "
            "(PAIRGATE_RESUME_RATE a second).",
            value=startup.pending,
        )


class _LiveSessions(Collector):
    def __init__(self, service: PairingService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "pairgate_sessions",
            "Sessions whose engine runs in this process, by state.",
            labels=["state"],
        )
        counts = dict.fromkeys(SessionState, 0)
        # A running key that is disconnected: a paired device offline, reconnecting.
        for state in self._service.running_states.values():
            counts[state] += 1
        for state, count in counts.items():
            gauge.add_metric([state.value], count)
        yield gauge


class _Connections(Collector):
    def __init__(self, sio: socketio.AsyncServer) -> None:
        self._sio = sio

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Connected sids sit in the namespace's `None` room (this process's only).
        connected = sum(1 for _ in self._sio.manager.get_participants("/", None))
        yield GaugeMetricFamily(
            "pairgate_socketio_connections",
            "Socket.IO connections open on this process.",
            value=connected,
        )


def _timestamp(event: DomainEventProtocol[UUID]) -> datetime:
    stamp: datetime = event.timestamp  # type: ignore[attr-defined]  # eventsourcing's events
    return stamp


def metrics_routes(metrics: PairgateMetrics) -> list[Route]:
    async def scrape(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", scrape)]
