"""The lease log, `pairgate_lease_log`: a row per grant (its key, holder and times), so
auditors can check that no key ever had two holders at once.

With PAIRGATE_CIPHER_KEY it holds no key in plain text, like the read models
(sealing.py): `key` is the key blinded (a keyed hash: the same for the same key, so
grants are found, and compared, by it) and `sealed_key` the key encrypted, which is read
only to learn a dead process's keys. Without a cipher key both hold the key itself.

A key has at most one open grant (`released_at` NULL): a unique index on the open
grants' keys says so, and it is the lease itself (lease_grants.py). A table an older
version made (leases by advisory locks, no such index) gets it at the first open, its
duplicate open grants, if any, closed first (the newest of a key stays open).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from adapters.store.lease_ids import preparing
from adapters.store.sealing import Sealer

LOG_TABLE = "pairgate_lease_log"
BATCH = 500  # rows written before the sealed column, converted per statement

Connection = psycopg.AsyncConnection[Any]


async def prepare(connection: Connection, sealer: Sealer, schema: str | None = None) -> int:
    """Create the table (or add what an older version lacks) and convert the rows it
    wrote; the number converted. (One process at a time: `schema`'s lock, for as long as
    the transaction lasts.)"""
    table = sql.Identifier(LOG_TABLE)
    one_open = f"{LOG_TABLE}_one_open"
    async with connection.transaction():
        await connection.execute(
            "SELECT pg_advisory_xact_lock(%s)", (preparing(LOG_TABLE, schema),)
        )
        await connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, key text NOT NULL, "
                "holder text NOT NULL, acquired_at timestamptz NOT NULL DEFAULT now(), "
                "released_at timestamptz, sealed_key text)"
            ).format(table)
        )
        await connection.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS sealed_key text").format(table)
        )
        found = await (await connection.execute("SELECT to_regclass(%s)", (one_open,))).fetchone()
        if not found or found[0] is None:
            # No process of an older version writes while this is done.
            await connection.execute(
                sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table)
            )
            await connection.execute(
                sql.SQL(
                    "UPDATE {} SET released_at = now() WHERE released_at IS NULL AND id NOT IN "
                    "(SELECT max(id) FROM {} WHERE released_at IS NULL GROUP BY key)"
                ).format(table, table)
            )
            await connection.execute(
                sql.SQL("CREATE UNIQUE INDEX {} ON {} (key) WHERE released_at IS NULL").format(
                    sql.Identifier(one_open), table
                )
            )
            # (It served as the open grants' index by key.)
            await connection.execute(
                sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{LOG_TABLE}_open_key"))
            )
        await connection.execute(  # open grants, by holder
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (holder) WHERE released_at IS NULL"
            ).format(sql.Identifier(f"{LOG_TABLE}_open_holder"), table)
        )
        # The rows left to convert (none, once converted: every open looks, at no cost).
        await connection.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (id) WHERE sealed_key IS NULL").format(
                sql.Identifier(f"{LOG_TABLE}_plain"), table
            )
        )
    return await convert(connection, sealer)


async def convert(connection: Connection, sealer: Sealer) -> int:
    """Rows with no sealed key hold the key in plain text: blind and seal it, a batch per
    statement (each its own commit on an autocommit connection). A row another process
    converted meanwhile is left alone (`sealed_key IS NULL` is checked again under the
    row's lock), so it is never blinded twice. An open grant whose key, blinded, has
    another open grant already (one written meanwhile by a process of this version, which
    could not see it) is closed: a key has one open grant."""
    table = sql.Identifier(LOG_TABLE)
    converted, after = 0, 0
    while True:
        rows = await (
            await connection.execute(
                sql.SQL(
                    "SELECT id, key FROM {} WHERE sealed_key IS NULL AND id > %s "
                    "ORDER BY id LIMIT %s"
                ).format(table),
                (after, BATCH),
            )
        ).fetchall()
        if not rows:
            return converted
        ids = [row[0] for row in rows]
        updated = await connection.execute(
            sql.SQL(
                "UPDATE {} AS grants SET key = new.key, sealed_key = new.sealed_key, "
                "released_at = CASE WHEN grants.released_at IS NULL AND EXISTS (SELECT 1 "
                "FROM {} AS other WHERE other.key = new.key AND other.released_at IS NULL "
                "AND other.id <> grants.id) THEN now() ELSE grants.released_at END "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS new(id, key, sealed_key) "
                "WHERE grants.id = new.id AND grants.sealed_key IS NULL"
            ).format(table, table),
            (ids, [sealer.blind(row[1]) for row in rows], [sealer.seal(row[1]) for row in rows]),
        )
        converted += updated.rowcount
        after = ids[-1]
