"""The lease log, `pairgate_lease_log`: a row per grant (its key, holder and times), so
auditors can check that no key ever had two holders at once.

With PAIRGATE_CIPHER_KEY it holds no key in plain text, like the read models
(sealing.py): `key` is the key blinded (a keyed hash: the same for the same key, so
grants are found, and compared, by it) and `sealed_key` the key encrypted, which is read
only to learn a dead process's keys. Without a cipher key both hold the key itself.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from adapters.store.sealing import Sealer

LOG_TABLE = "pairgate_lease_log"
BATCH = 500  # rows written before the sealed column, converted per statement

Connection = psycopg.AsyncConnection[Any]


async def prepare(connection: Connection, sealer: Sealer) -> int:
    """Create the table (or add what an older version lacks) and convert the rows it
    wrote; the number converted."""
    table = sql.Identifier(LOG_TABLE)
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
    for column in ("key", "holder"):  # open grants, by key and by holder
        await connection.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}) WHERE released_at IS NULL").format(
                sql.Identifier(f"{LOG_TABLE}_open_{column}"), table, sql.Identifier(column)
            )
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
    row's lock), so it is never blinded twice."""
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
                "UPDATE {} AS grants SET key = new.key, sealed_key = new.sealed_key "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS new(id, key, sealed_key) "
                "WHERE grants.id = new.id AND grants.sealed_key IS NULL"
            ).format(table),
            (ids, [sealer.blind(row[1]) for row in rows], [sealer.seal(row[1]) for row in rows]),
        )
        converted += updated.rowcount
        after = ids[-1]
