"""Whom per-address limits count (adapters/limits/addresses.py)."""

from __future__ import annotations

import pytest

from adapters.limits.addresses import counted


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::7", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::7", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
        ("/run/pairgate.sock", "/run/pairgate.sock"),
    ],
)
def test_a_client_is_an_ipv4_address_or_an_ipv6_64(address: str, client: str) -> None:
    assert counted(address) == client
