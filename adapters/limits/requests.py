"""Request rate limits, per connection and per identity, from the `limits` package.

Rules are `limits` strings such as "20/second;300/minute". A request counts against its
connection first and then against its identity, so one flooding tab exhausts its own
allowance before its identity's, and a flooding identity cannot starve others: every
refusal is answered with `rate_limited` and the seconds until a retry can succeed. A
connection that keeps sending after `STRIKES` refusals is one that ignores those hints:
the gateway hangs up on it, which is the only way to stop paying for its messages.

What "connection" and "identity" are is the caller's choice. The Socket.IO gateway
counts a connection by who opened it (identity and address), not by its sid, so that
reconnecting buys neither a fresh allowance nor a clean record of strikes; and, without
tokens, an identity by its address. Counters are not cleared when a connection closes:
they expire with their windows (the storage drops expired keys by itself).
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many

from adapters.limits.counters import Counters
from domain.model.errors import LimitReachedError

# Refusals a connection may collect before it is cut off; then its identity (or, without
# tokens, its address) may not connect again for BAN_SECONDS.
STRIKES = parse_many("20/10 seconds")[0]
BAN_SECONDS = 10.0


class RequestLimits:
    def __init__(self, per_connection: str, per_identity: str) -> None:
        self._rules: list[tuple[str, list[RateLimitItem]]] = [
            ("connection", parse_many(per_connection) if per_connection else []),
            ("identity", parse_many(per_identity) if per_identity else []),
        ]
        self._counters = Counters()
        self._banned: dict[str, float] = {}

    async def admit(self, connection: str, identity: str, key: str | None = None) -> None:
        """Count one request; LimitReachedError (with `retry_after`) if it is one too many."""
        for (scope, rules), who in zip(self._rules, (connection, identity), strict=True):
            for rule in rules:
                if (retry_after := await self._counters.hit(rule, scope, who)) is not None:
                    raise LimitReachedError(
                        f"too many requests from this {scope} (limit {rule}); "
                        f"retry in {retry_after:.1f} s",
                        key=key,
                        retry_after=round(retry_after, 3),
                    )

    async def strike(self, connection: str) -> bool:
        """Count a refusal; True once the connection has had too many (hang up on it)."""
        return await self._counters.hit(STRIKES, "strikes", connection) is not None

    async def ban(self, peer: str) -> None:
        self._banned[peer] = time.monotonic() + BAN_SECONDS

    async def banned_for(self, peer: str) -> float | None:
        """Seconds the peer must still wait before connecting again, or None."""
        until = self._banned.get(peer)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._banned[peer]
            return None
        return left
