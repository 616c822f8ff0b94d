"""The Redis of the Socket.IO fan-out, read and reached before pairgate serves: a wrong
URL or a Redis that does not answer stops start-up with one line naming where it is
(never its password), instead of a server that starts and is never ready."""

from __future__ import annotations

from typing import Any

import redis
from redis.connection import parse_url

URL_SHAPE = "redis://[:password@]host:port/db, rediss://... or unix:///path"


def redis_target(url: str) -> str:
    """Where a Redis URL points, without its credentials (ValueError if it is not one)."""
    parts = _parts(url)
    if "path" in parts:
        return f"unix:{parts['path']}"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 6379)}"


def reach_redis(url: str, timeout: float) -> None:
    """One PING; ConnectionError saying where and why (never the password) if no answer."""
    password = _parts(url).get("password")
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as error:
        reason = " ".join(str(error).split())
        if password:
            reason = reason.replace(password, "***")
        raise ConnectionError(f"cannot reach Redis at {redis_target(url)}: {reason}") from None
    finally:
        client.close()


def _parts(url: str) -> dict[str, Any]:
    try:
        parts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        raise ValueError(f"must be {URL_SHAPE}") from None
    return parts
