"""The fan-out secret of a PostgreSQL deployment without a cipher key: 32 random bytes in
`pairgate_fanout_secret`, made by the first process that asks and read by every other
one. Whoever can read the store is of the deployment; another deployment sharing its
Redis (in another schema or database) is not, and cannot sign emissions for it
(adapters/socketio/signed_fanout.py)."""

from __future__ import annotations

import secrets

from psycopg import sql

from adapters.store.config import StoreConfig, postgres_conninfo, postgres_table
from adapters.store.lease_ids import preparing

TABLE = "pairgate_fanout_secret"


def shared_secret(config: StoreConfig) -> bytes:
    _, schema = postgres_conninfo(config)
    with postgres_table(config, TABLE) as (pg, table), pg.transaction():
        pg.execute("SELECT pg_advisory_xact_lock(%s)", (preparing(TABLE, schema),))
        pg.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (one boolean PRIMARY KEY DEFAULT true "
                "CHECK (one), secret bytea NOT NULL)"
            ).format(table)
        )
        pg.execute(
            sql.SQL("INSERT INTO {} (secret) VALUES (%s) ON CONFLICT DO NOTHING").format(table),
            (secrets.token_bytes(32),),
        )
        row = pg.execute(sql.SQL("SELECT secret FROM {}").format(table)).fetchone()
    assert row is not None
    return bytes(row[0])
