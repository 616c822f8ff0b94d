"""create_app: the ASGI application (Starlette owns the lifespan, Socket.IO is mounted on it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import socketio
from starlette.applications import Starlette

from adapters.http_api import session_routes
from adapters.metrics import PairgateMetrics, metrics_routes
from adapters.readiness import Readiness, readiness_routes
from adapters.scan_page import scan_page_routes
from adapters.web import HTTP_ERROR_HANDLERS, health_routes, simulator_routes
from domain.ports import Clock
from entrypoints.bootstrap import Pairgate, bootstrap, close_fanout
from entrypoints.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> socketio.ASGIApp:
    metrics = PairgateMetrics()
    pairgate = bootstrap(settings or Settings(), clock, metrics)
    readiness = Readiness(
        pairgate.sessions,
        pairgate.executor,
        pairgate.settings.redis,
        stopping=lambda: pairgate.service.stopping,
        store_calls=metrics.timed_store,
    )
    routes = health_routes(pairgate.service)
    routes += session_routes(
        pairgate.service, pairgate.identities, pairgate.http_limits, pairgate.history_allowance
    )
    routes += readiness_routes(readiness) + metrics_routes(metrics)
    if pairgate.simulator is not None:
        routes += simulator_routes(
            pairgate.simulator, pairgate.service, pairgate.identities, pairgate.leases
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pairgate.start()
        yield
        await pairgate.close()
        await close_fanout(pairgate.sio)

    web = Starlette(
        routes=[
            *routes,
            *scan_page_routes(pairgate.simulator, pairgate.service, pairgate.identities),
        ],
        lifespan=lifespan,
        exception_handlers=HTTP_ERROR_HANDLERS,
    )
    web.state.pairgate = pairgate
    return socketio.ASGIApp(pairgate.sio, other_asgi_app=web)


def pairgate_of(app: socketio.ASGIApp) -> Pairgate:
    """The wired service behind an app made by create_app."""
    pairgate: Pairgate = app.other_asgi_app.state.pairgate
    return pairgate
