"""The neonize engine for real, offline: whatsmeow on a SQLite store, no WhatsApp server.

WhatsApp is unreachable here, so every connection fails at the dial: sessions must end
`connection lost` promptly and leave no thread or file behind; a paired device resumed
at start-up must be started from its stored whatsmeow file, without a QR code.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.credentials import CredentialVault
from adapters.identity import DEFAULT_IDENTITY
from adapters.store.config import open_store
from domain.model.session import DisconnectReason
from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, running, start_server, unique_key

# This machine's DNS resolver drops about one query in forty, and a dropped query costs Go's
# resolver 5 s. With RES_OPTIONS set, whatsmeow resolves through libc, which honours it:
# a dropped query then costs 1 s. Set before neonize loads (its Go runtime copies the
# environment then), which is after every test module has been imported.
os.environ.setdefault("RES_OPTIONS", "timeout:1 attempts:5")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("neonize") is None,
    reason="neonize is not installed (pip install 'pairgate[neonize]')",
)


@pytest.fixture(scope="module", autouse=True)
def neonize_loaded() -> None:
    """Load neonize (and its log thread) before threads are counted."""
    from adapters.engines.neonize import library

    try:
        library.neonize()
    except (ImportError, OSError) as error:
        pytest.skip(f"neonize cannot be loaded: {error}")


# The engine's worker threads, and neonize's own (named after each client's uuid).
ENGINE_THREAD = re.compile(r"pairgate-(neonize_|[0-9a-f]{16}-)")


def engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if ENGINE_THREAD.match(t.name)]


async def no_engine_threads(timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while engine_threads() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return engine_threads()


def device_dirs(data_dir: Path) -> list[Path]:
    root = data_dir / "credentials" / "neonize"
    return sorted(root.iterdir()) if root.is_dir() else []


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(simulate=False, data_dir=tmp_path / "data")


def neonize_of(server: Server) -> Any:
    return server.pairgate.engines.resolve("neonize")


async def create(client: Client, key: str) -> Any:
    return await client.call("session.create", {"key": key, "name": "Phone", "engine": "neonize"})


async def test_offline_a_session_ends_connection_lost_and_leaves_nothing(
    settings: Settings,
) -> None:
    async with running(settings) as server:
        client = await Client().connect(server.url)
        try:
            threads = len(threading.enumerate())
            key = unique_key()
            began = time.monotonic()
            ack = await create(client, key)
            assert ack["ok"] is True and ack["engine"] == "neonize"
            assert (await client.wait_for("session.created"))["key"] == key
            lost = await client.wait_for("session.disconnected", timeout=5)
            elapsed = time.monotonic() - began
            assert lost == {"key": key, "reason": "connection lost"}
            assert elapsed < 5
            assert [n for n in client.names() if n.startswith("session.")] == [
                "session.created",
                "session.disconnected",
            ]
            assert await no_engine_threads() == []
            assert device_dirs(settings.data_dir) == []
            # Store and default-executor pools may have grown; nothing else did.
            others = [
                t
                for t in threading.enumerate()
                if not t.name.startswith(("pairgate-store", "asyncio_", "ThreadPoolExecutor"))
            ]
            assert len(others) <= threads
            assert (await server.get("/healthz")).status_code == 200
        finally:
            await client.close()


async def test_twenty_sessions_at_once_all_end_and_the_server_stays_up(
    settings: Settings,
) -> None:
    async with running(settings) as server, clients(server.url, 4) as connections:
        # Five sessions on each of four connections: under the per-connection rate limit.
        keys = [[unique_key() for _ in range(5)] for _ in connections]
        acks = await asyncio.gather(
            *(
                create(client, key)
                for client, some in zip(connections, keys, strict=True)
                for key in some
            )
        )
        assert all(ack["ok"] for ack in acks)
        for client, some in zip(connections, keys, strict=True):
            await client.wait_for("session.disconnected", count=len(some), timeout=10)
            lost = [data for name, data in client.events if name == "session.disconnected"]
            assert sorted(d["key"] for d in lost) == sorted(some)
            assert {d["reason"] for d in lost} == {"connection lost"}
        assert await no_engine_threads() == []
        assert device_dirs(settings.data_dir) == []
        assert (await server.get("/healthz")).status_code == 200


class RecordedReports:
    def __init__(self) -> None:
        self.got: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        async def report(key: str, *args: Any) -> None:
            self.got.append((name, *args))

        return report


async def whatsmeow_store(vault: CredentialVault, key: str) -> Path:
    """Let whatsmeow create the device's store (offline: it then fails to dial)."""
    from adapters.engines.neonize import NeonizeEngine

    engine = NeonizeEngine(vault)
    reports = RecordedReports()
    await engine.start(key, reports)
    for _ in range(500):
        if reports.got:
            break
        await asyncio.sleep(0.01)
    assert reports.got == [("disconnected", DisconnectReason.CONNECTION_LOST)]
    await engine.close()
    store = vault.directory("neonize", key, create=False) / "whatsmeow.sqlite3"
    assert store.stat().st_size > 0  # whatsmeow's tables, written by whatsmeow
    return store


