"""Which proxies a pairing may have its engine dial.

A client names its pairing's proxy, and the engine dials it from the server: a proxy at
`127.0.0.1:6379` or `10.0.0.5:22` would have the server open connections into its own
network for anyone who may pair (a port scan, a first byte to a service that trusts its
network). So, as for webhooks, a pairing's own proxy must be at a public address or in
PAIRGATE_PROXY_ALLOWED_NETWORKS; the operator's PAIRGATE_PROXY is trusted as it is.

The check is made at every dial (a pairing, each resume), and the engine is handed the
address checked (for http and socks5 proxies; an https proxy keeps its name, which its
certificate must match): a name that resolves elsewhere a moment later (DNS rebinding)
is never dialed.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from adapters.webhooks.sender import AddressPolicy, at_address
from domain.model.errors import ProxyRefusedError


class ProxyPolicy:
    def __init__(self, allowed: Sequence[str] = (), trusted: str | None = None) -> None:
        self._addresses = AddressPolicy(allowed)
        self._trusted = trusted

    async def __call__(self, proxy: str) -> str:
        """The proxy URL to dial, its host the address checked; ProxyRefusedError if none
        of its addresses may be dialed (the message names its host, never credentials)."""
        if proxy == self._trusted:
            return proxy
        parts = urlsplit(proxy)
        host = parts.hostname or ""
        addresses = await self._addresses.addresses(host, parts.port)
        if addresses is None:
            raise ProxyRefusedError(f"the proxy host {host!r} cannot be resolved")
        if (why := self._addresses.refusal(host, addresses)) is not None:
            raise ProxyRefusedError(
                "a pairing's proxy may not be at a loopback, link-local or private address "
                f"({why}); PAIRGATE_PROXY_ALLOWED_NETWORKS names exceptions"
            )
        if parts.scheme.lower() == "https":
            return proxy
        return at_address(parts, addresses[0]).geturl()
