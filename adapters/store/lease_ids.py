"""The names a deployment's leases and forwarded commands go by in PostgreSQL."""

from __future__ import annotations

import hashlib

RPC_CHANNEL = "pairgate_rpc"


def lock_id(name: str, schema: str | None = None) -> int:
    """The advisory lock named `name` (a process's, a table's preparation): 64 bits of
    its SHA-256 (collisions: about 2^-64).

    Advisory locks and NOTIFY channels are the database's, not a schema's: deployments in
    other schemas of the database must neither hold this deployment's locks nor hear its
    commands, so a schema names both (the default schema keeps the names it always had).
    """
    prefix = b"pairgate:" if schema is None else f"pairgate:{schema}:".encode()
    return int.from_bytes(hashlib.sha256(prefix + name.encode()).digest()[:8], signed=True)


def preparing(table: str, schema: str | None = None) -> int:
    """The lock held while a process creates or converts `table` (one process at a time;
    a name with a space is never another kind of lock's)."""
    return lock_id(f" prepare {table}", schema)


def rpc_channel(schema: str | None = None) -> str:
    """The NOTIFY channel of forwarded commands, one per schema (see lock_id)."""
    if schema is None:
        return RPC_CHANNEL
    return f"{RPC_CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