def record_ready(settings: Settings, key: str) -> None:
    """A device a previous run paired and left ready."""
    sessions = open_store(settings.store_config())
    try:
        sessions.create(key, "Phone", "neonize", DEFAULT_IDENTITY)
        sessions.update(key, lambda s: s.authenticate())
        sessions.update(key, lambda s: s.mark_ready())
    finally:
        sessions.close()


async def test_a_paired_device_resumes_from_its_stored_file_without_a_qr(
    settings: Settings,
) -> None:
    key = unique_key()
    vault = CredentialVault(settings.credentials_path)
    store = await whatsmeow_store(vault, key)
    record_ready(settings, key)

    server = await start_server(settings)  # recovery runs before it serves
    try:
        engine = neonize_of(server)
        assert key in server.pairgate.service.running_keys
        status = engine.status(key)
        assert status is not None and status.paired and status.store == str(store)
        deadline = time.monotonic() + 5
        while engine.status(key).attempts == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        status = engine.status(key)
        # It dialled with the stored credentials, failed offline, and will try again.
        assert status.attempts >= 1 and status.codes == 0
        kinds = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
        assert kinds == ["SessionCreated", "Authenticated", "Ready", "Disconnected"]
        assert store.exists()  # a lost connection keeps the credentials
    finally:
        await server.stop()
    assert await no_engine_threads() == []
    assert store.exists()


def modes(path: Path) -> Iterator[tuple[str, int]]:
    for part in (path.parent.parent, path.parent):
        yield part.name, stat.S_IMODE(part.stat().st_mode)
    for file in path.parent.iterdir():
        yield file.name, stat.S_IMODE(file.stat().st_mode)


async def test_the_credential_store_is_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = await whatsmeow_store(CredentialVault(tmp_path / "credentials"), "phone")
    finally:
        os.umask(old_umask)
    found = dict(modes(store))
    assert found.pop("neonize") == 0o700
    assert found.pop(store.parent.name) == 0o700
    assert found and set(found.values()) == {0o600}, found


@pytest.fixture
def whatsmeow_database() -> Iterator[str]:
    """A fresh PostgreSQL database for whatsmeow's tables (skips without a server)."""
    from tests.helpers import POSTGRES_URL, postgres_available

    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    name = f"whatsmeow_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    base, _, _ = POSTGRES_URL.rpartition("/")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    # whatsmeow talks to PostgreSQL through lib/pq, which requires TLS unless told not to.
    yield f"{base}/{name}?sslmode=disable"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_whatsmeow_on_postgresql_keeps_only_the_device_id_in_the_vault(
    whatsmeow_database: str, tmp_path: Path
) -> None:
    import psycopg

    from adapters.engines.neonize import NeonizeEngine, library
    from adapters.engines.neonize.stores import WhatsmeowStores, format_jid, parse_jid

    vault = CredentialVault(tmp_path / "credentials")
    engine = NeonizeEngine(vault, database_url=whatsmeow_database)
    reports = RecordedReports()
    try:
        await engine.start("unpaired", reports)
        for _ in range(500):
            if reports.got:
                break
            await asyncio.sleep(0.01)
        assert reports.got == [("disconnected", DisconnectReason.CONNECTION_LOST)]
        assert not vault.holds("neonize", "unpaired")  # nothing of it in the vault

        # A device paired earlier: whatsmeow's row, and its id in the key's vault file.
        jid = parse_jid("6281234567890:7@s.whatsapp.net")
        assert format_jid(jid) == "6281234567890:7@s.whatsapp.net"
        with psycopg.connect(whatsmeow_database, autocommit=True) as connection:
            key_bytes = b"\0" * 32
            connection.execute(
                "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key,"
                " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
                " adv_account_sig, adv_account_sig_key, adv_device_sig, platform, business_name,"
                " push_name, lid_migration_ts, companion_meta_nonce) VALUES"
                " (%s, 1, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, '', '', '', 0, '')",
                (
                    format_jid(jid),
                    *[key_bytes] * 3,
                    b"\0" * 64,
                    key_bytes,
                    b"",
                    *[b"\0" * 64, key_bytes, b"\0" * 64],
                ),
            )
            connection.execute(
                "INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded)"
                " VALUES (%s, 1, %s, true)",
                (format_jid(jid), key_bytes),
            )
        WhatsmeowStores(vault, "neonize", whatsmeow_database).remember("paired", jid)
        assert vault.read("neonize", "paired", "device.jid") == b"6281234567890:7@s.whatsapp.net"

        await engine.start("paired", reports)
        status = engine.status("paired")
        assert status is not None and status.paired and status.store == "postgresql"
        await engine.discard("paired")
        with psycopg.connect(whatsmeow_database) as connection:
            assert connection.execute("SELECT count(*) FROM whatsmeow_device").fetchone() == (0,)
            assert connection.execute("SELECT count(*) FROM whatsmeow_pre_keys").fetchone() == (0,)
        assert not vault.holds("neonize", "paired")
        assert library.proto().JID  # the proto module stayed importable
    finally:
        await engine.close()
