"""`pairgate history` and `pairgate export` on the store a real seed flow wrote."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from entrypoints.cli import main
from entrypoints.settings import Settings
from tests.helpers import Server, clients, decode_qr, start_server


@pytest.fixture
async def paired(tmp_path: Path) -> AsyncIterator[Server]:
    """The seed flow, done on a server whose SQLite store is in tmp_path."""
    settings = Settings(simulate=True, sim_qr_timeouts=(30.0,), data_dir=tmp_path)
    server = await start_server(settings)
    async with clients(server.url) as [client]:
        await client.call(
            "session.create", {"key": "device123", "name": "My Device", "engine": "baileys"}
        )
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        await server.post("/api/simulator/devices/device123/scan", {"code": code})
        await client.wait_for("session.ready")
        await client.call("session.create", {"key": "other", "name": "Other", "engine": "neonize"})
        await client.wait_for("session.qr", 2)
    yield server
    await server.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


async def test_history_shows_the_seed_flow_as_a_table(
    paired: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "history", "device123", "--data-dir", str(tmp_path))
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split()[:5] == ["VERSION", "TIMESTAMP", "(UTC)", "TYPE", "STATE"]
    assert [row.split()[3:5] for row in rows] == [
        ["SessionCreated", "created"],
        ["QrIssued", "qr"],
        ["Authenticated", "authenticated"],
        ["Ready", "ready"],
    ]
    assert "name='My Device'" in rows[0] and "engine=baileys" in rows[0]
    assert "timeout=30.0" in rows[1] and "fingerprint=" in rows[1]
    assert rows[0].split()[1].startswith("20")  # a date


async def test_history_as_json_and_at_a_version(
    paired: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "history", "device123", "--json", "--data-dir", str(tmp_path))
    assert status == 0
    page = json.loads(out)
    assert page["key"] == "device123" and page["next"] is None
    records = page["events"]
    assert [r["state"] for r in records] == ["created", "qr", "authenticated", "ready"]
    assert all({"version", "type", "timestamp", "state"} <= set(r) for r in records)
    code = paired.pairgate.sessions.history("device123")[1].code
    assert code not in out

    status, out, _ = run(
        capsys, "history", "device123", "--at", "2", "--json", "--data-dir", str(tmp_path)
    )
    assert status == 0
    page = json.loads(out)
    assert [(r["version"], r["state"]) for r in page["events"]] == [(1, "created"), (2, "qr")]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["history", "device123", "--at", "9"],
            "session 'device123' has versions 1 to 4; there is no version 9",
        ),
        (
            ["history", "device123", "--at", "0"],
            "session 'device123' has versions 1 to 4; there is no version 0",
        ),
        (["history", "nobody"], "no session with key 'nobody'"),
    ],
)
async def test_history_refuses_what_is_not_there(
    paired: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    status, out, err = run(capsys, *argv, "--data-dir", str(tmp_path))
    assert status == 1 and out == ""
    assert err.strip() == f"pairgate: {message}"


async def test_export_emits_every_event_once_in_order_and_resumes(
    paired: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "export", "--data-dir", str(tmp_path))
    assert status == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["key"], r["type"]) for r in records] == [
        ("device123", "SessionCreated"),
        ("device123", "QrIssued"),
        ("device123", "Authenticated"),
        ("device123", "Ready"),
        ("other", "SessionCreated"),
        ("other", "QrIssued"),
    ]
    positions = [r["position"] for r in records]
    assert positions == sorted(set(positions))
    assert "code" not in out

    status, out, _ = run(
        capsys, "export", "--since", str(positions[3]), "--data-dir", str(tmp_path)
    )
    assert [json.loads(line) for line in out.splitlines()] == records[4:]
