"""Where each device's whatsmeow store lives, and how it is opened and forgotten.

By default every device has its own SQLite file in its vault directory (0700), created
0600 before whatsmeow opens it. With a PostgreSQL URL all devices share whatsmeow's
tables in that database (whatsmeow offers no per-device schema or table prefix): the
vault then keeps only which of its devices is the key's (`device.jid`, written through
the vault, so encrypted when pairgate has a cipher key). Every method does file or
database I/O: call them from a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from adapters.credentials import FILE_MODE, CredentialVault
from adapters.engines.neonize import library

SQLITE_FILE = "whatsmeow.sqlite3"
DEVICE_FILE = "device.jid"


class WhatsmeowStores:
    def __init__(self, vault: CredentialVault, engine: str, database_url: str | None) -> None:
        self._vault = vault
        self._engine = engine
        self._database_url = _for_whatsmeow(database_url) if database_url else None

    def describe(self, key: str) -> str:
        """The store's file, or "postgresql" (never the URL: it may hold a password)."""
        return "postgresql" if self._database_url else str(self.sqlite_path(key))

    def sqlite_path(self, key: str) -> Path:
        return self._vault.directory(self._engine, key, create=False) / SQLITE_FILE

    def holds(self, key: str) -> bool:
        """Whether the key has a stored device: pairgate resumes it instead of pairing."""
        return self._vault.holds(self._engine, key)

    def client_arguments(self, key: str) -> tuple[str, dict[str, Any]]:
        """neonize's NewClient `name` (what whatsmeow opens) and keyword arguments."""
        if self._database_url:
            text = self._vault.read(self._engine, key, DEVICE_FILE)
            jid = parse_jid(text.decode()) if text else None
            return self._database_url, {"jid": jid, "new_device": jid is None}
        path = self.sqlite_path(key)
        self._vault.directory(self._engine, key)
        # SQLite gives its -wal, -shm and -journal files the database file's permissions.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        path.chmod(FILE_MODE)
        return str(path), {}

    def remember(self, key: str, jid: Any) -> None:
        """After pairing: which device of a shared PostgreSQL store is the key's."""
        if self._database_url:
            self._vault.write(self._engine, key, DEVICE_FILE, format_jid(jid).encode())

    def forget(self, key: str) -> None:
        """Delete the key's store: its vault directory, and its PostgreSQL device rows."""
        text = self._vault.read(self._engine, key, DEVICE_FILE)
        if self._database_url and text:
            import psycopg

            with psycopg.connect(self._database_url, autocommit=True) as connection:
                # whatsmeow's other tables cascade from whatsmeow_device.
                connection.execute("DELETE FROM whatsmeow_device WHERE jid = %s", (text.decode(),))
        self._vault.remove(self._engine, key)


def _for_whatsmeow(url: str) -> str:
    """neonize takes a PostgreSQL store only when its name starts with `postgres://`;
    anything else, `postgresql://` included, it would silently open as a SQLite file."""
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("postgres", "postgresql"):
        return f"postgres://{rest}"
    raise ValueError("the neonize store URL must be postgres://… or postgresql://…")


def format_jid(jid: Any) -> str:
    """whatsmeow's JID.String(): `user[.agent][:device]@server`, its store's key."""
    user = f"{jid.User}.{jid.RawAgent}" if jid.RawAgent else jid.User
    if jid.Device:
        user = f"{user}:{jid.Device}"
    return f"{user}@{jid.Server}"


def parse_jid(text: str) -> Any:
    """The neonize JID of `format_jid`'s text."""
    user, _, server = text.partition("@")
    user, _, device = user.partition(":")
    user, _, agent = user.partition(".")
    return library.proto().JID(
        User=user,
        Server=server,
        Device=int(device or 0),
        RawAgent=int(agent or 0),
        Integrator=0,
        IsEmpty=False,
    )
