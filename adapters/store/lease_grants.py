"""Grants of keys in the lease log: the statements PostgresLeases runs on its lock
connection to take and give up leases, a whole batch (a takeover's, a shutdown's) in a
few set-based statements, whatever the number of keys.

A key's lease is its open grant in `pairgate_lease_log` (`released_at` NULL): a unique
index on the key of the open grants (lease_log.py) lets a key have one at a time, so no
advisory lock per key is taken, and the PostgreSQL locks a process holds do not grow
with its devices (PostgreSQL's lock table is the whole server's, and full it refuses
everyone). A key is granted if it has no open grant, or if its open grant's holder has
no connection left (none named `application_name(holder)` in pg_stat_activity: it died;
a process that lost its lease connection but lives keeps its grants until it has
stopped their engines and closed them itself). Granting is two statements in the
caller's transaction: close the grants dead holders left open (and this holder's own
stale ones: keys it no longer counts as held), then insert the new grants with
`ON CONFLICT DO NOTHING` on the unique index. Of two processes granting a key at once
the unique index (with the closed row's lock) lets one insert; the other waits for it to
commit and inserts nothing. Keys go in sorted order (the blinded key's) in both
statements, so two batches wait on each other in one order and never deadlock. The log
keeps keys blinded and sealed (lease_log.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from psycopg import sql

from adapters.store.failover import application_name
from adapters.store.lease_log import LOG_TABLE
from adapters.store.sealing import Sealer

Connection = psycopg.AsyncConnection[Any]


async def grant_many(
    connection: Connection, keys: Sequence[str], holder: str, sealer: Sealer
) -> list[str]:
    """The keys of `keys` (distinct, none held by `holder` yet) granted to `holder`, in a
    transaction the caller opened."""
    if not keys:
        return []
    blinded = {sealer.blind(key): key for key in keys}
    blinds = sorted(blinded)
    table = sql.Identifier(LOG_TABLE)
    # A grant whose holder has no connection left ended when it died; this holder's own
    # open grants of keys it wants are stale (a grant committed as its connection broke).
    await connection.execute(
        sql.SQL(
            "UPDATE {} SET released_at = now() WHERE id IN (SELECT id FROM {} "
            "WHERE key = ANY(%s) AND released_at IS NULL AND (holder = %s OR holder NOT IN ("
            "SELECT substr(application_name, %s) FROM pg_stat_activity "
            "WHERE starts_with(application_name, %s))) ORDER BY key FOR UPDATE)"
        ).format(table, table),
        (blinds, holder, len(application_name("")) + 1, application_name("")),
    )
    inserted = await (
        await connection.execute(
            sql.SQL(
                "INSERT INTO {} (key, sealed_key, holder) "
                "SELECT key, sealed_key, %s FROM unnest(%s::text[], %s::text[]) "
                "AS t(key, sealed_key) ORDER BY key "
                "ON CONFLICT (key) WHERE released_at IS NULL DO NOTHING RETURNING id, key"
            ).format(table),
            (holder, blinds, [sealer.seal(blinded[blind]) for blind in blinds]),
        )
    ).fetchall()
    if inserted:
        # A grant begins when it is inserted, which may be after waiting for another
        # process to close the key's previous grant: not at this transaction's start
        # (`now()`, the column's default), which may be before that grant was closed.
        await connection.execute(
            sql.SQL("UPDATE {} SET acquired_at = clock_timestamp() WHERE id = ANY(%s)").format(
                table
            ),
            ([row[0] for row in inserted],),
        )
    return sorted(blinded[row[1]] for row in inserted)


async def release_many(
    connection: Connection, keys: Collection[str], holder: str, sealer: Sealer
) -> None:
    """Close `holder`'s open grants of these keys: others may take them at once."""
    await connection.execute(
        sql.SQL(
            "UPDATE {} SET released_at = now() "
            "WHERE key = ANY(%s) AND holder = %s AND released_at IS NULL"
        ).format(sql.Identifier(LOG_TABLE)),
        (sorted(sealer.blind(key) for key in keys), holder),
    )
