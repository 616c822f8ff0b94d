"""HTTP API for auditors: a session's state and history, the same query as session.history.

Requests are rate-limited per identity (per client address when no tokens are set), as
Socket.IO requests are: an auditor pages through a long history at a steady pace, and a
client that reads as fast as the server answers cannot take the CPU other identities need.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from adapters import payloads
from adapters.http.models import HistoryView, SessionQuery, SessionView
from adapters.http.rest import Api, Call, Operation, ok
from adapters.limits.history import HistoryAllowance
from domain.application.pairing import PairingService

STATE = Operation(
    "GET",
    "/api/sessions/{key}",
    "getSession",
    "The session now, or right after version `at`.",
    {200: SessionView},
    query=SessionQuery,
)
HISTORY = Operation(
    "GET",
    "/api/sessions/{key}/history",
    "getSessionHistory",
    "A page of the key's recorded events, oldest first (as session.history).",
    {200: HistoryView},
    query=payloads.HistoryRequest,
)
OPERATIONS = [STATE, HISTORY]


def session_routes(service: PairingService, api: Api, allowance: HistoryAllowance) -> list[Route]:
    """GET /api/sessions/{key}[?at=N] and
    GET /api/sessions/{key}/history[?after=N][&limit=N][&at=N]."""

    async def state(call: Call) -> Response:
        key = call.key
        at = call.query(SessionQuery).at
        session = await service.state(key, call.caller.identity, at)
        return ok({**payloads.describe(session), "version": session.tenure_version})

    async def history(call: Call) -> Response:
        request = call.query(payloads.HistoryRequest, key=call.key)
        await allowance.take(call.caller.counted, request.limit, request.key)
        page = await service.history(
            request.key, call.caller.identity, request.at, after=request.after, limit=request.limit
        )
        return ok(payloads.history_reply(request.key, page))

    return [STATE.route(api, state), HISTORY.route(api, history)]
