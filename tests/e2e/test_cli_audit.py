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
    # Every column but the last is padded: DETAILS starts at one column in every row.
    details = header.index("DETAILS")
    assert rows[0][details:].startswith("key=device123") and rows[1][details - 2 :].startswith(
        "  timeout="
    )
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
    # Every record field, as in a history (docs/audit.md): the state after each event.
    assert [r["state"] for r in records] == ["created", "qr", "authenticated", "ready"] + [
        "created",
        "qr",
    ]
    positions = [r["position"] for r in records]
    assert positions == sorted(set(positions))
    assert "code" not in out

    status, out, _ = run(
        capsys, "export", "--since", str(positions[3]), "--data-dir", str(tmp_path)
    )
    assert [json.loads(line) for line in out.splitlines()] == records[4:]
    # Resuming mid-session still knows each session's state (from the store).
    status, out, _ = run(
        capsys, "export", "--since", str(positions[2]), "--data-dir", str(tmp_path)
    )
    assert [json.loads(line) for line in out.splitlines()] == records[3:]


async def test_export_refuses_a_negative_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["export", "--since", "-5", "--data-dir", str(tmp_path)])
    assert usage.value.code == 2
    assert "--since: must be 0 or a position export printed, not '-5'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["history", "device123"], ["export"]])
async def test_reading_a_store_that_is_not_there_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`pairgate history` run from the wrong directory: not an empty store and "no
    session" (which reads as lost data), but a refusal saying where it looked."""
    status, out, err = run(capsys, *command, "--data-dir", str(tmp_path / "data"))
    assert status == 2 and out == ""
    assert err.splitlines() == [
        f"pairgate: no event store at {tmp_path / 'data' / 'pairgate.sqlite3'}: point "
        "PAIRGATE_DATA_DIR (or --data-dir) at the directory `pairgate serve` uses"
    ]
    assert not (tmp_path / "data").exists()
