"""Events at rest: encrypted with PAIRGATE_CIPHER_KEY, and a wrong key stops start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.store.config import SQLITE_FILE, StoreUnreadableError, open_store
from entrypoints.cli import main
from entrypoints.settings import Settings
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import clients, decode_qr, running

NAME = "Budi's Secret Phone"
KEY = "kantor-device-77"


async def pair_on(data_dir: Path, cipher_key: str | None) -> str:
    """The seed flow on a SQLite store in data_dir; returns the QR text that was scanned."""
    settings = Settings(
        simulate=True, sim_qr_timeouts=(30.0,), data_dir=data_dir, cipher_key=cipher_key
    )
    async with running(settings) as server, clients(server.url) as [client]:
        await client.call("session.create", {"key": KEY, "name": NAME, "engine": "baileys"})
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        await server.post(f"/api/simulator/devices/{KEY}/scan", {"code": code})
        await client.wait_for("session.ready")
        history = await client.call("session.history", {"key": KEY})
        assert [e["state"] for e in history["events"]][-1] == "ready"
    return code


def raw_store(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in data_dir.glob(SQLITE_FILE + "*"))


async def test_with_a_key_nothing_of_a_session_is_stored_in_plain_text(tmp_path: Path) -> None:
    code = await pair_on(tmp_path, TEST_CIPHER_KEY)
    stored = raw_store(tmp_path)
    for secret in (NAME, KEY, code.split(",")[0], "user logged out", "connection lost"):
        assert secret.encode() not in stored, secret


async def test_without_a_key_the_same_file_shows_them(tmp_path: Path) -> None:
    """The control: the search above would find them if they were there."""
    await pair_on(tmp_path, None)
    stored = raw_store(tmp_path)
    assert NAME.encode() in stored and KEY.encode() in stored


async def test_a_wrong_or_missing_key_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await pair_on(tmp_path, TEST_CIPHER_KEY)
    other_key = "q1Jq3dN8oRMVf0mvbHJxE8sGfJvnc5ySxXtxKQOTiNM="
    for key in (other_key, None):
        settings = Settings(data_dir=tmp_path, cipher_key=key)
        with pytest.raises(StoreUnreadableError, match="PAIRGATE_CIPHER_KEY"):
            open_store(settings.store_config())
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PAIRGATE_CIPHER_KEY", other_key)
        assert main(["serve", "--simulate", "--data-dir", str(tmp_path)]) == 2
    assert "cannot be decrypted with PAIRGATE_CIPHER_KEY" in capsys.readouterr().err
    # The right key still reads everything (the server's stop took the device offline).
    right = open_store(Settings(data_dir=tmp_path, cipher_key=TEST_CIPHER_KEY).store_config())
    try:
        session = right.get(KEY)
        assert (session.state, session.reason, session.name) == (
            "disconnected",
            "connection lost",
            NAME,
        )
    finally:
        right.close()


def test_a_malformed_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreUnreadableError, match="16, 24 or 32 bytes in base64"):
        open_store(Settings(data_dir=tmp_path, cipher_key="not-a-key").store_config())
