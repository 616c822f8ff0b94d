"""The sessions read model's table: its columns, its indexes, and the columns added since
its first version (adapters/store/session_rows.py reads and writes it)."""

from __future__ import annotations

from domain.model.session import LIVE_STATES, SessionState

TABLE = "pairgate_sessions"
COLUMNS = ("id", "key", "tie", "owner", "name", "engine", "state", "reason", "version",
           "updated_at", "linked", "tenure_from")  # fmt: skip
# Listing indexes: by owner, and by owner with either filter.
INDEXES = {"owner": ("owner",), "state": ("owner", "state"), "engine": ("owner", "engine")}


def create_statements(table: str, name: str) -> list[str]:
    """`table` (called `name` unqualified) and the indexes the listing reads."""
    statements = [
        f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, key TEXT NOT NULL, "
        "tie TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, engine TEXT NOT NULL, "
        "state TEXT NOT NULL, reason TEXT, version BIGINT NOT NULL, updated_at BIGINT NOT NULL, "
        "linked INTEGER, tenure_from BIGINT)"
    ]
    for index, columns in INDEXES.items():
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {name}_by_{index} ON {table} "
            f"({', '.join(columns)}, updated_at DESC, tie DESC)"
        )
    # Recovery and takeover: the keys that may need an engine, by state (LIVE_WHERE).
    statements.append(f"CREATE INDEX IF NOT EXISTS {name}_by_live ON {table} (state, linked)")
    return statements


# Live, or offline and linked (or not known to be unlinked: rows kept before `linked`).
LIVE_WHERE = (
    f"state IN ({', '.join(repr(s.value) for s in sorted(LIVE_STATES))}) OR "
    f"(state = '{SessionState.DISCONNECTED.value}' AND (linked IS NULL OR linked = 1))"
)
# Columns added since the table's first version: tables made before get them (NULL: not
# known, until the session's next event or a `pairgate reindex`).
ADDED_COLUMNS = {"linked": "INTEGER", "tenure_from": "BIGINT"}


def added_columns(if_not_exists: str = "") -> list[str]:
    """The statements that give a table made before them the columns added since
    (`if_not_exists`: "IF NOT EXISTS " where the dialect has it)."""
    add = "ALTER TABLE {table} ADD COLUMN " + if_not_exists
    return [add + f"{column} {kind}" for column, kind in ADDED_COLUMNS.items()]
