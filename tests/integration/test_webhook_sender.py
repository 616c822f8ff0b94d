"""The webhook sender against a real receiver: the address is checked at every send and
the request goes to the address that was checked; retries back off with jitter."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

from adapters.clock import SystemClock
from adapters.webhooks.messages import as_sent, new_secret
from adapters.webhooks.sender import AddressPolicy, HttpSender
from domain.application.webhooks import Delivery, Outgoing, RetryPolicy
from tests.webhook_receiver import receiver


def outgoing(url: str, secret: str) -> Outgoing:
    now = datetime.now(UTC)
    body = '{"type":"session.ready","timestamp":"x","data":{"key":"k"}}'
    return Outgoing(Delivery("wh_1", "k", "msg_1_4", "session.ready", body, now), url, secret)


async def test_each_send_checks_the_address_and_connects_to_the_checked_one() -> None:
    secret = new_secret()
    async with receiver() as got:
        port = got.url.rsplit(":", 1)[1]
        named = outgoing(f"http://localhost:{port}/hook", secret)
        allowed = HttpSender(AddressPolicy(["127.0.0.1/32", "::1/128"]), SystemClock())
        refused = HttpSender(AddressPolicy(), SystemClock())
        try:
            assert await allowed(named) is None
            # The same subscription, once its address is no longer allowed: never sent.
            error = await refused(named)
            assert error is not None and "loopback" in error
        finally:
            await allowed.close()
            await refused.close()
    [sent] = got.received
    assert sent.headers["host"] == f"localhost:{port}"  # the name, sent to its checked address
    assert Webhook(secret).verify(sent.body, sent.headers)["data"] == {"key": "k"}


def test_retries_back_off_with_jitter_then_give_up() -> None:
    policy = RetryPolicy(random.uniform, first_delay=1.0, max_delay=8.0, give_up_after=60.0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    delivery = Delivery("wh_1", "k", "m", "session.ready", "{}", start)
    now, waits = start, []
    while not delivery.dead:
        delivery = policy.after_failure(delivery, "HTTP 500", now)
        assert delivery.next_at is not None
        waits.append((delivery.next_at - now).total_seconds())
        now = delivery.next_at
    ceilings = [min(8.0, 2.0**n) for n in range(len(waits))]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    assert len(set(waits)) > 3  # jittered, not lockstep
    assert now - start <= timedelta(seconds=60 + 8) and delivery.attempts == len(waits)
    assert delivery.last_error == "HTTP 500"


def test_a_qr_image_goes_out_only_while_its_code_is_valid() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    body = json.dumps(
        {"type": "session.qr", "data": {"key": "k", "qr": "data:image/png;base64,AAAA",
                                        "expires_at": (now + timedelta(seconds=5)).isoformat()}}
    )  # fmt: skip
    assert as_sent(body, now) == body
    later = json.loads(as_sent(body, now + timedelta(seconds=5)))
    assert later["data"]["qr"] is None and later["data"]["key"] == "k"
