"""The event store: eventsourcing's persistence, configured from pairgate's settings."""

from __future__ import annotations

import binascii
import hashlib
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from domain.application.sessions import DeviceSessions

SQLITE_FILE = "pairgate.sqlite3"
# The store holds live QR texts and who owns which device: for pairgate's user alone.
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
CIPHER = "eventsourcing.cryptography:AESCipher"  # AES-GCM, from the cryptography package
COMPRESSOR = "eventsourcing.compressor:ZlibCompressor"


class StoreUnreadableError(Exception):
    """The store cannot be opened or read as configured; the message says which setting."""


@dataclass(frozen=True)
class StoreConfig:
    """`kind` is sqlite (embedded default), postgres or memory (tests)."""

    kind: str = "sqlite"
    data_dir: Path = Path("data")
    database_url: str | None = field(default=None, repr=False)
    # eventsourcing's own POSTGRES_* variables (connection, pool, schema, ...), as the
    # settings read them; the database URL's parts win over them.
    postgres_env: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    cipher_key: str | None = field(default=None, repr=False)
    snapshot_interval: int = 50  # 0: never snapshot
    sqlite_synchronous: str = "normal"  # fsync at checkpoints (WAL), not at every commit
    # WAL pages after which a commit checkpoints (None: SQLite's 1,000; 0: never, someone
    # else checkpoints: see adapters/sqlite_store.WalCheckpoints).
    sqlite_autocheckpoint: int | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / SQLITE_FILE

    def identity(self) -> str:
        """What tells this store from any other (never a password): its SQLite file's path,
        or its PostgreSQL host, port, database and schema. Processes that share a store
        share it; a memory store is its process's own."""
        if self.kind == "sqlite":
            return f"sqlite:{self.sqlite_path.resolve()}"
        if self.kind == "postgres":
            env = postgres_env(self)
            host, port = env["POSTGRES_HOST"].lower(), env["POSTGRES_PORT"]
            schema = env.get("POSTGRES_SCHEMA") or "public"
            return f"postgres:{host}:{port}/{env['POSTGRES_DBNAME']}?schema={schema}"
        return f"{self.kind}:{uuid.uuid4()}"

    def fingerprint(self) -> str:
        """The identity as 16 hex digits: a name for the store that reveals nothing."""
        return hashlib.sha256(self.identity().encode()).hexdigest()[:16]

    def environment(self) -> dict[str, str]:
        """The eventsourcing environment variables for this configuration."""
        env = self._encryption() | self._persistence()
        if self.snapshot_interval > 0:
            env |= {
                "IS_SNAPSHOTTING_ENABLED": "y",
                "SNAPSHOT_INTERVAL": str(self.snapshot_interval),
            }
        return env

    def _encryption(self) -> dict[str, str]:
        if not self.cipher_key:
            return {}
        # Compressed, then encrypted: ciphertext does not compress.
        encryption = {"CIPHER_TOPIC": CIPHER, "CIPHER_KEY": self.cipher_key}
        return {**encryption, "COMPRESSOR_TOPIC": COMPRESSOR}

    def _persistence(self) -> dict[str, str]:
        if self.kind == "memory":
            return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        if self.kind == "postgres":
            return {"PERSISTENCE_MODULE": "eventsourcing.postgres", **postgres_env(self)}
        if self.kind == "sqlite":
            env = {
                "PERSISTENCE_MODULE": "adapters.store.sqlite:Factory",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": "10",
                "SQLITE_SYNCHRONOUS": self.sqlite_synchronous,
            }
            if self.sqlite_autocheckpoint is not None:
                env["SQLITE_AUTOCHECKPOINT"] = str(self.sqlite_autocheckpoint)
            return env
        raise ValueError(f"unknown store kind {self.kind!r}; use sqlite, postgres or memory")


# What a PostgreSQL store connects to when neither the URL nor POSTGRES_* say.
POSTGRES_DEFAULTS = {
    "POSTGRES_HOST": "127.0.0.1",
    "POSTGRES_PORT": "5432",
    "POSTGRES_DBNAME": "postgres",
    "POSTGRES_USER": "postgres",
    "POSTGRES_PASSWORD": "",
}
# libpq's names for the parts of a URL that eventsourcing reads as POSTGRES_*.
URL_PARTS = {
    "host": "POSTGRES_HOST",
    "port": "POSTGRES_PORT",
    "dbname": "POSTGRES_DBNAME",
    "user": "POSTGRES_USER",
    "password": "POSTGRES_PASSWORD",
}


def postgres_env(config: StoreConfig) -> dict[str, str]:
    """The POSTGRES_* settings of a postgres store: the database URL's parts, else
    eventsourcing's POSTGRES_* variables, else POSTGRES_DEFAULTS."""
    return {**POSTGRES_DEFAULTS, **config.postgres_env, **_url_env(config.database_url)}


def postgres_conninfo(config: StoreConfig) -> tuple[str, str | None]:
    """libpq connection string and schema of a postgres store (for pairgate's own tables)."""
    env = postgres_env(config)
    conninfo = make_conninfo(**{part: env[name] for part, name in URL_PARTS.items()})
    return conninfo, env.get("POSTGRES_SCHEMA") or None


URL_SHAPE = "postgresql://user:password@host:port/database[?schema=name]"


