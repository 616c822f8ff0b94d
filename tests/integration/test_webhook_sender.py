"""The webhook sender against a real receiver: the address is checked at every send and
the request goes to the address that was checked; retries back off with jitter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks import Webhook

from adapters.clock import SystemClock
from adapters.webhooks.messages import as_sent, new_secret
from adapters.webhooks.sender import AddressPolicy, HttpSender
from domain.application.webhooks import Delivery, Outgoing, RetryPolicy
from tests.helpers import rss_mb
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


@contextlib.asynccontextmanager
async def raw_receiver(
    answer: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A receiver that reads the request's head and answers with `answer`: an URL."""

    answering: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answering.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                await answer(writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        for task in answering:  # an answer still trickling: its connection closed too
            task.cancel()
        await asyncio.gather(*answering, return_exceptions=True)
        await server.wait_closed()


async def test_a_receiver_s_endless_answer_is_never_read() -> None:
    """A subscriber's receiver answered 200 with 300 MB: the sender read it all into
    memory (and a longer or endless one, for as long as it flowed)."""
    chunk = b"x" * 2**20

    async def flood(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (300 * len(chunk)))
        for _ in range(300):
            writer.write(chunk)
            await writer.drain()

    sender = HttpSender(AddressPolicy(["127.0.0.1/32"]), SystemClock())
    before = rss_mb()
    try:
        async with raw_receiver(flood) as url:
            assert await asyncio.wait_for(sender(outgoing(url, new_secret())), 30) is None
    finally:
        await sender.close()
    assert rss_mb() - before < 50


async def test_a_receiver_that_trickles_is_given_up_on_in_its_timeout() -> None:
    """Each byte within the read timeout kept the exchange going: a receiver trickling
    its headers (or its body) held a delivery for as long as it liked."""

    async def trickle_head(writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    async def trickle_body(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            writer.write(b"z")
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = HttpSender(AddressPolicy(["127.0.0.1/32"]), SystemClock(), timeout=1.0)
    try:
        async with raw_receiver(trickle_head) as url:
            error = await asyncio.wait_for(sender(outgoing(url, new_secret())), 10)
            assert error == "no answer within 1 s"
        async with raw_receiver(trickle_body) as url:  # its status is all a delivery needs
            assert await asyncio.wait_for(sender(outgoing(url, new_secret())), 10) is None
    finally:
        await sender.close()
