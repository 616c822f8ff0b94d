"""HTTP routes: health, and the simulated phone's control endpoints."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match, Route

from adapters.engines.simulator import (
    CODE_OF_MOVE,
    SimulatedEngine,
    SimulatorRefusal,
    simulated_moves,
)
from adapters.identity import Identities
from domain.application.pairing import PairingService
from domain.application.ports import DeviceLeases
from domain.model.errors import DeviceSessionError, SessionNotFoundError

# A simulated move's body (a code, a passkey answer) is a few hundred bytes.
MAX_MOVE_BODY = 16_384


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "invalid_payload"}.get(error.status_code, "invalid_payload")
    response = error_response(
        error.status_code, code, f"{request.method} {request.url.path}: {error.detail}"
    )
    if error.status_code == 405:
        # Every method of the path, not only those of the first route on it (Starlette's).
        response.headers["allow"] = ", ".join(sorted(_methods(request)))
    return response


def _methods(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return methods


# Routing errors in the API's own shape instead of Starlette's plain text.
HTTP_ERROR_HANDLERS = {404: _http_error, 405: _http_error}


def unauthorized() -> JSONResponse:
    response = error_response(401, "unauthorized", "send Authorization: Bearer <token>")
    response.headers["www-authenticate"] = "Bearer"
    return response


async def refuse_stranger(
    request: Request, identities: Identities, service: PairingService, key: str
) -> JSONResponse | None:
    """401 without a valid token; 404 `not_found` when `key` is not the caller's, whether
    it is another identity's or nobody's (the same answer: nobody learns which keys
    exist); None: go ahead."""
    identity = identities.from_bearer(request.headers.get("authorization"))
    if identity is None:
        return unauthorized()
    if not identities.required:
        return None
    if await service.standing_for(key, identity) is None:
        missing = SessionNotFoundError(key)
        return error_response(404, missing.code, missing.message)
    return None


def health_routes(service: PairingService) -> list[Route]:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "sessions_running": len(service.running_keys)})

    return [Route("/healthz", healthz)]


def simulator_routes(
    simulator: SimulatedEngine,
    service: PairingService,
    identities: Identities,
    leases: DeviceLeases | None = None,
) -> list[Route]:
    """POST /api/simulator/devices/{key}/{move}: the phone's side, one route per move."""
    moves = simulated_moves(simulator)

    async def elsewhere(name: str, key: str, args: dict[str, str]) -> bool:
        """Forward the move to the process running the key, if another one does."""
        if leases is None or simulator.serves(key) or key in service.running_keys:
            return False
        if await leases.acquire(key):  # it was free: nobody runs the key
            await leases.release(key)
            return False
        await leases.forward(key, f"sim.{name}", args)
        return True

    def endpoint(name: str) -> Any:
        async def handle(request: Request) -> JSONResponse:
            key = request.path_params["key"]
            if denied := await refuse_stranger(request, identities, service, key):
                return denied
            try:
                args = _move_args(name, await _json_object(request))
                if not await elsewhere(name, key, args):
                    await moves[name](key, args)
            except SimulatorRefusal as refusal:
                return error_response(refusal.status, refusal.code, refusal.message)
            except DeviceSessionError as refused:
                return error_response(409, refused.code, refused.message)
            standing = await service.standing(key)
            state = standing.state.value if standing is not None else None
            return JSONResponse({"ok": True, "key": key, "state": state})

        return handle

    base = "/api/simulator/devices/{key:str}/"
    return [Route(base + name, endpoint(name), methods=["POST"]) for name in moves]


def _move_args(name: str, body: dict[str, Any]) -> dict[str, str]:
    if name not in CODE_OF_MOVE:
        return {}
    code = body.get("code")
    if not isinstance(code, str):
        raise SimulatorRefusal(
            400, "invalid_payload", f'body must be {{"code": "{CODE_OF_MOVE[name]}"}}'
        )
    return {"code": code}


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it passes `limit` bytes (`request.body()`
    would read any size)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return None
    return bytes(raw)


def parse_json(raw: bytes) -> Any:
    """`json.loads`, ValueError for anything that is not JSON, a body nested deeper than
    the parser recurses included (RecursionError)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_MOVE_BODY)
    if raw is None:
        raise SimulatorRefusal(
            413, "invalid_payload", f"a body may have up to {MAX_MOVE_BODY} bytes"
        )
    if not raw:
        return {}
    try:
        body = parse_json(raw)
    except ValueError:
        raise SimulatorRefusal(400, "invalid_payload", "body must be JSON") from None
    if not isinstance(body, dict):
        raise SimulatorRefusal(400, "invalid_payload", "body must be a JSON object")
    return body
