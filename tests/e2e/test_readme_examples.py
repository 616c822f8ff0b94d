"""The README's client examples, taken from the Markdown and run as written against a real
server (only its address changes): Python, JavaScript in Node and in Chromium, the curl
walk-through of a simulated scan, and `pairgate scan`."""

from __future__ import annotations

import asyncio
import functools
import http.server
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrypoints.settings import Settings
from tests.docs import ROOT, doc_block
from tests.helpers import Server, clients, running

README_URL = "http://127.0.0.1:8000"
NODE_MODULES = ROOT / "tests" / "e2e" / "node" / "node_modules"
KEY = "device123"  # the examples' own key: each test has a server of its own
QR_TIMEOUT = 30.0


def example(text: str, server: Server) -> str:
    """A README block, talking to this server instead of the README's."""
    assert README_URL in text
    return text.replace(README_URL, server.url)


async def play_the_phone(server: Server, key: str = KEY) -> None:
    """Scan the code the device shows now, as the simulator's phone."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        code = (await http.get(f"/api/simulator/devices/{key}/code")).json()["code"]
        scanned = await http.post(f"/api/simulator/devices/{key}/scan", json={"code": code})
    assert scanned.status_code == 200, scanned.text


@pytest.fixture
async def sim_server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(simulate=True, sim_qr_timeouts=(QR_TIMEOUT,), data_dir=tmp_path / "data")
    async with running(settings) as server:
        yield server


async def test_the_python_example_pairs_a_device(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example(doc_block("python-client"), server))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    seen = []
    async with asyncio.timeout(20):
        while line := (await process.stdout.readline()).decode():
            seen.append(line.strip())
            if line.startswith("scan me within"):
                await play_the_phone(server)
        assert await process.wait() == 0
    assert seen[0].startswith("{'ok': True, 'key': 'device123', 'state': 'created'")
    assert seen[1] == "scan me within 2 s"
    assert seen[-1] == "linked: device123"


JS_OUTPUT = [
    f"{KEY} Session created",
    f"scan within {QR_TIMEOUT:g} s",
    f"authenticated {KEY}",
    f"ready {KEY}",
]


async def test_the_js_example_runs_in_node(sim_server: Server, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not NODE_MODULES.is_dir():
        pytest.skip("needs node and tests/e2e/node/node_modules (npm ci --prefix tests/e2e/node)")
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)  # `npm install socket.io-client@4`
    script = tmp_path / "example.mjs"
    script.write_text(example(doc_block("js-client"), sim_server))
    process = await asyncio.create_subprocess_exec(
        node, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    seen = []
    async with asyncio.timeout(20):
        while line := (await process.stdout.readline()).decode():
            seen.append(line.strip())
            if line.startswith("scan within"):
                await play_the_phone(sim_server)
        errors = (await process.stderr.read()).decode()
        assert await process.wait() == 0, errors
    assert errors == ""  # no crash, no module-type warning
    assert seen == JS_OUTPUT


@pytest.fixture
def page_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Another origin serving a page with the example as its module script."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", site
    finally:
        httpd.shutdown()
        httpd.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


PAGE = """<!doctype html>
<link rel="icon" href="data:,">
<script type="importmap">{"imports": {"socket.io-client": "./socket.io.esm.min.js"}}</script>
<script type="module" src="./example.mjs"></script>
"""


async def test_the_js_example_runs_in_chromium(
    page_site: tuple[str, Path], browser: Any, tmp_path: Path
) -> None:
    if not NODE_MODULES.is_dir():
        pytest.skip("needs tests/e2e/node/node_modules (npm ci --prefix tests/e2e/node)")
    origin, site = page_site
    settings = Settings(
        simulate=True,
        sim_qr_timeouts=(QR_TIMEOUT,),
        data_dir=tmp_path / "data",
        allowed_origins=(origin,),  # PAIRGATE_ALLOWED_ORIGINS, as the README says
    )
    async with running(settings) as server:
        bundle = NODE_MODULES / "socket.io-client" / "dist" / "socket.io.esm.min.js"
        shutil.copyfile(bundle, site / "socket.io.esm.min.js")
        (site / "example.mjs").write_text(example(doc_block("js-client"), server))
        (site / "index.html").write_text(PAGE)
        page = await (await browser.new_context()).new_page()
        seen: list[str] = []
        shown = asyncio.Event()
        done = asyncio.Event()

        def console(message: Any) -> None:
            seen.append(message.text)
            shown.set() if message.text.startswith("scan within") else None
            done.set() if message.text.startswith(("ready", "ended")) else None

        page.on("console", console)
        page.on("pageerror", lambda error: seen.append(f"page error: {error}"))
        await page.goto(f"{origin}/index.html")
        async with asyncio.timeout(20):
            await shown.wait()
            await play_the_phone(server)
            await done.wait()
    assert seen == JS_OUTPUT


async def test_the_curl_walk_through_scans_the_shown_code(sim_server: Server) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    async with clients(sim_server.url) as [client]:
        await client.call("session.create", {"key": KEY, "name": "My Device", "engine": "baileys"})
        await client.wait_for("session.qr")
        walk = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            example(doc_block("curl-scan"), sim_server),
            stdout=asyncio.subprocess.PIPE,
        )
        out = (await asyncio.wait_for(walk.communicate(), 20))[0].decode()
        assert walk.returncode == 0
        await client.wait_for("session.ready")
    assert f"prints `{out}`" in (ROOT / "README.md").read_text()  # what the README says


async def test_pairgate_scan_from_a_terminal(sim_server: Server) -> None:
    if not (ROOT / ".venv" / "bin" / "pairgate").exists():
        pytest.skip("the README's command runs ./.venv/bin/pairgate (scripts/test makes it)")
    scan = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        example(doc_block("terminal-scan"), sim_server),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert scan.stdout is not None
    seen = []
    async with asyncio.timeout(20):
        while line := (await scan.stdout.readline()).decode():
            seen.append(line.rstrip("\n"))
            if line.startswith("Scan within"):
                await play_the_phone(sim_server)
        assert await scan.wait() == 0
    assert seen[:2] == [
        "created",
        f"Scan within {QR_TIMEOUT:g} s (WhatsApp: Linked devices → Link a device):",
    ]
    assert seen[-2:] == ["authenticated", "ready"]
    assert sim_server.pairgate.sessions.get(KEY).name == "My Device"
