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

Sliding-window counters, not moving windows: in memory, `limits`' moving window keeps a
timestamp per request and an expiry task that walks every key through a worker thread
(62 µs of CPU per request under load, measured; 14.5 µs for the counter), and that task
raced `clear()` on disconnect (KeyError tracebacks in the log).
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

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
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._banned: dict[str, float] = {}

    async def admit(self, connection: str, identity: str, key: str | None = None) -> None:
        """Count one request; LimitReachedError (with `retry_after`) if it is one too many."""
        for (scope, rules), who in zip(self._rules, (connection, identity), strict=True):
            for rule in rules:
                if not await self._limiter.hit(rule, scope, who):
                    stats = await self._limiter.get_window_stats(rule, scope, who)
                    # Never "now": at least the spacing the rule allows between requests.
                    spacing = rule.get_expiry() / rule.amount
                    retry_after = max(spacing, stats.reset_time - time.time())
                    raise LimitReachedError(
                        f"too many requests from this {scope} (limit {rule}); "
                        f"retry in {retry_after:.1f} s",
                        key=key,
                        retry_after=round(retry_after, 3),
                    )

    async def strike(self, connection: str) -> bool:
        """Count a refusal; True once the connection has had too many (hang up on it)."""
        return not await self._limiter.hit(STRIKES, "strikes", connection)

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
