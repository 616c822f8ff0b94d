"""HTTP API for auditors: a session's state and history, the same query as session.history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters import payloads
from adapters.socketio_gateway import DEFAULT_IDENTITY
from adapters.web import error_response
from domain.errors import DeviceSessionError
from domain.pairing import PairingService

STATUS = {"invalid_payload": 400, "invalid_key": 400, "forbidden": 403, "not_found": 404}
Query = Callable[[str, int | None], Awaitable[dict[str, Any]]]


def session_routes(service: PairingService) -> list[Route]:
    """GET /api/sessions/{key}[?at=N] and GET /api/sessions/{key}/history[?at=N]."""

    async def state(key: str, at: int | None) -> dict[str, Any]:
        session = await service.state(key, DEFAULT_IDENTITY, at)
        return {**payloads.describe(session), "version": session.version}

    async def history(key: str, at: int | None) -> dict[str, Any]:
        return {"key": key, "events": await service.history(key, DEFAULT_IDENTITY, at)}

    return [
        Route("/api/sessions/{key:str}", _endpoint(state)),
        Route("/api/sessions/{key:str}/history", _endpoint(history)),
    ]


def _endpoint(query: Query) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def handle(request: Request) -> JSONResponse:
        try:
            key = payloads.parse(payloads.KeyRequest, dict(request.path_params)).key
            body = await query(key, _version(request.query_params.get("at")))
        except payloads.RequestRefused as refused:
            return error_response(400, refused.code, refused.message)
        except DeviceSessionError as refused:
            return error_response(STATUS.get(refused.code, 500), refused.code, refused.message)
        return JSONResponse({"ok": True, **body})

    return handle


def _version(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdecimal():
        raise payloads.RequestRefused("invalid_payload", "at must be a version number", None)
    return int(raw)
