"""`pairgate rekey`: events, read models, the vault's files, the Baileys sidecar's sealed
auth state and the simulator's rows, sealed again with a new key (or for the first time);
a run stopped half-way leaves nothing in plain text, keeps the service from starting, and
is finished by running it again."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.credentials import CredentialsUnreadableError, CredentialVault
from adapters.engines.baileys.sidecar import SIDECAR_SCRIPT
from adapters.resealing import Resealer
from adapters.store import rekey_marker
from adapters.store.config import StoreUnreadableError, open_store
from adapters.store.leases import PostgresLeases
from adapters.store.rekey import StoreRekey
from adapters.store.rekey_marker import RekeyError
from adapters.store.sealing import Sealer
from entrypoints.cli import main
from entrypoints.rekey import rekey
from entrypoints.settings import Settings
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import (
    POSTGRES_URL,
    clients,
    decode_qr,
    older_lease_log,
    postgres_available,
    postgres_schema,
    running,
)

OLD = TEST_CIPHER_KEY
NEW = "q1Jq3dN8oRMVf0mvbHJxE8sGfJvnc5ySxXtxKQOTiNM="
NAME = "Budi's Secret Phone"
KEY = "kantor-device-77"
JID = b"6281234567890.0:7@s.whatsapp.net"
SEALED_STATE = SIDECAR_SCRIPT.with_name("sealed-auth-state.mjs")
# `write KEY`: a Baileys auth state as the sidecar keeps it; prints its noise key's private
# half. `check KEY OTHER`: prints {"noise": that half, read with KEY, "other": whether
# OTHER opens the files}.
NODE = """
import { useSealedAuthState } from %s
const [dir, mode, key, other] = process.argv.slice(1)
const open = async (key) => {
  const { state, saveCreds } = await useSealedAuthState(dir, key || undefined)
  if (mode === 'write') {
    await saveCreds()
    await state.keys.set({ 'pre-key': { 1: state.creds.signedIdentityKey } })
  }
  const [id] = Object.values(await state.keys.get('pre-key', ['1']))
  if (!id) throw new Error('no pre-key')
  return Buffer.from(state.creds.noiseKey.private).toString('base64')
}
const noise = await open(key)
const opened = mode === 'check' && await open(other).then(() => 'opened', () => 'refused')
console.log(mode === 'write' ? noise : JSON.stringify({ noise, other: opened }))
"""


def baileys_auth(directory: Path, mode: str, key: str | None, other: str | None = None) -> str:
    script = NODE % json.dumps(SEALED_STATE.as_uri())
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(directory), mode, key or "", other or ""],
        capture_output=True, text=True, timeout=30, cwd=SEALED_STATE.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def a_deployment(data_dir: Path, key: str | None, **store: object) -> list[bytes]:
    """A paired simulated device, a webhook with a pending delivery, a neonize device id
    and a Baileys auth state, all under `key`; the secrets to look for in the files."""
    settings = Settings(
        simulate=True, sim_qr_timeouts=(30.0,), data_dir=data_dir, cipher_key=key,
        webhook_allowed_networks=("127.0.0.1/32",), webhook_retry_delay=60.0, **store,
    )  # fmt: skip
    async with running(settings) as server, clients(server.url) as [client]:
        hook = {"url": "http://127.0.0.1:9/hook", "events": ["session.qr"]}
        assert (await server.post("/api/webhooks", hook)).is_success
        await client.call("session.create", {"key": KEY, "name": NAME, "engine": "baileys"})
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        await server.post(f"/api/simulator/devices/{KEY}/scan", {"code": code})
        await client.wait_for("session.ready")
    vault = CredentialVault(data_dir / "credentials", key)
    vault.write("neonize", "n-device", "device.jid", JID)
    noise = baileys_auth(vault.directory("baileys", "b-device"), "write", key)
    return [NAME.encode(), KEY.encode(), code.split(",")[0].encode(), JID, noise.encode()]


def assert_nothing_plain(data_dir: Path, secrets: list[bytes]) -> None:
    """No file under the data directory holds a secret, nor either key's text or bytes."""
    keys = [k.encode() for k in (OLD, NEW)] + [base64.b64decode(k) for k in (OLD, NEW)]
    for path in (p for p in data_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in secrets + keys:
            assert secret not in data, (path, secret)


def assert_sealed_with(data_dir: Path, key: str, other: str | None, **store: object) -> None:
    open_store(Settings(data_dir=data_dir, cipher_key=key, **store).store_config()).close()
    with pytest.raises(StoreUnreadableError):
        open_store(Settings(data_dir=data_dir, cipher_key=other, **store).store_config())
    vault = CredentialVault(data_dir / "credentials", key)
    assert vault.read("neonize", "n-device", "device.jid") == JID
    baileys = vault.directory("baileys", "b-device", create=False)
    assert json.loads(baileys_auth(baileys, "check", key, other))["other"] == "refused"
    unkeyed = CredentialVault(data_dir / "credentials", other)
    if other is None:  # a keyless vault reads the files as they are: sealed
        assert unkeyed.read("neonize", "n-device", "device.jid") != JID
    else:
        with pytest.raises(CredentialsUnreadableError):
            unkeyed.read("neonize", "n-device", "device.jid")


async def assert_served(data_dir: Path, key: str, **store: object) -> None:
    """The service starts on the rekeyed data: its read model, history and webhooks."""
    settings = Settings(simulate=True, data_dir=data_dir, cipher_key=key, **store)
    async with running(settings) as server:
        listed = (await server.get("/api/sessions")).json()
        assert [(s["key"], s["name"]) for s in listed["sessions"]] == [(KEY, NAME)]
        history = (await server.get(f"/api/sessions/{KEY}/history")).json()
        assert history["events"][-1]["state"] == "ready"
        hooks = (await server.get("/api/webhooks")).json()["webhooks"]
        assert [h["url"] for h in hooks] == ["http://127.0.0.1:9/hook"]


def run_cli(
    data_dir: Path, old: str | None, new: str, monkeypatch: pytest.MonkeyPatch, url: str = ""
) -> tuple[int, str]:
    if url:
        monkeypatch.setenv("PAIRGATE_DATABASE_URL", url)
    if old:
        monkeypatch.setenv("PAIRGATE_CIPHER_KEY", old)
    else:
        monkeypatch.delenv("PAIRGATE_CIPHER_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(new + "\n"))
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    status = main(["rekey", "--data-dir", str(data_dir)])
    monkeypatch.undo()
    return status, out.getvalue()


class Killed(Exception):
    pass


@pytest.fixture
def store() -> Iterator[dict[str, str]]:
    """PostgreSQL when it is there (the SQLite store has a test of its own below)."""
    if not postgres_available():
        yield {}
        return
    with postgres_schema() as schema:
        yield {"database_url": f"{POSTGRES_URL}?schema={schema}"}


def assert_no_plain_rows(store: dict[str, str], secrets: list[bytes]) -> None:
    """The PostgreSQL schema's rows, dumped (bytes in hex), hold no secret (the lease log's
    keys too: blinded and sealed, adapters/store/lease_log.py)."""
    if not store:
        return
    url, schema = store["database_url"].split("?schema=")
    dump = subprocess.run(
        ["pg_dump", "--data-only", f"--schema={schema}", url],
        capture_output=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    for table in (b"pairgate_webhook_deliveries", b"pairgate_lease_log"):
        assert table in dump  # the control: the tables are there
    for secret in secrets[:3]:
        hits = [r for r in dump.splitlines() if secret in r or secret.hex().encode() in r]
        assert not hits, hits[:3]


def assert_lease_log_sealed_with(store: dict[str, str], key: str) -> None:
    """The lease log's keys are blinded and sealed with `key` (so the service finds them)."""
    if not store:
        return
    url, schema = store["database_url"].split("?schema=")
    sealer = Sealer(key)
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            f'SELECT key, sealed_key FROM "{schema}".pairgate_lease_log'
        ).fetchall()
    assert rows and all(row == (sealer.blind(KEY), row[1]) for row in rows), rows
    assert {sealer.open(sealed) for _, sealed in rows} == {KEY}


async def test_a_rekey_stopped_half_way_is_finished_by_running_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: dict[str, str]
) -> None:
    secrets = await a_deployment(tmp_path, OLD, **store)
    settings = Settings(data_dir=tmp_path, cipher_key=OLD, **store)
    steps = 0

    def kill_at_the_sixth_value() -> None:  # the vault is done, the events half-way
        nonlocal steps
        steps += 1
        if steps == 6:
            raise Killed

    with pytest.raises(Killed):
        rekey(settings, NEW, io.StringIO(), kill_at_the_sixth_value)
    assert_nothing_plain(tmp_path, secrets)
    assert_no_plain_rows(store, secrets)
    with pytest.raises(RekeyError, match="pairgate rekey` again"):  # the service does not start
        open_store(Settings(data_dir=tmp_path, cipher_key=NEW, **store).store_config())
    if store:  # ... on another machine either: PostgreSQL keeps the marker, not the data dir
        assert not (tmp_path / "rekey.json").exists()
        elsewhere = Settings(data_dir=tmp_path / "elsewhere", cipher_key=NEW, **store)
        with pytest.raises(RekeyError, match="pairgate rekey` again"):
            open_store(elsewhere.store_config())
    url = store.get("database_url", "")
    other = "3mCvj7h0wGkQ3Yq3o9r2e0mS2kQ3qQm1wYb1r6dY9uE="
    status, _ = run_cli(tmp_path, OLD, other, monkeypatch, url)  # not the keys it began with
    assert status == 2

    status, said = run_cli(tmp_path, OLD, NEW, monkeypatch, url)
    assert status == 0 and said.startswith("finishing an interrupted rekey"), said
    assert_nothing_plain(tmp_path, secrets)
    assert_no_plain_rows(store, secrets)
    assert_sealed_with(tmp_path, NEW, OLD, **store)
    assert_lease_log_sealed_with(store, NEW)
    await assert_served(tmp_path, NEW, **store)
    if store:  # another machine's vault, still sealed with the old key: its own run seals it
        machine = tmp_path / "machine-b"
        CredentialVault(machine / "credentials", OLD).write("neonize", "b", "device.jid", JID)
        status, said = run_cli(machine, OLD, NEW, monkeypatch, url)
        assert status == 0 and said.startswith("the store is sealed with the new key"), said
        assert (
            CredentialVault(machine / "credentials", NEW).read("neonize", "b", "device.jid") == JID
        )


async def test_a_plain_deployment_is_encrypted_by_rekey(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = await a_deployment(tmp_path, None)
    sqlite = b"".join(p.read_bytes() for p in tmp_path.glob("pairgate.sqlite3*"))
    assert NAME.encode() in sqlite  # the control: the search finds what is there

    status, said = run_cli(tmp_path, None, NEW, monkeypatch)
    assert status == 0, said
    # Nothing plain is left, in the SQLite file's freed pages and WAL either.
    assert_nothing_plain(tmp_path, secrets)
    assert_sealed_with(tmp_path, NEW, None)


def test_a_bad_or_unchanged_new_key_is_refused_before_anything_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for new, said in [("not-a-key", "16, 24 or 32 bytes"), (OLD, "nothing to do")]:
        monkeypatch.setenv("PAIRGATE_CIPHER_KEY", OLD)
        monkeypatch.setattr("sys.stdin", io.StringIO(new + "\n"))
        assert main(["rekey", "--data-dir", str(tmp_path)]) == 2
        error = capsys.readouterr().err
        assert said in error and OLD not in error
        assert not (tmp_path / "rekey.json").exists()


def test_on_postgresql_every_process_sees_an_unfinished_rekey() -> None:
    """The marker is a row in the store's schema: a process with another data directory
    (another machine) refuses the store, may finish the rekey with its keys only, and
    serves it once the rekey has finished."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as schema:
        url = f"{POSTGRES_URL}?schema={schema}"
        here = Settings(data_dir=Path("/nonexistent/here"), database_url=url).store_config()
        there = Settings(data_dir=Path("/nonexistent/there"), database_url=url).store_config()
        open_store(there).close()  # served before the rekey
        assert rekey_marker.begin(here, OLD, NEW) is True
        with pytest.raises(RekeyError, match="pairgate rekey` again"):
            open_store(there)
        with pytest.raises(RekeyError, match="must be finished first"):
            rekey_marker.begin(there, OLD, "3mCvj7h0wGkQ3Yq3o9r2e0mS2kQ3qQm1wYb1r6dY9uE=")
        assert rekey_marker.begin(there, OLD, NEW) is False  # the same run, finished there
        rekey_marker.finish(there)
        assert rekey_marker.under_way(here) is None
        open_store(here).close()
        # Another deployment's schema in the same database never saw it.
        with postgres_schema() as other:
            config = Settings(database_url=f"{POSTGRES_URL}?schema={other}").store_config()
            rekey_marker.begin(here, OLD, NEW)
            open_store(config).close()
            rekey_marker.finish(here)


async def test_a_lease_log_an_older_version_wrote_is_sealed_with_the_new_key_at_open() -> None:
    """A rekey run before any process of this version opened the store: the lease log
    gains its sealed column, its plain rows are left as they are, and the next open
    converts them with the new key."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as schema:
        older_lease_log(schema, [(KEY, "gone", False)])
        url = f"{POSTGRES_URL}?schema={schema}"
        config = Settings(data_dir=Path("/nonexistent"), database_url=url).store_config()
        StoreRekey(config, Resealer(OLD, NEW), OLD, NEW).read_models(lambda: None)
        leases = PostgresLeases(POSTGRES_URL, schema=schema, sealer=Sealer(NEW))
        await leases.open({}, lambda keys: asyncio.sleep(0))
        await leases.close()
        assert_lease_log_sealed_with({"database_url": url}, NEW)
