"""The REST control plane: create (or join), list, log out, delete, pair by phone number.

The same use cases as the Socket.IO requests, with the same identities, caps and rates: a
session created here is recorded, and projected onto its Socket.IO room, exactly as one
created over Socket.IO (an HTTP request just does not join the room itself).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from adapters import payloads
from adapters.http.models import (
    CreatedView,
    ListQuery,
    PairCodeRequest,
    SessionListView,
    SessionView,
)
from adapters.http.rest import Api, Call, Operation, ok
from domain.application.pairing import PairingService
from domain.application.ports import SessionIndex, SessionRow
from domain.model.errors import InvalidTransitionError
from domain.model.session import DeviceSession, SessionState

CREATE = Operation(
    "POST",
    "/api/sessions",
    "createSession",
    "Start pairing a device (201), or join the caller's live session of the key (200).",
    {201: CreatedView, 200: CreatedView},
    body=payloads.CreateRequest,
    refusals=(404, 409, 413, 415, 503),
)
LIST = Operation(
    "GET",
    "/api/sessions",
    "listSessions",
    "The caller's sessions, most recently changed first, a page at a time.",
    {200: SessionListView},
    query=ListQuery,
    refusals=(),
)
LOGOUT = Operation(
    "POST",
    "/api/sessions/{key}/logout",
    "logoutSession",
    "Unlink the device: user logged out.",
    {200: SessionView},
    refusals=(404, 409, 503),
)
DELETE = Operation(
    "DELETE",
    "/api/sessions/{key}",
    "deleteSession",
    "Stop and forget the device: session revoked.",
    {200: SessionView},
    refusals=(404, 409, 503),
)
PAIR_BY_PHONE = Operation(
    "POST",
    "/api/sessions/{key}/pair-code",
    "pairByPhone",
    "Start a new pairing of the caller's ended session by phone number (202); the code "
    "follows as session.pair_code and from GET /api/sessions/{key}/pair-code.",
    {202: SessionView},
    body=PairCodeRequest,
    refusals=(404, 409, 413, 415, 503),
)
OPERATIONS = [CREATE, LIST, LOGOUT, DELETE, PAIR_BY_PHONE]
LIVE = "pairing or linked (it asks for its pairing code when it starts)"


def control_routes(service: PairingService, api: Api, index: SessionIndex | None) -> list[Route]:
    async def create(call: Call) -> Response:
        request = await call.body(payloads.CreateRequest)
        outcome = await request.start(service, call.caller.identity, None, call.caller.counted)
        status = 200 if outcome.joined else 201
        return ok({**view(outcome.session), "joined": outcome.joined}, status)

    async def listing(call: Call) -> Response:
        assert index is not None  # not mounted without one
        query = call.query(ListQuery)
        state = SessionState(query.state) if query.state is not None else None
        page = await index.page(
            call.caller.identity,
            state=state,
            engine=query.engine,
            after=query.after,
            limit=query.limit,
            search=query.q,
        )
        return ok({"sessions": [row_view(row) for row in page.rows], "next": page.next})

    async def logout(call: Call) -> Response:
        return ok(view(await service.logout(call.key, call.caller.identity)))

    async def delete(call: Call) -> Response:
        return ok(view(await service.delete(call.key, call.caller.identity)))

    async def pair_by_phone(call: Call) -> Response:
        key, caller = call.key, call.caller
        request = await call.body(PairCodeRequest)
        session = await service.state(key, caller.identity)
        if session.is_live:
            raise InvalidTransitionError(key, "start pairing by phone number", LIVE)
        outcome = await service.create(
            key,
            session.name,
            session.engine,
            caller.identity,
            None,
            phone=request.phone,
            holder=caller.counted,
            proxy=session.proxy,  # the key's last pairing dialled through it: so does this
        )
        if outcome.joined:  # another request started it meanwhile
            raise InvalidTransitionError(key, "start pairing by phone number", LIVE)
        return ok(view(outcome.session), 202)

    handlers = [create, listing, logout, delete, pair_by_phone]
    return [
        op.route(api, handler)
        for op, handler in zip(OPERATIONS, handlers, strict=True)
        if op is not LIST or index is not None  # no sessions read model wired: no list
    ]


def view(session: DeviceSession) -> dict[str, object]:
    return {**payloads.describe(session), "version": session.tenure_version}


def row_view(row: SessionRow) -> dict[str, object]:
    return {
        "key": row.key,
        "name": row.name,
        "engine": row.engine,
        "state": row.state.value,
        "reason": row.reason.value if row.reason is not None else None,
        "version": row.tenure_version,
        "updated_at": row.updated_at.isoformat(),
    }
