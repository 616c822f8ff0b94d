"""The README's REST walk-through, run as written (bash and curl) against a real server."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from entrypoints.settings import Settings
from tests.docs import doc_block
from tests.helpers import running


def walk_through() -> str:
    return doc_block("rest-walk-through")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_curl_walk_through_links_and_logs_out(tmp_path: Path) -> None:
    script = walk_through()
    assert "BASE=http://127.0.0.1:8000\n" in script
    async with running(Settings(simulate=True, data_dir=tmp_path / "data")) as server:
        script = script.replace("BASE=http://127.0.0.1:8000", f"BASE={server.url}")
        shell = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", script, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            out, err = await shell.communicate()
        assert shell.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    created = json.loads(lines[0])
    assert created["state"] == "created" and created["key"] == "device123", created
    assert lines[1].startswith('{"ok":true,"key":"device123","qr":"data:image/png;base64,')
    assert json.loads(lines[2])["state"] in ("qr", "authenticated", "ready")  # the scan
    assert json.loads(lines[3])["state"] == "ready"
    listed = json.loads(lines[4])  # the list needs the sessions read model
    assert listed["ok"] is False or [s["key"] for s in listed["sessions"]] == ["device123"]
    logged_out = json.loads(lines[5])
    assert logged_out["state"] == "disconnected" and logged_out["reason"] == "user logged out"
    assert (tmp_path / "qr.png").read_bytes().startswith(b"\x89PNG")
