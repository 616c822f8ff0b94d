"""Credentials at rest, per engine, with PAIRGATE_CIPHER_KEY set: after a device pairs, is
any of its keys, or the cipher key's text, readable in a file under the data directory?

Each search has its control (the same search finds the keys when there is no cipher key,
or finds them where they are known to be plain), so a passing search means something.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pytest

from adapters.credentials import CredentialVault, device_name
from adapters.engines.baileys import BaileysEngine
from entrypoints.settings import Settings
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import clients, pair, running
from tests.integration import test_neonize_engine
from tests.integration.test_baileys_engine import PAIR_SUCCESS, QR, Reports, closed, update

KEY = "kantor-device-7"
whatsmeow_database = test_neonize_engine.whatsmeow_database  # a fixture: PostgreSQL for whatsmeow


def files_holding(root: Path, secrets: Iterable[bytes]) -> dict[str, list[str]]:
    """Which files under `root` contain which of `secrets` (as raw bytes)."""
    found: dict[str, list[str]] = {}
    wanted = list(secrets)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [s.decode(errors="replace") for s in wanted if s in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def key_text() -> list[bytes]:
    return [TEST_CIPHER_KEY.encode(), base64.b64decode(TEST_CIPHER_KEY)]


# -- simulator ---------------------------------------------------------------------------


async def test_simulator_keys_are_sealed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(simulate=True, data_dir=data, cipher_key=TEST_CIPHER_KEY)
    async with running(settings) as server, clients(server.url) as [client]:
        await pair(server, client, KEY)
    vault = CredentialVault(settings.credentials_path, TEST_CIPHER_KEY)
    with sqlite3.connect(settings.credentials_path / "simulator" / "devices.sqlite3") as db:
        row = db.execute("SELECT keys FROM devices WHERE device = ?", (device_name(KEY),))
        sealed = row.fetchone()[0]
    keys = json.loads(vault.unseal(sealed))
    secrets = [keys["noise"].encode(), keys["identity"].encode(), *key_text()]
    assert files_holding(tmp_path, secrets) == {}


# -- Baileys (the real sidecar, replaying WhatsApp's side) -------------------------------


async def pair_on_baileys(tmp_path: Path, vault: CredentialVault) -> dict[str, object]:
    """Pair KEY through the sidecar (replay mode); the credentials it stored, decrypted."""
    pairing = [update(qr=QR), PAIR_SUCCESS, closed(515, "restart required")]
    online = [update(connection="open")]
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps({KEY: [pairing, online, online]}))
    engine = BaileysEngine(vault, args=["--replay", str(replay)], reconnect_delays=[0.05])
    try:
        reports = Reports()
        await engine.start(KEY, reports)
        assert await reports.wait_count(KEY, 3) == [("qr", QR, 60.0), ("paired",), ("connected",)]
        # Resumed from what was stored: the sidecar reads its own sealed files back.
        reports = Reports()
        await engine.start(KEY, reports)
        assert await reports.wait_count(KEY, 1) == [("connected",)]
    finally:
        await engine.close()
    stored = vault.read("baileys", KEY, "creds.json")
    assert stored is not None
    return json.loads(stored)


def baileys_secrets(creds: dict[str, object]) -> list[bytes]:
    """The device's private keys as Baileys keeps them (BufferJSON: base64 in JSON)."""
    found = []
    for name in ("noiseKey", "signedIdentityKey", "pairingEphemeralKeyPair", "signedPreKey"):
        pair_ = creds[name]
        assert isinstance(pair_, dict)
        private = pair_.get("private") or pair_["keyPair"]["private"]  # type: ignore[index]
        found.append(private["data"].encode())  # type: ignore[index]
    found.append(str(creds["advSecretKey"]).encode())
    return found


async def test_baileys_auth_state_is_sealed_with_the_cipher_key(tmp_path: Path) -> None:
    vault = CredentialVault(tmp_path / "data" / "credentials", TEST_CIPHER_KEY)
    creds = await pair_on_baileys(tmp_path, vault)
    assert str(creds["me"]["id"]).startswith("6281234567890")  # type: ignore[index]
    directory = vault.directory("baileys", KEY, create=False)
    assert sorted(p.name for p in directory.iterdir()) == ["creds.json"]  # no partial left
    secrets = [*baileys_secrets(creds), b"noiseKey", b"6281234567890", *key_text()]
    assert files_holding(tmp_path / "data", secrets) == {}


async def test_without_a_key_the_same_search_finds_baileys_keys(tmp_path: Path) -> None:
    vault = CredentialVault(tmp_path / "data" / "credentials")
    creds = await pair_on_baileys(tmp_path, vault)
    found = files_holding(tmp_path / "data", baileys_secrets(creds))
    assert list(found) == [f"credentials/baileys/{device_name(KEY)}/creds.json"]
    assert len(found[f"credentials/baileys/{device_name(KEY)}/creds.json"]) == 5


# -- neonize (whatsmeow) -----------------------------------------------------------------
# whatsmeow writes its own store; neonize 0.5.2 has no hook to encrypt it (its SQLite file
# is plain, 0600 in a 0700 directory). The best achievable: the store in PostgreSQL
# (PAIRGATE_NEONIZE_DATABASE_URL), so that under the data directory there is only the
# device's id, sealed.


async def test_neonize_on_postgresql_leaves_only_a_sealed_device_id(
    whatsmeow_database: str, tmp_path: Path
) -> None:
    import psycopg

    pytest.importorskip("neonize")
    from adapters.engines.neonize import NeonizeEngine
    from adapters.engines.neonize.stores import WhatsmeowStores, format_jid, parse_jid

    data = tmp_path / "data"
    vault = CredentialVault(data / "credentials", TEST_CIPHER_KEY)
    jid = "6281234567890:7@s.whatsapp.net"
    noise, identity, adv = os.urandom(32), os.urandom(32), os.urandom(32)
    with psycopg.connect(whatsmeow_database, autocommit=True) as connection:
        engine = NeonizeEngine(vault, database_url=whatsmeow_database)
        reports = Reports()
        await engine.start("unpaired", reports)  # whatsmeow creates its tables, fails to dial
        await reports.wait_count("unpaired", 1)
        await engine.close()
        connection.execute(
            "INSERT INTO whatsmeow_device (jid, registration_id, noise_key, identity_key,"
            " signed_pre_key, signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details,"
            " adv_account_sig, adv_account_sig_key, adv_device_sig, platform, business_name,"
            " push_name, lid_migration_ts, companion_meta_nonce) VALUES"
            " (%s, 1, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, '', '', '', 0, '')",
            (jid, noise, identity, identity, b"\0" * 64, adv, b"", b"\0" * 64, adv, b"\0" * 64),
        )
    WhatsmeowStores(vault, "neonize", whatsmeow_database).remember(KEY, parse_jid(jid))
    engine = NeonizeEngine(vault, database_url=whatsmeow_database)
    try:
        await engine.start(KEY, Reports())  # from the stored device: no QR code
        status = engine.status(KEY)
        assert status is not None and status.paired and status.store == "postgresql"
    finally:
        await engine.close()
    assert vault.read("neonize", KEY, "device.jid") == format_jid(parse_jid(jid)).encode()
    secrets = [noise, identity, adv, jid.encode(), *key_text()]
    assert files_holding(data, secrets) == {}
