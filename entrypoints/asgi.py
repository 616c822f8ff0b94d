"""create_app: the ASGI application (Starlette owns the lifespan, Socket.IO is mounted on it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

import socketio
from starlette.applications import Starlette
from starlette.types import ASGIApp

from adapters.clock import SystemClock
from adapters.http.api import session_routes
from adapters.http.console_api import console_routes
from adapters.http.console_page import console_page_routes
from adapters.http.guards import Guards, HostPolicy
from adapters.http.openapi import openapi_routes
from adapters.http.qr_api import code_routes
from adapters.http.readiness import Readiness, readiness_routes
from adapters.http.rest import Api
from adapters.http.routing import IndexedRouter
from adapters.http.scan_page import scan_page_routes
from adapters.http.sessions_api import control_routes
from adapters.http.web import HTTP_ERROR_HANDLERS, health_routes, simulator_routes
from adapters.http.webhooks_api import webhook_routes
from adapters.metrics import PairgateMetrics, metrics_routes
from domain.application.ports import Clock
from entrypoints.bootstrap import Pairgate, bootstrap
from entrypoints.fanout import close_fanout
from entrypoints.settings import Settings


class PairgateApp(Guards):
    """The ASGI application: Socket.IO mounted on Starlette, guarded as a whole (the
    Host allow-list, cross-site requests, security headers), and the wired service it runs."""

    def __init__(
        self, app: ASGIApp, pairgate: Pairgate, hosts: HostPolicy, origins: Iterable[str]
    ) -> None:
        super().__init__(app, hosts, origins)
        self.pairgate = pairgate


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> PairgateApp:
    settings = settings or Settings()
    metrics = PairgateMetrics()
    pairgate = bootstrap(settings, clock, metrics)
    readiness = Readiness(
        pairgate.sessions,
        pairgate.executor,
        pairgate.settings.redis,
        stopping=lambda: pairgate.service.stopping,
        store_calls=metrics.timed_store,
        recovery=lambda: pairgate.service.recoverer.startup,
    )
    routes = health_routes(pairgate.service)
    api = Api(pairgate.identities, pairgate.http_limits, settings.max_payload_bytes)
    service = pairgate.service
    routes += control_routes(service, api, pairgate.session_index)
    if pairgate.session_index is not None and pairgate.activity is not None:
        routes += console_routes(api, pairgate.session_index, pairgate.activity)
    routes += session_routes(service, api, pairgate.history_allowance)
    routes += code_routes(service, api, clock or SystemClock()) + openapi_routes()
    routes += readiness_routes(readiness) + metrics_routes(metrics)
    consumers = pairgate.consumers
    if consumers is not None and consumers.webhooks is not None:
        subscriptions = consumers.webhooks.subscriptions
        routes += webhook_routes(subscriptions, api)
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

    web = Starlette(exception_handlers=HTTP_ERROR_HANDLERS)
    # Routes looked up by their paths' first segments, not tried one by one; a path that
    # matches no route is 404 in the API's shape, not a 307 to another path (a key ending
    # in an encoded slash, "0%2F", must not be redirected to key "0").
    web.router = IndexedRouter(
        [
            *routes,
            *scan_page_routes(pairgate.simulator, pairgate.service, pairgate.identities),
            *console_page_routes(),
        ],
        lifespan=lifespan,
    )
    hosts = HostPolicy.for_bind(settings.host, settings.allowed_hosts)
    app = socketio.ASGIApp(pairgate.sio, other_asgi_app=web)
    return PairgateApp(app, pairgate, hosts, settings.allowed_origins)


def pairgate_of(app: object) -> Pairgate:
    """The wired service behind an app made by create_app."""
    assert isinstance(app, PairgateApp), app
    return app.pairgate
