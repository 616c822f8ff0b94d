"""The marker of a `pairgate rekey` under way: while it is there the store's rows may be
sealed with two keys, and no process may serve them (`refuse_during_rekey`).

On SQLite it is `rekey.json` in the data directory, beside the store. On PostgreSQL it is
the one row of `pairgate_rekey` in the store's schema, so that every process using the
store sees it, on whatever machine it runs (a file is seen on the rekeying machine only).
Either names both keys by fingerprint, never by their text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from psycopg import sql

from adapters.resealing import fingerprint
from adapters.store.config import (
    StoreConfig,
    StoreUnreadableError,
    postgres_conninfo,
    postgres_table,
)

MARKER = "rekey.json"
TABLE = "pairgate_rekey"


class RekeyError(StoreUnreadableError):
    """A rekey cannot start or go on, or one is under way; the message says what to do."""


def marker(data_dir: Path) -> Path:
    return data_dir / MARKER


def under_way(config: StoreConfig) -> dict[str, Any] | None:
    """The unfinished rekey's key fingerprints ({"from", "to"}), or None."""
    path = marker(config.data_dir)
    if path.exists():  # SQLite's, or one an earlier pairgate left beside a PostgreSQL store
        found: dict[str, Any] = json.loads(path.read_text())
        return found
    if config.kind != "postgres":
        return None
    with postgres_table(config, TABLE) as (connection, table):
        if connection.execute("SELECT to_regclass(%s)", (_name(config),)).fetchone() == (None,):
            return None
        row = connection.execute(sql.SQL("SELECT from_key, to_key FROM {}").format(table))
        return next(({"from": old, "to": new} for old, new in row), None)


def refuse_during_rekey(config: StoreConfig) -> None:
    """RekeyError while a rekey of this store is under way (or was killed)."""
    if under_way(config) is not None:
        where = "PostgreSQL store" if config.kind == "postgres" else str(config.data_dir.resolve())
        raise RekeyError(
            f"a `pairgate rekey` of this {where} has not finished: its rows are sealed with "
            "two keys. Run `pairgate rekey` again with the same keys to finish it"
        )


def begin(config: StoreConfig, old_key: str | None, new_key: str) -> bool:
    """Leave the marker (True), or find the one an interrupted run of these keys left
    (False); RekeyError if it names other keys."""
    wanted = {"from": fingerprint(old_key), "to": fingerprint(new_key)}
    found = under_way(config)
    if found is None and config.kind == "postgres":
        found = _claim(config, wanted)
    elif found is None:
        _write_file(marker(config.data_dir), wanted)
    if found is None:
        return True
    if {name: found.get(name) for name in wanted} != wanted:
        raise RekeyError(
            f"an interrupted rekey (key fingerprints {found.get('from')} → {found.get('to')}) "
            "must be finished first, with its keys: PAIRGATE_CIPHER_KEY the old one "
            "(unset if there was none), the new one on standard input"
        )
    return False


def finish(config: StoreConfig) -> None:
    if config.kind == "postgres":
        with postgres_table(config, TABLE) as (connection, table):
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    marker(config.data_dir).unlink(missing_ok=True)


def _claim(config: StoreConfig, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """Insert the store's marker row; the row another run inserted first, if one did."""
    with postgres_table(config, TABLE) as (connection, table):
        connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
                " from_key text, to_key text, started_at timestamptz NOT NULL DEFAULT now())"
            ).format(table)
        )
        inserted = connection.execute(
            sql.SQL(
                "INSERT INTO {} (from_key, to_key) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                " RETURNING one"
            ).format(table),
            (wanted["from"], wanted["to"]),
        ).fetchone()
        if inserted:
            return None
        old, new = connection.execute(
            sql.SQL("SELECT from_key, to_key FROM {}").format(table)
        ).fetchone() or (None, None)
        return {"from": old, "to": new}


def _write_file(path: Path, wanted: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{MARKER}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(wanted, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)


def _name(config: StoreConfig) -> str:
    _, schema = postgres_conninfo(config)
    return f'"{schema or "public"}"."{TABLE}"'
