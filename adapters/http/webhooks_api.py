"""REST for webhook subscriptions: an identity creates, lists and deletes its own, and
reads the deliveries that were given up (dead letters). Another identity's subscription
reads as a missing one. A secret is shown once, in the answer that creates it.

    POST   /api/webhooks                {url, events, key?, secret?}  → 201
    GET    /api/webhooks
    DELETE /api/webhooks/{id}
    GET    /api/webhooks/dead-letters[?limit=N]
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters import payloads
from adapters.http.web import error_response, unauthorized
from adapters.identity import Identities
from adapters.limits.requests import RequestLimits
from adapters.webhooks.messages import secret_key
from domain.application.webhooks import Delivery, Subscription, WebhookSubscriptions
from domain.model.errors import DeviceSessionError, LimitReachedError

MAX_BODY_BYTES = 8192
MAX_DEAD_LETTERS = 200
Secret = Annotated[str, StringConstraints(pattern=r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]


class WebhookRequest(payloads.Request):
    url: str = Field(min_length=1, max_length=2048)
    events: list[str] = Field(min_length=1, max_length=16)
    key: payloads.Key | None = None
    secret: Secret | None = None


Handler = Callable[[Request, str], Awaitable[JSONResponse]]


def webhook_routes(
    webhooks: WebhookSubscriptions, identities: Identities, limits: RequestLimits
) -> list[Route]:
    async def create(request: Request, owner: str) -> JSONResponse:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            # Also keeps out browsers' cross-site "simple" requests (forms, text/plain).
            return error_response(415, "invalid_payload", "send Content-Type: application/json")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return error_response(413, "invalid_payload", f"at most {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body)
        except ValueError:
            return error_response(400, "invalid_payload", "the body must be a JSON object")
        asked = payloads.parse(WebhookRequest, data)
        if asked.secret is not None:
            try:
                secret_key(asked.secret)
            except ValueError as bad:
                return error_response(400, "invalid_payload", str(bad))
        made = await webhooks.create(owner, asked.url, asked.events, asked.key, asked.secret)
        return JSONResponse({"ok": True, "webhook": shown(made, secret=True)}, 201)

    async def listed(request: Request, owner: str) -> JSONResponse:
        mine = await webhooks.of(owner)
        return JSONResponse({"ok": True, "webhooks": [shown(s) for s in mine]})

    async def delete(request: Request, owner: str) -> JSONResponse:
        await webhooks.delete(owner, request.path_params["id"])
        return JSONResponse({"ok": True})

    async def dead(request: Request, owner: str) -> JSONResponse:
        raw = request.query_params.get("limit", "100")
        if not (raw.isascii() and raw.isdecimal() and len(raw) <= 3) or not (
            1 <= int(raw) <= MAX_DEAD_LETTERS
        ):
            message = f"limit must be 1 to {MAX_DEAD_LETTERS}"
            return error_response(400, "invalid_payload", message)
        letters = await webhooks.dead_letters(owner, int(raw))
        return JSONResponse({"ok": True, "dead_letters": [dead_letter(d) for d in letters]})

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, _guarded(handler, identities, limits), methods=[method])

    return [
        route("/api/webhooks", create, "POST"),
        route("/api/webhooks", listed, "GET"),
        route("/api/webhooks/dead-letters", dead, "GET"),
        route("/api/webhooks/{id:str}", delete, "DELETE"),
    ]


def _guarded(handler: Handler, identities: Identities, limits: RequestLimits) -> Any:
    async def handle(request: Request) -> JSONResponse:
        identity = identities.from_bearer(request.headers.get("authorization"))
        if identity is None:
            return unauthorized()
        counted = identities.holder(identity, request.client.host if request.client else "")
        try:
            await limits.admit(counted, counted)
            return await handler(request, identity)
        except payloads.RequestRefused as refused:
            return error_response(400, refused.code, refused.message)
        except LimitReachedError as refused:
            response = error_response(429, refused.code, refused.message)
            response.headers["retry-after"] = str(max(1, int(refused.retry_after or 1)))
            return response
        except DeviceSessionError as refused:
            status = 404 if refused.code == "not_found" else 400
            return error_response(status, refused.code, refused.message)

    return handle


def shown(subscription: Subscription, secret: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": subscription.id,
        "url": subscription.url,
        "events": list(subscription.events),
        "key": subscription.key,
        "created_at": subscription.created_at.isoformat(),
    }
    if secret:
        view["secret"] = subscription.secret
    return view


def dead_letter(delivery: Delivery) -> dict[str, Any]:
    """A delivery given up: what it was (never a QR image), when, and the last error."""
    event = json.loads(delivery.body)
    event.get("data", {}).pop("qr", None)
    return {
        "webhook": delivery.subscription,
        "webhook_id": delivery.message_id,
        "type": delivery.event_type,
        "key": delivery.key,
        "attempts": delivery.attempts,
        "first_attempt_at": delivery.first_at.isoformat(),
        "last_error": delivery.last_error,
        "event": event,
    }
