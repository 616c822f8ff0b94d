"""HTTP API for auditors: a session's state and history, the same query as session.history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters import payloads
from adapters.identity import Identities
from adapters.web import error_response, unauthorized
from domain.errors import DeviceSessionError
from domain.pairing import PairingService

STATUS = {"invalid_payload": 400, "invalid_key": 400, "not_found": 404}
Query = Callable[[str, str, int | None], Awaitable[dict[str, Any]]]


def session_routes(service: PairingService, identities: Identities) -> list[Route]:
    """GET /api/sessions/{key}[?at=N] and GET /api/sessions/{key}/history[?at=N]."""

    async def state(key: str, identity: str, at: int | None) -> dict[str, Any]:
        session = await service.state(key, identity, at)
        return {**payloads.describe(session), "version": session.version}

    async def history(key: str, identity: str, at: int | None) -> dict[str, Any]:
        return {"key": key, "events": await service.history(key, identity, at)}

    return [
        Route("/api/sessions/{key:str}", _endpoint(state, identities)),
        Route("/api/sessions/{key:str}/history", _endpoint(history, identities)),
    ]


def _endpoint(query: Query, identities: Identities) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def handle(request: Request) -> JSONResponse:
        identity = identities.from_bearer(request.headers.get("authorization"))
        if identity is None:
            return unauthorized()
        try:
            key = payloads.parse(payloads.KeyRequest, dict(request.path_params)).key
            body = await query(key, identity, _version(request.query_params.get("at")))
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
