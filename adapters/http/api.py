"""HTTP API for auditors: a session's state and history, the same query as session.history.

Requests are rate-limited per identity (per client address when no tokens are set), as
Socket.IO requests are: an auditor pages through a long history at a steady pace, and a
client that reads as fast as the server answers cannot take the CPU other identities need.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters import payloads
from adapters.http.web import error_response, unauthorized
from adapters.identity import Identities
from adapters.limits.history import HistoryAllowance
from adapters.limits.requests import RequestLimits
from domain.application.pairing import PairingService
from domain.model.errors import DeviceSessionError, LimitReachedError

STATUS = {"invalid_payload": 400, "invalid_key": 400, "not_found": 404}


@dataclass(frozen=True)
class Reader:
    """Who asks: an identity, and what its requests are counted against (the identity,
    or its client address when no tokens are set)."""

    identity: str
    counted: str


Query = Callable[[str, Reader, QueryParams], Awaitable[dict[str, Any]]]
# Query parameters are whole numbers: versions, page sizes (longer ones are refused before
# `int()` sees them, which raises on more than 4,300 digits).
MAX_DIGITS = 18
REFUSAL_DELAY = 1.0


def session_routes(
    service: PairingService,
    identities: Identities,
    limits: RequestLimits,
    allowance: HistoryAllowance,
) -> list[Route]:
    """GET /api/sessions/{key}[?at=N] and
    GET /api/sessions/{key}/history[?after=N][&limit=N][&at=N]."""

    async def state(key: str, reader: Reader, query: QueryParams) -> dict[str, Any]:
        session = await service.state(key, reader.identity, _numbers(query, key, "at").get("at"))
        return {**payloads.describe(session), "version": session.version}

    async def history(key: str, reader: Reader, query: QueryParams) -> dict[str, Any]:
        numbers = _numbers(query, key, "after", "limit", "at")
        request = payloads.parse(payloads.HistoryRequest, {"key": key, **numbers})
        await allowance.take(reader.counted, request.limit, key)
        page = await service.history(
            key, reader.identity, request.at, after=request.after, limit=request.limit
        )
        return payloads.history_reply(key, page)

    return [
        Route("/api/sessions/{key:str}", _endpoint(state, identities, limits)),
        Route("/api/sessions/{key:str}/history", _endpoint(history, identities, limits)),
    ]


def _endpoint(
    query: Query, identities: Identities, limits: RequestLimits
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def handle(request: Request) -> JSONResponse:
        identity = identities.from_bearer(request.headers.get("authorization"))
        if identity is None:
            return unauthorized()
        counted = identities.holder(identity, request.client.host if request.client else "")
        try:
            await limits.admit(counted, counted)  # every request counts, even a bad one
            key = payloads.parse(payloads.KeyRequest, dict(request.path_params)).key
            body = await query(key, Reader(identity, counted), request.query_params)
        except payloads.RequestRefused as refused:
            return error_response(400, refused.code, refused.message)
        except LimitReachedError as refused:
            return await _too_many(refused)
        except DeviceSessionError as refused:
            return error_response(STATUS.get(refused.code, 500), refused.code, refused.message)
        return JSONResponse({"ok": True, **body})

    return handle


async def _too_many(refused: LimitReachedError) -> JSONResponse:
    """429, answered only once a retry could succeed (up to REFUSAL_DELAY seconds): a
    client that ignores Retry-After and asks again at once, on every connection it holds,
    then sends a request per connection and second instead of as many as the server can
    refuse, and the CPU those refusals would take stays with other identities."""
    await asyncio.sleep(min(refused.retry_after or 0, REFUSAL_DELAY))
    response = error_response(429, refused.code, refused.message)
    # Retry-After takes whole seconds: round up, so a retry then is never early.
    response.headers["retry-after"] = str(max(1, math.ceil(refused.retry_after or 1)))
    return response


def _numbers(query: QueryParams, key: str, *names: str) -> dict[str, int]:
    """The named query parameters that are present, as numbers (RequestRefused if not)."""
    numbers = {}
    for name in names:
        raw = query.get(name)
        if raw is None:
            continue
        if not (raw.isascii() and raw.isdecimal()) or len(raw) > MAX_DIGITS:
            raise payloads.RequestRefused(
                "invalid_payload", f"{name} must be a whole number (0 or more)", key
            )
        numbers[name] = int(raw)
    return numbers
