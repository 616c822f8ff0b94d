"""The Scan-QR web page: `/` and `/scan`, its static files, and the little JSON it needs.

The page (adapters/static/) talks Socket.IO with the vendored socket.io-client browser
bundle served from /static/vendor/, so it works offline. GET /api/info tells it whether
the server runs the simulator; in simulator mode GET /api/simulator/devices/{key}/code
gives the current QR text, so the page's "Simulate scan" button can play the phone.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from adapters.engines.simulator import SimulatedEngine, SimulatorRefusal, not_showing_a_code
from adapters.http.web import error_response, refuse_stranger
from adapters.identity import Identities
from adapters.payloads import KEY_PATTERN
from domain.application.pairing import PairingService
from domain.model.session import DisconnectReason, SessionState

STATIC_DIR = Path(__file__).parent.parent / "static"
PAGE_TEMPLATE = Path(__file__).parent / "scan.html"
NO_STORE = {"cache-control": "no-store"}
R = DisconnectReason
# What the page says after "Disconnected (<reason>):", in each of its languages.
REASON_TEXTS: dict[str, dict[DisconnectReason, str]] = {
    "en": {
        R.QR_EXPIRED: "the QR code expired before it was scanned. Press Start to get a new one.",
        R.USER_LOGGED_OUT: "the device was logged out.",
        R.CONNECTION_LOST: "the connection to the device was lost.",
        R.SESSION_REVOKED: "the session was ended by the server.",
    },
    "id": {
        R.QR_EXPIRED: "kode QR kedaluwarsa sebelum dipindai. Tekan Mulai untuk kode baru.",
        R.USER_LOGGED_OUT: "perangkat telah keluar (logout).",
        R.CONNECTION_LOST: "koneksi ke perangkat terputus.",
        R.SESSION_REVOKED: "sesi diakhiri oleh server.",
    },
}


def browser_pattern(pattern: str) -> str:
    """A regular expression as an `<input pattern>` takes it: browsers anchor it themselves
    and compile it with the `v` flag, under which a class's literal `-` is escaped."""
    return pattern.removeprefix("^").removesuffix("$").replace("-]", r"\-]")


def scan_page() -> str:
    """The page, with the server's key pattern and its words for each reason filled in."""
    data = {
        "reasons": {
            lang: {r.value: t for r, t in texts.items()} for lang, texts in REASON_TEXTS.items()
        },
        "linkedReasons": [r.value for r in DisconnectReason if not r.deletes_credentials],
    }
    # In a <script> element: no "</" may end it early.
    embedded = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    page = PAGE_TEMPLATE.read_text(encoding="utf-8")
    page = page.replace("{{key_pattern}}", html.escape(browser_pattern(KEY_PATTERN)))
    return page.replace("{{page_data}}", embedded)


def scan_page_routes(
    simulator: SimulatedEngine | None, service: PairingService, identities: Identities
) -> list[BaseRoute]:
    """The page at `/` and `/scan`, `/static/...`, `/api/info` and, simulating, `.../code`."""

    html_page = scan_page()

    async def page(request: Request) -> Response:
        return HTMLResponse(html_page, headers=NO_STORE)

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
            text = await _shown_code(simulator, service, key)
        except SimulatorRefusal as refusal:
            return error_response(refusal.status, refusal.code, refusal.message)
        return JSONResponse({"ok": True, "key": key, "code": text}, headers=NO_STORE)

    return code


async def _shown_code(simulator: SimulatedEngine, service: PairingService, key: str) -> str:
    """The simulator's code if it runs the key here; else the code its owner recorded
    last (several processes: the page's process need not be the key's)."""
    if simulator.serves(key):
        return simulator.current_code(key)
    session = await service.find(key)
    if session is None:
        return simulator.current_code(key)  # refuses as the simulator does: no such device
    if session.state != SessionState.QR or session.qr_code is None:
        raise not_showing_a_code(key)
    return session.qr_code
