"""whatsmeow's store (the neonize engine) on a SQLite file per device and on PostgreSQL.

    python -m benchmarks.neonize_store --devices 30 --json neonize_store.json

WhatsApp is unreachable offline, so this measures what the store costs around a
connection attempt, through pairgate's `WhatsmeowStores` and neonize's `NewClient`, one
device at a time (the engine starts clients one at a time):

- `new_device_ms`: a new device's attempt (whatsmeow opens the store, runs its schema
  check, generates the device's keys) whose dial is refused at once (a SOCKS5 proxy
  address on a port bound but not listening), so it is the store's and client's cost;
- `resume_ms`: the same for a stored, linked device (whatsmeow loads it); each device was
  first given what a linked device holds at least: its `whatsmeow_device` row and the 812
  prekeys whatsmeow uploads on its first connection (random bytes of whatsmeow's sizes);
- `offline_attempt_ms`: a stored device's attempt without proxy, until its dial fails;
- storage per device, the process's RSS, its open files and (PostgreSQL) the server
  connections it holds after each phase.

PostgreSQL runs in a database of its own at `--postgres`, dropped afterwards.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import emit, own_rss_kb, percentiles
from benchmarks.store import POSTGRES_URL, postgres_answers

PREKEYS = 812  # whatsmeow's first prekey upload after pairing (prekeys.go)
FIRST = 5  # PostgreSQL connections are counted after this many new devices' attempts too
# Each attempt leaves a connection open (neonize never closes whatsmeow's store): the
# benchmark's database has the server close idle ones after this, or a run would take
# up a shared server's connections (`open_files_added` still counts them on this side).
IDLE_TIMEOUT = "500ms"
DEVICE_COLUMNS = (
    "jid, registration_id, noise_key, identity_key, signed_pre_key, signed_pre_key_id,"
    " signed_pre_key_sig, adv_key, adv_details, adv_account_sig, adv_account_sig_key,"
    " adv_device_sig, platform, business_name, push_name, lid_migration_ts,"
    " companion_meta_nonce"
)


def insert_linked(connection: Any, jid: str, mark: str) -> None:
    """A linked device's rows, in whatsmeow's schema (`mark`: the driver's placeholder)."""
    values = ", ".join([mark] * 12) + ", 'Chrome', '', 'Bench', 0, ''"
    noise, identity, signed, adv = (os.urandom(32) for _ in range(4))
    signatures = [os.urandom(64) for _ in range(3)]
    row = (jid, 1234, noise, identity, signed, 1, signatures[0], adv, os.urandom(24))
    row += (signatures[1], os.urandom(32), signatures[2])
    cursor = connection.cursor()
    cursor.execute(f"INSERT INTO whatsmeow_device ({DEVICE_COLUMNS}) VALUES ({values})", row)
    prekeys = [(jid, number, os.urandom(32), True) for number in range(1, PREKEYS + 1)]
    columns = "jid, key_id, key, uploaded"
    sql = f"INSERT INTO whatsmeow_pre_keys ({columns}) VALUES ({', '.join([mark] * 4)})"
    cursor.executemany(sql, prekeys)


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


class Attempts:
    """Connection attempts through pairgate's stores, and what they cost."""

    def __init__(self, stores: Any, label: str) -> None:
        from adapters.engines.neonize import library

        self._neonize = library.neonize()
        self._stores = stores
        self._label = label
        self.unexpected: list[str] = []

    def attempt(self, key: str, phase: str, proxy: str | None) -> tuple[float, str]:
        """Milliseconds from the client's arguments to connect()'s failure; the device's JID."""
        uuid_ = f"bench-{self._label}-{phase}-{key}"
        settings = self._neonize.ProxySettings(proxy_address=proxy) if proxy else None
        started = time.perf_counter()
        name, arguments = self._stores.client_arguments(key)
        client = self._neonize.NewClient(name, uuid=uuid_, **arguments)
        client.uuid = uuid_.encode()
        try:
            client.connect(settings)
            self.unexpected.append(f"{phase}: connected")
        except Exception as error:
            if "dial" not in str(error):
                self.unexpected.append(f"{phase}: {error}"[:300])
        elapsed = (time.perf_counter() - started) * 1000
        jid = client.get_me().JID
        return elapsed, jid.User if jid.User else ""


@contextmanager
def whatsmeow_database(url: str) -> Iterator[str]:
    import psycopg

    name = f"bench_whatsmeow_{uuid.uuid4().hex[:12]}"
    base = url.rpartition("/")[0]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        connection.execute(f"ALTER DATABASE \"{name}\" SET idle_session_timeout = '{IDLE_TIMEOUT}'")
    try:
        # whatsmeow reaches PostgreSQL through lib/pq, which wants TLS unless told not to.
        yield f"{base}/{name}?sslmode=disable"
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            # FORCE: the connections whatsmeow's attempts left open (see `pg_connections`).
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def table_bytes(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM pg_class"
            " WHERE relkind = 'r' AND relname LIKE 'whatsmeow%'"
        ).fetchone()
    return int(row[0]) if row else 0


def pg_connections(url: str) -> int:
    import psycopg

    name = url.rpartition("/")[2].partition("?")[0]
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


class Probe:
    """What the process holds after each phase: RSS, open files, PostgreSQL connections."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self.rss_kb = {"start": own_rss_kb()}
        self.files = {"start": open_files()}
        self.connections: dict[str, int] = {}

    def __call__(self, phase: str) -> None:
        self.rss_kb[phase] = own_rss_kb()
        self.files[phase] = open_files()
        if self._url:
            self.connections[phase] = pg_connections(self._url)


def link(stores: Any, keys: list[str], url: str | None) -> None:
    """Give every device what a linked device holds at least (see the module's text)."""
    from adapters.engines.neonize.stores import parse_jid

    for number, key in enumerate(keys):
        jid = f"1555{number:07d}:3@s.whatsapp.net"
        if url:
            import psycopg

            with psycopg.connect(url, autocommit=True) as connection:
                insert_linked(connection, jid, "%s")
            stores.remember(key, parse_jid(jid))
        else:
            connection = sqlite3.connect(stores.sqlite_path(key))
            with connection:
                insert_linked(connection, jid, "?")
            connection.close()


def bench(store: str, devices: int, refused: str, url: str | None) -> dict[str, Any]:
    from adapters.credentials import CredentialVault
    from adapters.engines.neonize.stores import WhatsmeowStores

    with tempfile.TemporaryDirectory(prefix="pairgate-neonize-") as tmp:
        vault = CredentialVault(Path(tmp) / "credentials")
        stores = WhatsmeowStores(vault, "neonize", url)
        attempts = Attempts(stores, store)
        keys = [f"device-{number}" for number in range(devices)]

        def stored_bytes() -> int:
            if url:
                return table_bytes(url)
            folders = [stores.sqlite_path(key).parent for key in keys]
            return sum(file.stat().st_size for folder in folders for file in folder.iterdir())

        probe = Probe(url)
        new = []
        for number, key in enumerate(keys):
            new.append(attempts.attempt(key, "new", refused))
            if number + 1 == min(FIRST, devices):  # before the server closes idle ones
                probe("after_first_new")
        probe("after_new")
        unlinked_bytes = stored_bytes()
        link(stores, keys, url)
        linked_bytes = stored_bytes()
        resumed = [attempts.attempt(key, "resume", refused) for key in keys]
        probe("after_resume")
        offline = [attempts.attempt(key, "offline", None) for key in keys]
        probe("after_offline")

    # SQLite: a file per device; PostgreSQL: tables shared by all, empty ones cost the same.
    per_device = (linked_bytes - (unlinked_bytes if url else 0)) / devices
    rss, files = probe.rss_kb, probe.files
    result: dict[str, Any] = {
        "devices": devices,
        "first_new": min(FIRST, devices),
        "new_device_ms": percentiles([ms for ms, _ in new]),
        "resume_ms": percentiles([ms for ms, _ in resumed]),
        "offline_attempt_ms": percentiles([ms for ms, _ in offline]),
        "new_unlinked": sum(1 for _, jid in new if not jid),
        "resumed_linked": sum(1 for _, jid in resumed if jid),
        "store_bytes_unlinked": unlinked_bytes,
        "store_bytes_linked": linked_bytes,
        "bytes_per_linked_device": round(per_device),
        "rss_mb": {phase: round(kb / 1024, 1) for phase, kb in rss.items()},
        "rss_kb_per_attempt": round((rss["after_offline"] - rss["start"]) / (3 * devices), 1),
        "open_files_added": {phase: n - files["start"] for phase, n in files.items()},
        "unexpected": attempts.unexpected[:5],
    }
    if url:
        result["pg_connections"] = probe.connections
    return result


def warm_up(refused: str) -> None:
    """One attempt first, so that neither store pays for Go's and neonize's first call."""
    from adapters.credentials import CredentialVault
    from adapters.engines.neonize.stores import WhatsmeowStores

    with tempfile.TemporaryDirectory(prefix="pairgate-neonize-") as tmp:
        stores = WhatsmeowStores(CredentialVault(Path(tmp)), "neonize", None)
        Attempts(stores, "warm-up").attempt("warm-up", "new", refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    # A dropped DNS query costs Go's own resolver 5 s; with RES_OPTIONS it resolves
    # through libc, which honours it. Set before neonize's Go runtime copies the environment.
    os.environ.setdefault("RES_OPTIONS", "timeout:1 attempts:5")

    result: dict[str, Any] = {
        "benchmark": "neonize_store",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "neonize": importlib.metadata.version("neonize"),
        "prekeys_per_linked_device": PREKEYS,
    }
    # A port bound but not listening: a SOCKS5 dial to it is refused at once.
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        refused = f"socks5://127.0.0.1:{refusing.getsockname()[1]}"
        warm_up(refused)
        if "sqlite" in stores:
            result["sqlite"] = bench("sqlite", args.devices, refused, None)
        if "postgres" in stores:
            if postgres_answers(args.postgres):
                with whatsmeow_database(args.postgres) as url:
                    result["postgres"] = bench("postgres", args.devices, refused, url)
            else:
                result["postgres"] = {"skipped": f"no PostgreSQL server at {args.postgres}"}
    result["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    emit(result, args.json)


if __name__ == "__main__":
    main()
