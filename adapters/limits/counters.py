"""Counting against `limits` rules, and telling a refused caller when to come back.

Sliding-window counters, not moving windows: in memory, `limits`' moving window keeps a
timestamp per request and an expiry task that walks every key through a worker thread
(62 µs of CPU per request under load, measured; 14.5 µs for the counter), and that task
raced `clear()` on disconnect (KeyError tracebacks in the log).
"""

from __future__ import annotations

import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter


class Counters:
    def __init__(self) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

    async def hit(self, rule: RateLimitItem, scope: str, who: str, cost: int = 1) -> float | None:
        """Count `cost` against `rule` for `who`: None if allowed, else the seconds until
        the same cost can be allowed again — never "now": at least the time the rule
        takes to allow that much."""
        if await self._limiter.hit(rule, scope, who, cost=cost):
            return None
        stats = await self._limiter.get_window_stats(rule, scope, who)
        spacing = rule.get_expiry() * cost / rule.amount
        return max(spacing, stats.reset_time - time.time())
