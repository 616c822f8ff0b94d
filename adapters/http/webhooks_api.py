"""REST for webhook subscriptions: an identity creates, lists and deletes its own, and
reads the messages that were given up (dead letters). Another identity's subscription
reads as a missing one. A secret is shown once, in the answer that creates it.

Operations of the API's table (adapters.http.rest): the same identities, rate limits,
body rules and error shape as every other, and described in the OpenAPI document.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints
from starlette.responses import Response
from starlette.routing import Route

from adapters import payloads
from adapters.http.models import Reply
from adapters.http.rest import Api, Call, Operation, ok
from adapters.webhooks.messages import EVENT_TYPES, secret_key
from domain.application.webhooks import (
    MAX_SUBSCRIPTIONS_PER_OWNER,
    Delivery,
    Subscription,
    WebhookSubscriptions,
)

MAX_DEAD_LETTERS = 200
if TYPE_CHECKING:
    EventType = str
else:
    EventType = Literal[EVENT_TYPES]
Secret = Annotated[str, StringConstraints(pattern=r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]


class WebhookRequest(payloads.Request):
    url: str = Field(
        max_length=2048,
        pattern="^https?://",
        description="Its host must resolve to public addresses (or allowed networks)",
    )
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))
    key: payloads.Key | None = Field(None, description="Only this session's events")
    secret: Secret | None = Field(None, description="whsec_ + base64 of 24-64 bytes; else made")


class WebhookId(payloads.Request):
    id: str = Field(min_length=1, max_length=64, description="A subscription's id (wh_...)")


class DeadLetterQuery(payloads.Request):
    limit: int = Field(100, ge=1, le=MAX_DEAD_LETTERS, description="Dead letters per page")


class WebhookView(BaseModel):
    id: str
    url: str
    events: list[str]
    key: str | None
    created_at: str


class NewWebhookView(WebhookView):
    secret: str = Field(description="Shown once: verify the messages' webhook-signature")


class WebhookCreatedView(Reply):
    webhook: NewWebhookView


class WebhookListView(Reply):
    webhooks: list[WebhookView]


class DeadLetterView(BaseModel):
    webhook: str
    webhook_id: str = Field(description="The message's webhook-id")
    type: str
    key: str
    attempts: int
    first_attempt_at: str
    last_error: str | None
    event: dict[str, Any] = Field(description="The message's body (without a QR image)")


class DeadLettersView(Reply):
    dead_letters: list[DeadLetterView]


CREATE = Operation(
    "POST",
    "/api/webhooks",
    "createWebhook",
    f"Subscribe a URL to the caller's sessions' events (at most {MAX_SUBSCRIPTIONS_PER_OWNER}).",
    {201: WebhookCreatedView},
    body=WebhookRequest,
    refusals=(413, 415),
)
LIST = Operation(
    "GET", "/api/webhooks", "listWebhooks", "The caller's subscriptions.", {200: WebhookListView},
    refusals=(),
)  # fmt: skip
DEAD_LETTERS = Operation(
    "GET",
    "/api/dead-letters",
    "listDeadLetters",
    "Messages to the caller's subscriptions given up after retrying, newest first.",
    {200: DeadLettersView},
    query=DeadLetterQuery,
    refusals=(),
)
DELETE = Operation(
    "DELETE",
    "/api/webhooks/{id}",
    "deleteWebhook",
    "Unsubscribe; the subscription's undelivered messages go with it.",
    {200: Reply},
)
OPERATIONS = [CREATE, LIST, DEAD_LETTERS, DELETE]


def webhook_routes(webhooks: WebhookSubscriptions, api: Api) -> list[Route]:
    async def create(call: Call) -> Response:
        asked = await call.body(WebhookRequest)
        if asked.secret is not None:
            try:
                secret_key(asked.secret)
            except ValueError as bad:
                raise payloads.RequestRefused("invalid_payload", str(bad), None) from None
        owner = call.caller.identity
        made = await webhooks.create(owner, asked.url, asked.events, asked.key, asked.secret)
        return ok({"webhook": shown(made, secret=True)}, 201)

    async def listing(call: Call) -> Response:
        mine = await webhooks.of(call.caller.identity)
        return ok({"webhooks": [shown(s) for s in mine]})

    async def dead(call: Call) -> Response:
        query = call.query(DeadLetterQuery)
        letters = await webhooks.dead_letters(call.caller.identity, query.limit)
        return ok({"dead_letters": [dead_letter(d) for d in letters]})

    async def delete(call: Call) -> Response:
        await webhooks.delete(call.caller.identity, call.request.path_params["id"])
        return ok({})

    handlers = [create, listing, dead, delete]
    return [op.route(api, handler) for op, handler in zip(OPERATIONS, handlers, strict=True)]


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
    """A message given up: what it was (never a QR image), when, and the last error."""
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
