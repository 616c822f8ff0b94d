"""Issue 19's attacks on the Scan page, in a real browser (Debian's Chromium) on a real server:
a foreign page framing it to unlink a device, a page load unlinking one, its content
security policy, and tokens in URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from entrypoints.settings import Settings
from tests.e2e.test_scan_page import (
    CHROMIUM,
    expect,
    status,
    wait_for_qr,
)
from tests.helpers import Client, Server, pair, running, simulated_keys, unique_key

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium is missing: apt-get install -y chromium"
)
# Every content security policy violation the page reports, for the test to read.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture
def sim_settings(tmp_path: Path) -> Settings:
    return Settings(
        simulate=True, data_dir=tmp_path / "data", sim_qr_timeouts=(30.0, 30.0), recover=False
    )


@pytest.fixture
async def offline_device(sim_settings: Settings) -> AsyncIterator[tuple[Server, str]]:
    """A paired device that is offline holding its credentials (its server was restarted and
    did not resume it), and the server now answering for it."""
    key = unique_key("victim")
    async with running(sim_settings) as first:
        client = await Client().connect(first.url)
        await pair(first, client, key)
        await client.close()
    async with running(sim_settings) as server:
        session = await server.pairgate.service.find(key)
        assert session is not None and session.holds_credentials
        assert simulated_keys(sim_settings) == 1
        yield server, key


@asynccontextmanager
async def attacker_site(html: str) -> AsyncIterator[str]:
    """Another site on the local network (another origin: 127.0.0.2) serving `html`.
    (Chromium refuses public sites framing loopback addresses; other browsers do not.)"""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.2:{port}/"
    finally:
        await runner.cleanup()


def history(server: Server, key: str) -> list[str]:
    return [type(e).__name__ for e in server.pairgate.sessions.history(key)]


async def test_a_foreign_page_cannot_frame_the_scan_page(
    offline_device: tuple[Server, str], sim_settings: Settings, browser: Any
) -> None:
    server, key = offline_device
    target = f"{server.url}/scan?key={key}&engine=baileys"
    attack = f'<html><body><iframe src="{target}" style="display:none"></iframe></body></html>'
    context = await browser.new_context()
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    async with attacker_site(attack) as attacker:
        await page.goto(attacker)  # waits for `load`: for the frame, loaded or refused

    assert any(url.startswith(f"{server.url}/scan") for url in requested), requested
    assert not any("/static/scan.js" in url for url in requested), requested  # never ran
    assert simulated_keys(sim_settings) == 1
    assert history(server, key)[-1] == "Disconnected"
    await context.close()


async def test_opening_the_page_on_an_offline_device_asks_before_relinking(
    offline_device: tuple[Server, str], sim_settings: Settings, browser: Any
) -> None:
    server, key = offline_device
    before = history(server, key)
    context = await browser.new_context()
    page = await context.new_page()
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(str(frame))))
    await page.goto(f"{server.url}/scan?key={key}")

    relink = page.get_by_role("button", name="Re-link this device")
    await expect(relink).to_be_visible()
    await expect(status(page)).to_contain_text("still linked")
    assert any('"session.create"' in frame for frame in sent), sent  # what a load sends
    assert not any('"relink"' in frame for frame in sent), sent
    assert simulated_keys(sim_settings) == 1
    assert history(server, key) == before  # the load recorded nothing

    # Changing one's mind keeps the link.
    page.once("dialog", lambda dialog: dialog.dismiss())
    await relink.click()
    await expect(relink).to_be_visible()
    assert not any('"relink"' in frame for frame in sent), sent
    assert simulated_keys(sim_settings) == 1

    # A deliberate click and a confirmation re-link it: a new pairing, a new QR code.
    page.once("dialog", lambda dialog: dialog.accept())
    await relink.click()
    await wait_for_qr(page)
    await expect(relink).to_be_hidden()
    assert any('"relink":true' in frame for frame in sent), sent
    assert simulated_keys(sim_settings) == 0
    assert history(server, key)[-2:] == ["Restarted", "QrIssued"]
    await context.close()


async def test_the_page_works_under_its_content_security_policy(
    sim_settings: Settings, browser: Any
) -> None:
    async with running(sim_settings) as server:
        context = await browser.new_context()
        page = await context.new_page()
        await page.add_init_script(RECORD_VIOLATIONS)
        key = unique_key("csp")
        response = await page.goto(f"{server.url}/scan?key={key}")
        assert response is not None
        policy = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, policy

        await wait_for_qr(page)
        await page.get_by_role("button", name="Simulate scan").click()
        await expect(status(page)).to_have_attribute("data-state", "ready")
        await page.get_by_role("button", name="Bahasa Indonesia").click()
        await expect(page.locator("h1")).to_have_text("Tautkan perangkat WhatsApp")
        assert await page.evaluate("() => window.__violations") == []
        await context.close()


async def test_the_page_puts_its_token_in_no_url(tmp_path: Path, browser: Any) -> None:
    secret = "carol-secret-7d1e"
    settings = Settings(simulate=True, data_dir=tmp_path / "data", tokens=f"carol:{secret}")
    async with running(settings) as server:
        context = await browser.new_context()
        page = await context.new_page()
        await page.add_init_script("window.__states = [];")
        urls: list[str] = []
        page.on("request", lambda request: urls.append(request.url))
        page.on("websocket", lambda ws: urls.append(ws.url))
        key = unique_key("token")
        # The fragment never leaves the browser; the page moves it to sessionStorage.
        await page.goto(f"{server.url}/scan?key={key}#token={secret}")
        await wait_for_qr(page)
        assert secret not in page.url
        await page.get_by_role("button", name="Simulate scan").click()
        await expect(status(page)).to_have_attribute("data-state", "ready")
        # A reload keeps working: the token is in the tab's sessionStorage.
        await page.reload()
        await expect(status(page)).to_have_attribute("data-state", "ready")
        session = await server.pairgate.service.find(key)
        assert session is not None and session.owner == "carol"

        # A token in the query string is not used (it was sent already), and the page says
        # how to pass it instead; it is gone from the address bar.
        other = await context.new_page()
        other.on("request", lambda request: urls.append(request.url.replace(secret, "<q>")))
        await other.goto(f"{server.url}/scan?key={unique_key('token')}&token={secret}")
        await expect(status(other)).to_contain_text("#token=")
        assert secret not in other.url

        leaked = [url for url in urls if secret in url]
        assert not leaked, leaked
        assert any("/socket.io/" in url for url in urls), urls
        assert any("/api/simulator/devices/" in url for url in urls), urls
        await context.close()
