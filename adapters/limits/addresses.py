"""Whom per-address limits count: an IPv4 address, or an IPv6 /64.

An IPv6 host is usually given a whole /64 (stateless autoconfiguration, privacy
addresses, a /64 per subscriber). Counted address by address, one client would have 2^64
fresh addresses to escape every per-address cap and ban with; a /64 is what one client
holds. An IPv4 address written as IPv6 (`::ffff:203.0.113.9`, from dual-stack sockets and
proxies) is that IPv4 address. Anything else (a Unix socket's name, say) counts as given.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import Counter

IPV6_CLIENT_PREFIX = 64


@functools.lru_cache(maxsize=4096)  # the addresses of the clients connecting lately
def counted(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # no zone (fe80::1%eth0)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))


class AddressCounts:
    """How many of something each client address holds, under `cap` (0: no cap). An
    address's first refusal is logged (`what` names the things counted, `refusal` what
    is done), the next one only once it has held fewer again."""

    def __init__(
        self, cap: int, what: str, log: logging.Logger, refusal: str = "refusing more"
    ) -> None:
        self.cap = cap
        self._what = what
        self._refusal = refusal
        self._log = log
        self._held: Counter[str] = Counter()
        self._refusing: set[str] = set()

    def full(self, address: str) -> bool:
        if not self.cap or self._held[address] < self.cap:
            return False
        if address not in self._refusing:
            self._refusing.add(address)
            self._log.warning("%s holds %d %s: %s", address, self.cap, self._what, self._refusal)
        return True

    def add(self, address: str) -> None:
        self._held[address] += 1

    def remove(self, address: str) -> None:
        self._held[address] -= 1
        self._refusing.discard(address)
        if not self._held[address]:
            del self._held[address]
