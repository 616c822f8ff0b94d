"""Webhooks: an identity's subscriptions to its sessions' events, kept as an outbox.

The outbox is filled by a follower of the notification log (a SessionsProjection over
rows of its own, so it knows each event's owner and state *at that event*): each event
makes one delivery per subscription of the session's owner that wants it, written with
the follower's position in one transaction. A delivery leaves the outbox only when its
receiver answered 2xx, or as a dead letter once retries ran out: at least once, whatever
stops the process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from domain.application.ports import Clock, SessionRow
from domain.application.session_rows import SessionRowStore
from domain.application.sessions import Event
from domain.application.store_calls import StoreAccess
from domain.model.errors import DeviceSessionError

WEBHOOK_TRACKING = "pairgate:webhooks"
MAX_SUBSCRIPTIONS_PER_OWNER = 20


class WebhookRefusedError(DeviceSessionError):
    """A subscription that cannot be made as asked (the message says why)."""

    code = "invalid_payload"


class SubscriptionNotFoundError(DeviceSessionError):
    """No such subscription of this identity (another identity's reads the same)."""

    code = "not_found"


@dataclass(frozen=True)
class Subscription:
    id: str
    owner: str
    url: str
    events: tuple[str, ...]  # webhook event types (session.created, session.qr, ...)
    key: str | None  # only this session's events, when set
    secret: str = field(repr=False)  # `whsec_` + base64, as Standard Webhooks has it
    created_at: datetime

    def wants(self, event_type: str, row: SessionRow) -> bool:
        return row.owner == self.owner and event_type in self.events and self.key in (None, row.key)


@dataclass(frozen=True)
class Delivery:
    """One event for one subscription. `message_id` is the event's stable id (the same
    for every subscription and every attempt): the receiver's `webhook-id`."""

    subscription: str
    key: str
    message_id: str
    event_type: str
    body: str  # JSON
    first_at: datetime
    id: int = 0  # the outbox's, once saved
    attempts: int = 0
    next_at: datetime | None = None
    last_error: str | None = None
    dead: bool = False


@dataclass(frozen=True)
class Outgoing:
    """A delivery due now, with where it goes."""

    delivery: Delivery
    url: str
    secret: str = field(repr=False)


class WebhookStore(SessionRowStore, Protocol):
    """The outbox beside the events (synchronous: called on a thread)."""

    def subscriptions(self, owner: str | None = None) -> list[Subscription]:
        """Every subscription of `owner` (None: of everyone), oldest first."""
        ...

    def add_subscription(self, subscription: Subscription) -> None:
        """Add it; the first one (none before) also starts the outbox's rows and position
        from the sessions read model's, in the same transaction (the outbox is not
        filled while there is no subscription)."""
        ...

    def remove_subscription(self, owner: str, subscription_id: str) -> bool:
        """Remove it and its pending deliveries; False if `owner` has no such one."""
        ...

    def due(self, now: datetime, limit: int) -> list[Outgoing]:
        """Deliveries due by `now`, each the oldest pending one of its subscription and
        key (a key's next event waits for the one before: order per key)."""
        ...

    def delivered(self, delivery_id: int) -> None: ...

    def failed(self, delivery: Delivery) -> None:
        """Record an attempt that failed (attempts, next_at, last_error, dead)."""
        ...

    def dead_letters(self, owner: str, limit: int) -> list[Delivery]: ...

    def backlog(self) -> int:
        """Deliveries pending (not dead)."""
        ...


class Renderer(Protocol):
    def __call__(self, event: Event, row: SessionRow) -> tuple[str, str] | None:
        """The event's webhook type and JSON body (a session.qr's carries the QR image:
        only subscribers who asked for session.qr receive it); None for an event
        webhooks do not carry."""
        ...


class Outbox:
    """What each event adds to the outbox (`also` of the outbox's SessionsProjection)."""

    def __init__(self, store: WebhookStore, render: Renderer, clock: Clock) -> None:
        self._store = store
        self._render = render
        self._clock = clock
        self._subscriptions: list[Subscription] = []

    def refresh(self) -> bool:
        """Read the subscriptions again (before each page of the log, on its thread);
        whether there are any."""
        self._subscriptions = self._store.subscriptions()
        return bool(self._subscriptions)

    def deliveries(self, event: Event, row: SessionRow) -> list[Delivery]:
        wanted = [s for s in self._subscriptions if s.owner == row.owner]
        rendered = self._render(event, row) if wanted else None
        if rendered is None:
            return []
        event_type, body = rendered
        # Random, made once per event and kept with its deliveries (the same for every
        # attempt and every subscription): it tells nothing of the key's earlier owners.
        message_id = f"msg_{uuid.uuid4().hex}"
        now = self._clock.now()
        return [
            Delivery(s.id, row.key, message_id, event_type, body, now)
            for s in wanted
            if s.wants(event_type, row)
        ]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter, for `give_up_after` from the first attempt.
    `uniform(a, b)`: a random number between a and b (the adapters' randomness)."""

    uniform: Callable[[float, float], float]
    first_delay: float = 1.0
    max_delay: float = 300.0
    give_up_after: float = 86_400.0

    def after_failure(self, delivery: Delivery, error: str, now: datetime) -> Delivery:
        attempts = delivery.attempts + 1
        ceiling = min(self.max_delay, self.first_delay * 2 ** min(attempts - 1, 30))
        delay = self.uniform(ceiling / 2, ceiling)
        dead = (now - delivery.first_at).total_seconds() + delay > self.give_up_after
        return _replace(
            delivery,
            attempts=attempts,
            next_at=now + timedelta(seconds=delay),
            last_error=error[:300],
            dead=dead,
        )


def _replace(delivery: Delivery, **changes: Any) -> Delivery:
    return Delivery(**{**vars(delivery), **changes})


class WebhookSubscriptions:
    """The use cases behind the REST routes: an identity's own subscriptions only."""

    def __init__(
        self,
        store: WebhookStore,
        access: StoreAccess,
        clock: Clock,
        check_url: Callable[[str], Any],
        event_types: Sequence[str],
        new_secret: Callable[[], str],
        made: Callable[[], None] | None = None,
    ) -> None:
        """`check_url(url)`: awaitable; raises WebhookRefusedError for a URL webhooks
        may not call (SSRF). `new_secret()`: a secret for a subscription given none.
        `made()`: after a subscription is saved (to wake the outbox's follower)."""
        self._made = made
        self._new_secret = new_secret
        self._store = store
        self._access = access
        self._clock = clock
        self._check_url = check_url
        self.event_types = tuple(event_types)

    async def create(
        self, owner: str, url: str, events: Sequence[str], key: str | None, secret: str | None
    ) -> Subscription:
        unknown = sorted(set(events) - set(self.event_types))
        if unknown or not events:
            raise WebhookRefusedError(
                f"events must be some of {', '.join(self.event_types)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        await self._check_url(url)
        mine = await self._access.read(self._store.subscriptions, owner)
        if len(mine) >= MAX_SUBSCRIPTIONS_PER_OWNER:
            raise WebhookRefusedError(
                f"an identity may have at most {MAX_SUBSCRIPTIONS_PER_OWNER} subscriptions"
            )
        subscription = Subscription(
            id=f"wh_{uuid.uuid4().hex}",
            owner=owner,
            url=url,
            events=tuple(dict.fromkeys(events)),
            key=key,
            secret=secret or self._new_secret(),
            created_at=self._clock.now(),
        )
        await self._access.read(self._store.add_subscription, subscription)
        if self._made is not None:
            self._made()
        return subscription

    async def of(self, owner: str) -> list[Subscription]:
        return await self._access.read(self._store.subscriptions, owner)

    async def delete(self, owner: str, subscription_id: str) -> None:
        if not await self._access.read(self._store.remove_subscription, owner, subscription_id):
            raise SubscriptionNotFoundError("no such webhook subscription")

    async def dead_letters(self, owner: str, limit: int = 100) -> list[Delivery]:
        return await self._access.read(self._store.dead_letters, owner, limit)
