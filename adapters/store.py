"""The event store: eventsourcing's persistence, configured from pairgate's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from domain.services import DeviceSessions

SQLITE_FILE = "pairgate.sqlite3"


@dataclass(frozen=True)
class StoreConfig:
    """`kind` is sqlite (embedded default), postgres or memory (tests)."""

    kind: str = "sqlite"
    data_dir: Path = Path("data")
    database_url: str | None = None

    def environment(self) -> dict[str, str]:
        """The eventsourcing environment variables for this configuration."""
        if self.kind == "memory":
            return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        if self.kind == "postgres":
            postgres = _postgres_env(self.database_url)
            return {"PERSISTENCE_MODULE": "eventsourcing.postgres", **postgres}
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.data_dir / SQLITE_FILE),
                "SQLITE_LOCK_TIMEOUT": "10",
            }
        raise ValueError(f"unknown store kind {self.kind!r}; use sqlite, postgres or memory")


def _postgres_env(url: str | None) -> dict[str, str]:
    """From postgresql://user:password@host:port/dbname[?schema=name].

    None keeps eventsourcing's own POSTGRES_* variables from the environment.
    """
    if url is None:
        return {}
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("PAIRGATE_DATABASE_URL must be a postgresql:// URL")
    env = {
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    schema = parse_qs(parts.query).get("schema")
    if schema:
        env["POSTGRES_SCHEMA"] = schema[0]
    return env


def open_store(config: StoreConfig) -> DeviceSessions:
    if config.kind == "sqlite":
        config.data_dir.mkdir(parents=True, exist_ok=True)
    return DeviceSessions(env=config.environment())
