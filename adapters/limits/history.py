"""How many history records each identity may read in a while, over HTTP and Socket.IO.

A page of history costs the server in proportion to its records (each is decoded,
replayed and serialised), so this allowance counts records, not requests: a client
asking for the largest pages as fast as it may send still gets a bounded share of the
CPU. A page is charged the records it asks for (`limit`), before it is read.
"""

from __future__ import annotations

from limits import RateLimitItem, parse_many

from adapters.limits.counters import Counters
from domain.model.errors import LimitReachedError


class HistoryAllowance:
    """`rate` in `limits` notation, counted in records ("1000/second;20000/minute");
    empty: no limit. Every rule must allow at least one page of `largest_page` records."""

    def __init__(self, rate: str, largest_page: int) -> None:
        self._rules: list[RateLimitItem] = parse_many(rate) if rate else []
        for rule in self._rules:
            if rule.amount < largest_page:
                raise ValueError(f"{rule} allows less than one page of {largest_page} records")
        self._counters = Counters()

    async def take(self, who: str, records: int, key: str | None = None) -> None:
        """Charge `records` to `who`; LimitReachedError (with `retry_after`) if too many."""
        for rule in self._rules:
            if (retry_after := await self._counters.hit(rule, "history", who, records)) is not None:
                raise LimitReachedError(
                    f"too many history records read (limit {rule}; this page asks for "
                    f"{records}); retry in {retry_after:.1f} s",
                    key=key,
                    retry_after=round(retry_after, 3),
                )
