"""A SQLite store is one process's: a second `pairgate serve` on the same data directory
would record the first one's live devices as lost and run a second engine for each (two
WhatsApp connections with one device's keys), and a `pairgate rekey` under a running
server would leave rows it writes afterwards sealed with the retired key. Both are
refused with a clear error while the store is served; a server killed with -9 leaves
nothing held."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.service_process import PAIRGATE, ServiceProcess, free_port, pair, poll
from tests.e2e.test_crash_recovery import history, kinds
from tests.helpers import POSTGRES_URL, postgres_available, postgres_schema, unique_key

PAIRED = ["SessionCreated", "QrIssued", "Authenticated", "Ready"]
KEY = "8MtxQL0Y3pD8o0bFuGMl2G3B6Tm+U4XyP4Zq6l2U0Ck="  # AES-256, base64 (`pairgate keygen`)
NEW_KEY = "3mCvj7h0wGkQ3Yq3o9r2e0mS2kQ3qQm1wYb1r6dY9uE="


def command_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
    return env | extra


def second_serve(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`pairgate serve` on `data_dir`: how it ended, or a failure if it came up serving."""
    port = free_port()
    command = [str(PAIRGATE), "serve", "--simulate", "--port", str(port)]
    command += ["--data-dir", str(data_dir)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        poll(lambda: process.poll() is not None, 20, "the second server to give up")
    except AssertionError:
        process.kill()
        out, err = process.communicate(timeout=10)
        raise AssertionError(f"a second server served the store:\n{out}{err}") from None
    out, err = process.communicate(timeout=10)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def rekey(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PAIRGATE), "rekey", "--data-dir", str(data_dir)],
        input=NEW_KEY + "\n", env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def sqlite_service(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> Iterator[tuple[Path, ServiceProcess]]:
    data_dir = tmp_path / "data"
    yield data_dir, start_service(data_dir, {"PAIRGATE_CIPHER_KEY": KEY})


async def test_a_second_server_on_a_served_sqlite_store_is_refused_and_changes_nothing(
    sqlite_service: tuple[Path, ServiceProcess], start_service: Callable[..., ServiceProcess]
) -> None:
    data_dir, first = sqlite_service
    key = unique_key("sole")
    await pair(first.url, key)

    second = second_serve(data_dir, command_env(PAIRGATE_CIPHER_KEY=KEY))

    assert second.returncode == 2, second.stderr
    said = second.stderr
    assert "in use by another pairgate process" in said and f"pid {first.pid}" in said
    assert "PAIRGATE_DATABASE_URL" in said  # what to do to run several
    assert KEY not in said + second.stdout
    # The first server still runs the device, and nothing was recorded about it.
    assert kinds(await history(first.url, key)) == PAIRED
    # kill -9 leaves no lock behind: the next server starts and resumes the device.
    first.process.kill()
    first.process.wait(10)
    third = start_service(data_dir, {"PAIRGATE_CIPHER_KEY": KEY})
    deadline = time.monotonic() + 20
    while kinds(await history(third.url, key))[-1] != "Ready":
        assert time.monotonic() < deadline, "the device was not resumed"
        await asyncio.sleep(0.1)


async def test_a_rekey_is_refused_while_a_server_uses_the_sqlite_store(
    sqlite_service: tuple[Path, ServiceProcess],
) -> None:
    data_dir, service = sqlite_service
    key = unique_key("rekeyed")
    await pair(service.url, key)

    refused = rekey(data_dir, command_env(PAIRGATE_CIPHER_KEY=KEY))

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "in use by another pairgate process" in refused.stderr
    assert f"pid {service.pid}" in refused.stderr
    assert not (data_dir / "rekey.json").exists()  # it changed nothing
    assert kinds(await history(service.url, key)) == PAIRED
    # Once the server has stopped, the same command seals the store with the new key.
    assert service.terminate()[0] == 0
    done = rekey(data_dir, command_env(PAIRGATE_CIPHER_KEY=KEY))
    assert done.returncode == 0, done.stdout + done.stderr


async def test_a_rekey_is_refused_while_a_server_uses_the_postgresql_store(
    tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    """A PostgreSQL store is shared: a rekey waits for every process of the deployment
    (its schema) to stop, and another deployment's processes do not count."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as schema, postgres_schema() as elsewhere:
        url = f"{POSTGRES_URL}?schema={schema}"
        store = {"PAIRGATE_DATABASE_URL": url, "PAIRGATE_CIPHER_KEY": KEY}
        service = start_service(tmp_path / "here", store)
        other = {"PAIRGATE_DATABASE_URL": f"{POSTGRES_URL}?schema={elsewhere}"}
        start_service(tmp_path / "other", other)
        key = unique_key("shared")
        await pair(service.url, key)

        refused = rekey(tmp_path / "cli", command_env(**store))

        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "1 pairgate process" in refused.stderr and "uses this store" in refused.stderr
        assert kinds(await history(service.url, key)) == PAIRED
        assert service.terminate()[0] == 0
        done = rekey(tmp_path / "cli", command_env(**store))
        assert done.returncode == 0, done.stdout + done.stderr
