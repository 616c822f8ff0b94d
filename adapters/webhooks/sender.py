"""Sending a delivery over HTTP (httpx), to an address checked when it is sent.

A webhook URL names a host; its addresses are resolved, every one must be public (or
inside a network of PAIRGATE_WEBHOOK_ALLOWED_NETWORKS), and the request connects to the
address that was checked, not to whatever a second lookup would return (no DNS
rebinding). HTTPS still verifies the certificate against the URL's host name (SNI).
Redirects are not followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

import httpx

from adapters.webhooks.messages import as_sent, signed_headers
from domain.application.ports import Clock
from domain.application.webhooks import Outgoing, WebhookRefusedError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0


class AddressPolicy:
    """Which addresses webhooks may reach: public ones, and the allowed networks."""

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self.allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in allowed
        )

    def permits(self, address: Address) -> bool:
        if any(address in network for network in self.allowed):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.permits(address.ipv4_mapped)
        return address.is_global and not address.is_multicast

    async def addresses(self, host: str, port: int | None) -> list[Address] | None:
        """The host's addresses, each once, in the resolver's order (None: it cannot be
        resolved)."""
        lookup = asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        try:
            found = await asyncio.wait_for(lookup, RESOLVE_TIMEOUT)
        except (OSError, UnicodeError, TimeoutError):
            return None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
        return list(dict.fromkeys(addresses))

    def refusal(self, host: str, addresses: list[Address]) -> str | None:
        """Why these addresses of `host` may not be reached (None: they all may)."""
        refused = [a for a in addresses if not self.permits(a)]
        if not addresses:
            return f"{host} is nothing"
        if not refused:
            return None
        return host if host == str(refused[0]) else f"{host} is {refused[0]}"

    async def resolve(self, url: str) -> tuple[SplitResult, list[Address]]:
        """The URL's parts and the checked addresses to connect to, in the resolver's order
        (WebhookRefusedError if the URL is not one webhooks may call)."""
        parts = _parse(url)
        host = parts.hostname or ""
        addresses = await self.addresses(
            host, parts.port or (443 if parts.scheme == "https" else 80)
        )
        if addresses is None:
            raise WebhookRefusedError(f"the webhook host {host!r} cannot be resolved")
        if (why := self.refusal(host, addresses)) is not None:
            raise WebhookRefusedError(
                "webhook URLs may not point at loopback, link-local or private addresses "
                f"({why}); PAIRGATE_WEBHOOK_ALLOWED_NETWORKS names exceptions"
            )
        return parts, addresses

    async def check(self, url: str) -> None:
        await self.resolve(url)


def at_address(parts: SplitResult, address: Address) -> SplitResult:
    """The URL with its host replaced by `address` (checked: connect to it, not to what
    the name resolves to next), its user info and port kept."""
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo = parts.netloc.rpartition("@")[0]
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{userinfo}@{literal}{port}" if userinfo else f"{literal}{port}")


def _parse(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        raise WebhookRefusedError(f"a webhook URL is printable ASCII, at most {MAX_URL_LENGTH}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise WebhookRefusedError("the webhook URL cannot be read") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefusedError("a webhook URL is http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefusedError("a webhook URL may not carry credentials; use the secret")
    return parts


class HttpSender:
    """dispatch.Sender over one httpx client (connections kept alive per receiver).

    A receiver is the subscriber's, so it is not trusted to behave: `timeout` bounds the
    whole exchange (httpx's timeout bounds each read, which a receiver trickling a byte
    at a time never exceeds), and the answer's body is never read (its status is all a
    delivery needs; a receiver answering gigabytes would otherwise fill the memory).
    """

    def __init__(self, policy: AddressPolicy, clock: Clock, timeout: float = 10.0) -> None:
        self._policy = policy
        self._clock = clock
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        )

    async def __call__(self, outgoing: Outgoing) -> str | None:
        delivery = outgoing.delivery
        try:
            parts, addresses = await self._policy.resolve(outgoing.url)
        except WebhookRefusedError as refused:
            return refused.message
        now = self._clock.now()
        body = as_sent(delivery.body, now)
        headers = signed_headers(outgoing.secret, delivery.message_id, int(now.timestamp()), body)
        headers["host"] = parts.netloc.rpartition("@")[2]
        extensions = {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
        error = "no address"
        for address in addresses:  # each one checked; the next only if this one is unreachable
            target = at_address(parts, address).geturl()
            request = self._client.stream(
                "POST", target, content=body.encode(), headers=headers, extensions=extensions
            )
            try:
                async with asyncio.timeout(self._timeout), request as response:
                    status = response.status_code  # (its body is never read)
            except httpx.ConnectError as unreachable:
                error = _described(unreachable)
                continue
            except httpx.HTTPError as failed:
                return _described(failed)
            except TimeoutError:
                return f"no answer within {self._timeout:g} s"
            return None if 200 <= status < 300 else f"HTTP {status}"
        return error

    async def close(self) -> None:
        await self._client.aclose()


def _described(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:300] if str(error) else type(error).__name__
