"""Leases of many keys in one transaction (a takeover's batch): the statements
PostgresLeases.acquire_many runs on its lock connection, whatever the number of keys.

The rules are `PostgresLeases.acquire`'s, key by key: a key is granted if its advisory
lock is free and no other process that still lives holds an open grant of it (one whose
lease connection PostgreSQL dropped, and which has yet to stop the engine); a grant a dead
holder left open is closed; the new grant is written to the lease log. All of it is one
commit (one WAL flush), where a key at a time costs a commit per key. The log keeps keys
blinded and sealed (lease_log.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from adapters.store.failover import application_name
from adapters.store.lease_ids import lock_id
from adapters.store.lease_log import LOG_TABLE
from adapters.store.sealing import Sealer

Connection = psycopg.AsyncConnection[Any]


async def grant_many(
    connection: Connection,
    keys: Sequence[str],
    holder: str,
    schema: str | None,
    sealer: Sealer,
) -> list[str]:
    """The keys of `keys` (distinct, none held by `holder` yet) granted to `holder`, in a
    transaction the caller opened. The locks of the others are left as they were."""
    ids = [lock_id(key, schema) for key in keys]
    locked = await (
        await connection.execute(
            "SELECT key FROM unnest(%s::text[], %s::bigint[]) AS t(key, id) "
            "WHERE pg_try_advisory_lock(id)",
            (list(keys), ids),
        )
    ).fetchall()
    granted = [row[0] for row in locked]
    if not granted:
        return []
    blinded = {key: sealer.blind(key) for key in granted}
    # Open grants of other holders that still have a connection (application_name(holder)).
    running = await (
        await connection.execute(
            sql.SQL(
                "SELECT DISTINCT key FROM {} AS grants WHERE key = ANY(%s) "
                "AND released_at IS NULL AND holder <> %s AND EXISTS ("
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s || grants.holder)"
            ).format(sql.Identifier(LOG_TABLE)),
            (list(blinded.values()), holder, application_name("")),
        )
    ).fetchall()
    if running:
        running_blinds = {row[0] for row in running}
        refused = {key for key, blind in blinded.items() if blind in running_blinds}
        await unlock_many(connection, sorted(refused), schema)
        granted = [key for key in granted if key not in refused]
        if not granted:
            return []
    # A holder that died left its grants open: they ended when its locks were freed.
    await connection.execute(
        sql.SQL(
            "UPDATE {} SET released_at = now() WHERE key = ANY(%s) AND released_at IS NULL"
        ).format(sql.Identifier(LOG_TABLE)),
        ([blinded[key] for key in granted],),
    )
    await connection.execute(
        sql.SQL(
            "INSERT INTO {} (key, sealed_key, holder) "
            "SELECT key, sealed_key, %s FROM unnest(%s::text[], %s::text[]) AS t(key, sealed_key)"
        ).format(sql.Identifier(LOG_TABLE)),
        (holder, [blinded[key] for key in granted], [sealer.seal(key) for key in granted]),
    )
    return granted


async def unlock_many(connection: Connection, keys: Sequence[str], schema: str | None) -> None:
    """Give up these keys' advisory locks (PostgreSQL warns of those not held, and goes on)."""
    await connection.execute(
        "SELECT pg_advisory_unlock(id) FROM unnest(%s::bigint[]) id",
        ([lock_id(key, schema) for key in keys],),
    )