def _url_env(url: str | None) -> dict[str, str]:
    """The parts postgresql://user:password@host:port/dbname[?schema=name] gives, as
    POSTGRES_* (libpq parses it; `schema` is pairgate's, libpq would refuse it).
    ValueError, without the URL (it holds a password), when it is not one."""
    if url is None:
        return {}
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError
        query = parse_qsl(parts.query)
        schema = [value for name, value in query if name == "schema"]
        rest = urlencode([(name, value) for name, value in query if name != "schema"])
        without_schema = f"{parts.scheme}://{parts.netloc}{parts.path}" + (rest and f"?{rest}")
        given = conninfo_to_dict(without_schema)
    except (ValueError, psycopg.Error):
        raise ValueError(f"must be {URL_SHAPE}") from None
    env = {name: str(given[part]) for part, name in URL_PARTS.items() if given.get(part)}
    if schema:
        env["POSTGRES_SCHEMA"] = schema[0]
    return env


def check_url(url: str) -> None:
    """ValueError, without the URL, unless it is a PostgreSQL URL pairgate can read."""
    _url_env(url)


# Seconds to connect before saying the database does not answer (libpq's least is 2).
CONNECT_TIMEOUT = 3


def open_store(config: StoreConfig, *, create: bool = True) -> DeviceSessions:
    """The store, proven readable with this configuration (StoreUnreadableError if not).
    `create=False`: a SQLite store that does not exist yet is an error, not a new one."""
    from adapters.store.rekey_marker import refuse_during_rekey

    if config.kind == "sqlite":
        if not create and not config.sqlite_path.exists():
            raise StoreUnreadableError(
                f"no event store at {config.sqlite_path.resolve()}: point PAIRGATE_DATA_DIR "
                "(or --data-dir) at the directory `pairgate serve` uses"
            )
        _private_sqlite_files(config.sqlite_path)
    if config.kind == "postgres":
        reach_postgres(config)
    refuse_during_rekey(config)  # its rows may be sealed with two keys
    try:
        sessions = DeviceSessions(env=config.environment())
    except (ValueError, binascii.Error) as error:
        if not config.cipher_key:
            raise
        raise StoreUnreadableError(
            "PAIRGATE_CIPHER_KEY must be 16, 24 or 32 bytes in base64 "
            f"(`pairgate keygen` prints one): {error}"
        ) from None
    try:
        _read_first_event(sessions)
    except Exception as error:
        sessions.close()
        raise StoreUnreadableError(_unreadable(config, error)) from None
    if config.kind == "postgres":
        from adapters.store.streams import postgres_streams

        sessions.streams = postgres_streams(sessions)  # a takeover's reads, in one
    return sessions


def _private_sqlite_files(database: Path) -> None:
    """The store's directory 0700 and its files 0600, those an earlier run left too.

    SQLite creates the -wal and -shm files with the database file's mode, so a database
    file created 0600 here (before SQLite creates it under the umask) keeps them private.
    """
    directory = database.parent
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    directory.chmod(DIRECTORY_MODE)  # mkdir's mode is masked by the umask, and may be old
    os.close(os.open(database, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    for path in (database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_FILES)):
        if path.exists():
            path.chmod(FILE_MODE)


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def _read_first_event(sessions: DeviceSessions) -> None:
    """Decode one stored event: a wrong key must stop start-up, never yield garbage later."""
    for notification in sessions.notification_log.select(start=None, limit=1):
        sessions.mapper.to_domain_event(notification)


def _unreadable(config: StoreConfig, error: Exception) -> str:
    if config.cipher_key:
        return (
            "the stored events cannot be decrypted with PAIRGATE_CIPHER_KEY: it is not the "
            "key they were written with, or they were written without one "
            f"({type(error).__name__})"
        )
    return (
        "the stored events cannot be read: they look encrypted, so set PAIRGATE_CIPHER_KEY "
        f"to the key they were written with ({type(error).__name__})"
    )


@contextmanager
def postgres_table(
    config: StoreConfig, name: str
) -> Iterator[tuple[psycopg.Connection[Any], sql.Composed]]:
    """A short-lived autocommit connection to a PostgreSQL store, and the name of one of
    pairgate's tables in its schema (for the commands and checks that are not the
    event store's)."""
    conninfo, schema = postgres_conninfo(config)
    table = sql.SQL(".").join([sql.Identifier(schema or "public"), sql.Identifier(name)])
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as pg:
        yield pg, table


def reach_postgres(config: StoreConfig) -> None:
    """Connect once, briefly, before eventsourcing does (its pool waits 30 s and then
    says nothing of where): StoreUnreadableError naming the setting, host, port,
    database and schema, never the password."""
    env = postgres_env(config)
    conninfo, schema = postgres_conninfo(config)
    setting = "PAIRGATE_DATABASE_URL" if config.database_url else "POSTGRES_* variables"
    where = f'database "{env["POSTGRES_DBNAME"]}" at {env["POSTGRES_HOST"]}:{env["POSTGRES_PORT"]}'
    try:
        with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema or "public",)
            ).fetchone()
    except psycopg.Error as error:
        reason = " ".join(str(error).split())
        if env["POSTGRES_PASSWORD"]:
            reason = reason.replace(env["POSTGRES_PASSWORD"], "***")
        raise StoreUnreadableError(f"{setting}: cannot use PostgreSQL {where}: {reason}") from None
    if found is None:
        raise StoreUnreadableError(
            f'{setting}: schema "{schema}" does not exist in PostgreSQL {where}; '
            f'create it first (CREATE SCHEMA "{schema}")'
        )
