"""docs/audit.md's and docs/protocol.md's examples, taken from the Markdown and checked
against what a real server and the real `pairgate` commands produce."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from entrypoints.settings import Settings
from tests.docs import doc_block
from tests.helpers import clients, decode_qr, running

BIN = Path(sys.executable).parent
KEY = "device123"


def shell(script: str, cwd: Path, **env: str) -> str:
    """`script` run by bash as a user would, with pairgate on PATH."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
    clean["PATH"] = f"{BIN}:{clean.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def normalised(table: str) -> str:
    """Times and fingerprints differ from run to run; their places and widths do not."""
    table = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", "YYYY-MM-DD hh:mm:ss.fff", table)
    table = re.sub(r"expires_at=\S+", "expires_at=T", table)
    return re.sub(r"fingerprint=[0-9a-f]{12}", "fingerprint=F", table)


async def test_the_audit_commands_print_what_audit_md_shows(tmp_path: Path) -> None:
    """While the server runs (the CLI reads the store directly): device123 paired, its
    first code 60 s, as in the example."""
    settings = Settings(simulate=True, sim_qr_timeouts=(60.0,), data_dir=tmp_path / "data")
    async with running(settings) as server, clients(server.url) as [client]:
        await client.call("session.create", {"key": KEY, "name": "My Device", "engine": "baileys"})
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        await server.post(f"/api/simulator/devices/{KEY}/scan", {"code": code})
        await client.wait_for("session.ready")

        command, _, documented = doc_block("history-table").partition("\n")
        printed = await asyncio.to_thread(
            shell, command.removeprefix("$ "), tmp_path, PAIRGATE_DATA_DIR="data"
        )
        assert normalised(printed) == normalised(documented)

        await asyncio.to_thread(shell, doc_block("export"), tmp_path, PAIRGATE_DATA_DIR="data")
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["SessionCreated", "QrIssued", "Authenticated", "Ready"]
    assert {"position", "key", "version", "type", "timestamp", "state"} <= set(records[0])


def test_keygen_sets_a_usable_cipher_key(tmp_path: Path) -> None:
    key = shell(doc_block("keygen") + 'printf %s "$PAIRGATE_CIPHER_KEY"', tmp_path)
    assert len(base64.b64decode(key, validate=True)) == 32
    Settings(cipher_key=key).store_config()  # accepted as PAIRGATE_CIPHER_KEY


async def test_the_protocol_examples_are_what_the_server_answers(tmp_path: Path) -> None:
    settings = Settings(
        simulate=True, sim_qr_timeouts=(60.0,), sim_reconnect_delay=60.0, data_dir=tmp_path
    )
    relink = json.loads(doc_block("relink-request"))
    async with running(settings) as server, clients(server.url) as [client]:
        plain = {k: v for k, v in relink.items() if k != "relink"}
        await client.call("session.create", plain)
        code = decode_qr((await client.wait_for("session.qr"))["qr"])
        # A session showing a code, as session.join acknowledges it.
        assert await client.call("session.join", {"key": KEY}) == json.loads(doc_block("ack"))
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.post(f"/api/simulator/devices/{KEY}/scan", json={"code": code})
            await client.wait_for("session.ready")
            await http.post(f"/api/simulator/devices/{KEY}/drop")  # offline, still linked
        await client.wait_for("session.disconnected")
        refused = await client.call("session.create", plain)
        assert refused == json.loads(doc_block("relink-refusal"))
        accepted = await client.call("session.create", relink)
        assert accepted["ok"] is True and accepted["state"] == "created"

        await client.call("session.create", {"key": KEY, "name": "My Device", "engine": "foo"})
        error = [data for name, data in client.events if name == "session.error"][-1]
        documented = json.loads(doc_block("session-error"))
        assert error["message"].startswith(documented.pop("message").removesuffix("..."))
        assert {k: error[k] for k in documented} == documented
