"""What every HTTP API request goes through, and the operation table the router mounts and
the OpenAPI document (adapters.http.openapi) describes.

A request is identified by its Bearer token and rate-limited per identity (per client
address when no tokens are set), as Socket.IO requests are; every refusal has the
Socket.IO acknowledgement's shape, `{"ok": false, "error": {"code", "message"}}`, and
another identity's key is answered exactly as a missing one.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters import payloads
from adapters.http.web import error_response, parse_json, read_body, unauthorized
from adapters.identity import Identities
from adapters.limits import addresses
from adapters.limits.requests import RequestLimits
from domain.model.errors import DeviceSessionError, LimitReachedError

log = logging.getLogger(__name__)

# The status of each refusal code. (`unauthorized` and `invalid_host` are answered before.)
STATUS = {
    "invalid_payload": 400,
    "invalid_key": 400,
    "unknown_engine": 400,
    "forbidden": 403,
    "not_found": 404,
    "invalid_transition": 409,
    "no_code": 409,
    "rate_limited": 429,
    "internal": 500,
    "engine_unavailable": 503,
}
# Query parameters that are whole numbers: refused past this many digits before `int()`.
MAX_DIGITS = len(str(payloads.MAX_VERSION))
REFUSAL_DELAY = 1.0
JSON = "application/json"
M = TypeVar("M", bound=payloads.Request)


class HttpRefusal(Exception):
    """A refusal with its own status (413, 415, 406, 409 no_code, 503)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Caller:
    """Who asks: an identity, and what its requests are counted against (the identity,
    or its client address when no tokens are set)."""

    identity: str
    counted: str


@dataclass(frozen=True)
class Call:
    """One admitted request: its caller and, on /api/sessions/{key}..., its valid key."""

    request: Request
    caller: Caller
    max_body: int

    @property
    def key(self) -> str:
        return payloads.parse(payloads.KeyRequest, dict(self.request.path_params)).key

    async def body(self, model: type[M], **known: Any) -> M:
        """The JSON body, validated by `model` (with `known` fields, e.g. the path's key)."""
        media = self.request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != JSON:
            # Also what keeps browsers' cross-site "simple" requests (forms, text/plain)
            # out: a JSON request from another site needs a preflight nobody answers.
            raise HttpRefusal(415, "invalid_payload", f"send a body as Content-Type: {JSON}")
        declared = self.request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared[:MAX_DIGITS]) > self.max_body:
            raise _too_large(self.max_body)
        raw = await read_body(self.request, self.max_body)
        if raw is None:
            raise _too_large(self.max_body)
        try:
            data = parse_json(raw)
        except ValueError:
            raise payloads.RequestRefused("invalid_payload", "body must be JSON", None) from None
        if isinstance(data, dict):
            data = {**data, **known}
        return payloads.parse(model, data)

    def query(self, model: type[M], **known: Any) -> M:
        """The query parameters `model` names, validated by it (numbers as numbers)."""
        values: dict[str, Any] = {}
        for name, info in model.model_fields.items():
            raw = self.request.query_params.get(name)
            if raw is None or name in known:
                continue
            values[name] = _number(name, raw) if int in _types(info.annotation) else raw
        return payloads.parse(model, {**values, **known})


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One method on one path: what the router mounts and the OpenAPI document says.
    `responses`: the successful statuses' bodies; `refusals`: the statuses it may refuse
    with beyond those every operation may (400, 401, 429)."""

    method: str
    path: str
    name: str
    summary: str
    responses: Mapping[int, type[BaseModel]]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    refusals: tuple[int, ...] = (404,)
    media: Mapping[int, str] = field(default_factory=dict)  # other media types, e.g. PNG

    def route(self, api: Api, handler: Handler) -> Route:
        return Route(self.path, api.endpoint(handler), methods=[self.method], name=self.name)


@dataclass(frozen=True)
class Api:
    """The parts every endpoint uses: identities, the HTTP rate limits, the body cap."""

    identities: Identities
    limits: RequestLimits
    max_body: int

    def endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            identity = self.identities.from_bearer(request.headers.get("authorization"))
            if identity is None:
                return unauthorized()
            address = addresses.counted(request.client.host) if request.client else ""
            counted = self.identities.holder(identity, address)
            try:
                await self.limits.admit(counted, counted)  # every request counts, even a bad one
                return await handler(Call(request, Caller(identity, counted), self.max_body))
            except payloads.RequestRefused as refused:
                return error_response(400, refused.code, refused.message)
            except HttpRefusal as refused:
                return error_response(refused.status, refused.code, refused.message)
            except LimitReachedError as refused:
                return await _too_many(refused)
            except DeviceSessionError as refused:
                return error_response(STATUS.get(refused.code, 500), refused.code, refused.message)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return error_response(500, "internal", "internal error; the server log has it")

        return handle


def ok(body: Mapping[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse({"ok": True, **body}, status)


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


def _too_large(limit: int) -> HttpRefusal:
    return HttpRefusal(413, "invalid_payload", f"a body may have up to {limit} bytes")


def _number(name: str, raw: str) -> int:
    if not (raw.isascii() and raw.isdecimal()) or len(raw) > MAX_DIGITS:
        raise payloads.RequestRefused(
            "invalid_payload", f"{name} must be a whole number (0 or more)", None
        )
    return int(raw)


def _types(annotation: Any) -> tuple[Any, ...]:
    return get_args(annotation) or (annotation,)
