"""The names a deployment's leases and forwarded commands go by in PostgreSQL."""

from __future__ import annotations

import hashlib

RPC_CHANNEL = "pairgate_rpc"


def lock_id(key: str, schema: str | None = None) -> int:
    """The key's advisory lock: 64 bits of its SHA-256 (collisions: about 2^-64).

    Advisory locks and NOTIFY channels are the database's, not a schema's: deployments in
    other schemas of the database must neither hold this deployment's keys nor hear its
    commands, so a schema names both (the default schema keeps the names it always had).
    """
    prefix = b"pairgate:" if schema is None else f"pairgate:{schema}:".encode()
    return int.from_bytes(hashlib.sha256(prefix + key.encode()).digest()[:8], signed=True)


def rpc_channel(schema: str | None = None) -> str:
    """The NOTIFY channel of forwarded commands, one per schema (see lock_id)."""
    if schema is None:
        return RPC_CHANNEL
    return f"{RPC_CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
