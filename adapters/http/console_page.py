"""The operator console: `/console` and the words it needs, filled in by the server.

The page (adapters/static/console.*) reads everything through the HTTP API (GET
/api/sessions with its filters and cursor, /api/stats, each key's history and actions)
and hears changes over Socket.IO (`console.watch` → `session.changed`), with the same
vendored socket.io-client as the Scan-QR page. It holds no data of its own: the server
answers every filter and search.
"""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.engines.catalog import KNOWN_ENGINES
from adapters.http.scan_page import NO_STORE, REASON_TEXTS, browser_pattern
from adapters.payloads import KEY_PATTERN
from domain.application.ports import LIST_PAGE_SIZE, MAX_SEARCH_LENGTH
from domain.model.session import SessionState

PAGE_TEMPLATE = Path(__file__).parent / "console.html"


def console_page() -> str:
    """The page, with the server's states, engines, reasons and limits filled in."""
    data = {
        "states": [state.value for state in SessionState],
        "engines": list(KNOWN_ENGINES),
        "reasons": {
            lang: {r.value: t for r, t in texts.items()} for lang, texts in REASON_TEXTS.items()
        },
        "pageSize": LIST_PAGE_SIZE,
        "maxSearch": MAX_SEARCH_LENGTH,
        "keyPattern": browser_pattern(KEY_PATTERN),
    }
    # In a <script> element: no "</" may end it early.
    embedded = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    page = PAGE_TEMPLATE.read_text(encoding="utf-8")
    return page.replace("{{page_data}}", embedded).replace("{{max_search}}", str(MAX_SEARCH_LENGTH))


def console_page_routes() -> list[BaseRoute]:
    html_page = console_page()

    async def page(request: Request) -> Response:
        return HTMLResponse(html_page, headers=NO_STORE)

    return [Route("/console", page)]
