"""The Scan-QR web page: `/` and `/scan`, its static files, and the little JSON it needs.

The page (adapters/static/) talks Socket.IO with the vendored socket.io-client browser
bundle served from /static/vendor/, so it works offline. GET /api/info tells it whether
the server runs the simulator; in simulator mode GET /api/simulator/devices/{key}/code
gives the current QR text, so the page's "Simulate scan" button can play the phone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from adapters.engines.simulator import SimulatedEngine, SimulatorRefusal
from adapters.http.web import error_response, refuse_stranger
from adapters.identity import Identities
from domain.application.pairing import PairingService

STATIC_DIR = Path(__file__).parent.parent / "static"
NO_STORE = {"cache-control": "no-store"}


def scan_page_routes(
    simulator: SimulatedEngine | None, service: PairingService, identities: Identities
) -> list[BaseRoute]:
    """The page at `/` and `/scan`, `/static/...`, `/api/info` and, simulating, `.../code`."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "scan.html", headers=NO_STORE)

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({"simulate": simulator is not None}, headers=NO_STORE)

    routes: list[BaseRoute] = [
        Route("/", page),
        Route("/scan", page),
        Route("/api/info", info),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if simulator is not None:
        current_code = _current_code(simulator, service, identities)
        routes.append(Route("/api/simulator/devices/{key:str}/code", current_code))
    return routes


def _current_code(
    simulator: SimulatedEngine, service: PairingService, identities: Identities
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def code(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        if denied := await refuse_stranger(request, identities, service, key):
            return denied
        try:
            text = simulator.current_code(key)
        except SimulatorRefusal as refusal:
            return error_response(refusal.status, refusal.code, refusal.message)
        return JSONResponse({"ok": True, "key": key, "code": text}, headers=NO_STORE)

    return code
