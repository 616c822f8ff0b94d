"""`pairgate scan` against a real server: what it prints and how it exits."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from entrypoints.scan import terminal_qr
from entrypoints.settings import Settings
from tests.helpers import Server, running, start_server, unique_key

PAIRGATE = str(Path(sys.executable).with_name("pairgate"))


@pytest.fixture(params=[("polling", "websocket"), ("websocket",)], ids=["any", "ws-only"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    settings = Settings(
        simulate=True,
        sim_qr_timeouts=(30.0,),
        expiry_grace=0.5,
        data_dir=tmp_path,
        transports=request.param,
    )
    running = await start_server(settings)
    yield running
    await running.stop()


async def start_scan(server: Server, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        PAIRGATE, "scan", *args, "--server", server.url, stdout=asyncio.subprocess.PIPE
    )


async def lines_until(scan: asyncio.subprocess.Process, last: str) -> list[str]:
    assert scan.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not lines or not lines[-1].startswith(last):
            line = await scan.stdout.readline()
            assert line, f"scan ended before {last!r}: {lines}"
            lines.append(line.decode().rstrip("\n"))
    return lines


async def test_prints_the_qr_and_exits_0_when_ready(server: Server) -> None:
    key = unique_key()
    scan = await start_scan(server, key, "--name", "Terminal", "--engine", "neonize")
    shown = await lines_until(scan, "▀▀▀")
    assert shown[0] == "created"
    assert shown[1].startswith("Scan within 30 s")
    code = server.pairgate.sessions.get(key).qr_code
    # The printed block is the very code the server issued, as segno draws it.
    assert "\n".join(shown[2:]) + "\n" == terminal_qr(code)

    assert (await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})).is_success
    rest = (await scan.communicate())[0].decode().splitlines()
    assert rest == ["authenticated", "ready"]
    assert scan.returncode == 0
    session = server.pairgate.sessions.get(key)
    assert (session.state, session.name, session.engine) == ("ready", "Terminal", "neonize")


async def test_exits_1_with_the_reason_when_the_codes_expire(tmp_path: Path) -> None:
    quick = Settings(simulate=True, sim_qr_timeouts=(1.0, 1.0), expiry_grace=0.5, data_dir=tmp_path)
    async with running(quick) as server:
        scan = await start_scan(server, unique_key())
        output = (await asyncio.wait_for(scan.communicate(), 30))[0].decode().splitlines()
    assert scan.returncode == 1
    assert output[-1] == "disconnected: qr expired"
    assert sum(line.startswith("Scan within") for line in output) == 2


async def test_exits_2_on_a_session_error(server: Server) -> None:
    scan = await start_scan(server, "bad key")
    output = (await asyncio.wait_for(scan.communicate(), 20))[0].decode()
    assert scan.returncode == 2
    assert output == "error invalid_key: key must match ^(?!\\.+$)[A-Za-z0-9_.-]{1,64}$\n"


async def test_exits_3_when_no_server_answers(tmp_path: Path) -> None:
    scan = await asyncio.create_subprocess_exec(
        PAIRGATE, "scan", "k", "--server", "http://127.0.0.1:9", stderr=asyncio.subprocess.PIPE
    )
    _, errors = await asyncio.wait_for(scan.communicate(), 20)
    assert scan.returncode == 3
    assert errors.decode().startswith("pairgate: cannot connect to http://127.0.0.1:9")


async def test_a_server_without_a_scheme_is_a_usage_error() -> None:
    scan = await asyncio.create_subprocess_exec(
        PAIRGATE, "scan", "k", "--server", "127.0.0.1:8000", stderr=asyncio.subprocess.PIPE
    )
    _, errors = await asyncio.wait_for(scan.communicate(), 20)
    assert scan.returncode == 2
    assert errors.decode().splitlines()[-1] == (
        "pairgate scan: error: argument --server: must be a URL such as "
        "http://127.0.0.1:8000, not '127.0.0.1:8000'"
    )


async def test_without_the_token_a_server_with_tokens_refuses_exit_2(tmp_path: Path) -> None:
    settings = Settings(simulate=True, data_dir=tmp_path, tokens=SecretStr("alice:a-secret"))
    async with running(settings) as server:
        for token in ([], ["--token", "wrong"]):
            scan = await asyncio.create_subprocess_exec(
                PAIRGATE,
                *["scan", "k", "--server", server.url, *token],
                stderr=asyncio.subprocess.PIPE,
            )
            _, errors = await asyncio.wait_for(scan.communicate(), 20)
            assert scan.returncode == 2, errors
            assert errors.decode() == (
                f"pairgate: {server.url} refused the connection: unauthorized\n"
            )
