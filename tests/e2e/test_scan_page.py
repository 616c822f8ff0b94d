"""The Scan-QR page in a real browser (Debian's Chromium driven by Playwright) on a real server.

The QR code is read back from a screenshot of the page, as a phone's camera would.
Set PAIRGATE_SAVE_SCREENSHOTS=1 to refresh docs/screenshots/{qr,ready,disconnected}.png.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from adapters.http.scan_page import REASON_TEXTS
from domain.model.session import DisconnectReason
from entrypoints.settings import Settings
from tests.helpers import Server, decode_qr, running, unique_key

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 15_000

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium is missing: apt-get install -y chromium"
)
expect = playwright_api.expect
expect.set_options(timeout=TIMEOUT_MS)

# Every value #status[data-state] takes, in order, so that fast transitions are seen too.
RECORD_STATES = """
window.__states = [];
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  const note = () => window.__states.push(status.getAttribute("data-state"));
  note();
  new MutationObserver(note).observe(status, {attributes: true, attributeFilter: ["data-state"]});
});
"""


async def open_page(browser: Any, url: str, locale: str = "en-US") -> Any:
    context = await browser.new_context(locale=locale, viewport={"width": 800, "height": 900})
    page = await context.new_page()
    await page.add_init_script(RECORD_STATES)
    await page.goto(url)
    return page


def status(page: Any) -> Any:
    return page.locator("#status")


async def wait_for_qr(page: Any) -> None:
    await expect(status(page)).to_have_attribute("data-state", "qr")
    await expect(page.locator("#qr")).to_have_attribute("src", _DATA_URI)
    await page.wait_for_function(
        "() => { const qr = document.getElementById('qr');"
        " return qr.complete && qr.naturalWidth > 0 && qr.getBoundingClientRect().width > 0; }"
    )


async def screenshot(page: Any, tmp_path: Path, name: str) -> bytes:
    png: bytes = await page.screenshot(full_page=True)
    (tmp_path / f"{name}.png").write_bytes(png)
    if os.environ.get("PAIRGATE_SAVE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / f"{name}.png", SCREENSHOTS / f"{name}.png")
    return png


def decode_screenshot(png: bytes) -> str:
    image = Image.open(io.BytesIO(png))
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1, "expected exactly one QR code on the page"
    return results[0].text


async def seconds_left(page: Any) -> int:
    await expect(page.locator("#countdown")).to_have_attribute("data-seconds", _DIGITS)
    return int(await page.locator("#countdown").get_attribute("data-seconds"))


async def wait_for_state(page: Any, state: str) -> list[str]:
    await page.wait_for_function(f"() => window.__states.includes({state!r})")
    states: list[str] = await page.evaluate("() => window.__states")
    return states


_DATA_URI = re.compile(r"^data:image/png;base64,")
_DIGITS = re.compile(r"^\d+$")


@pytest.fixture
async def sim_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(Settings(simulate=True, data_dir=tmp_path / "data")) as server:
        yield server


async def test_scan_the_screenshot_then_authenticated_then_ready(
    sim_server: Server, browser: Any, tmp_path: Path
) -> None:
    key = unique_key("page")
    page = await open_page(browser, f"{sim_server.url}/?key={key}")
    await wait_for_qr(page)
    await expect(page.locator("#key")).to_have_value(key)
    await expect(page.locator("#name")).to_have_value(key)  # default name = key
    await expect(page.locator("#engine")).to_have_value("baileys")
    assert 0 < await seconds_left(page) <= 60
    assert await page.locator("#qr").get_attribute("alt")

    code = decode_screenshot(await screenshot(page, tmp_path, "qr"))
    assert code.startswith("2@") and len(code.split(",")) == 4
    scanned = await sim_server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
    assert scanned.status_code == 200, scanned.text

    states = await wait_for_state(page, "ready")
    assert states.index("authenticated") < states.index("ready")
    await expect(status(page)).to_have_attribute("data-state", "ready")
    await expect(status(page)).to_contain_text("ready")
    await expect(page.locator("#qr")).to_be_hidden()
    await screenshot(page, tmp_path, "ready")
    kinds = [type(e).__name__ for e in sim_server.pairgate.sessions.history(key)]
    assert kinds == ["SessionCreated", "QrIssued", "Authenticated", "Ready"]


async def test_a_reload_in_qr_state_rejoins_the_same_session(
    sim_server: Server, browser: Any
) -> None:
    key = unique_key("page")
    page = await open_page(browser, f"{sim_server.url}/?key={key}&name=Kitchen%20tablet")
    await wait_for_qr(page)
    before = await seconds_left(page)
    first_src = await page.locator("#qr").get_attribute("src")

    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(str(frame))))
    await page.reload()
    await wait_for_qr(page)
    # The reloaded page asks to rejoin its session; it does not create one.
    assert any('"session.join"' in frame for frame in sent), sent
    assert not any('"session.create"' in frame for frame in sent), sent
    await expect(page.locator("#key")).to_have_value(key)
    await expect(page.locator("#name")).to_have_value("Kitchen tablet")
    assert await seconds_left(page) <= before
    assert decode_qr(await page.locator("#qr").get_attribute("src")) == decode_qr(first_src)
    # The same session: no second create, no restart, one engine.
    kinds = [type(e).__name__ for e in sim_server.pairgate.sessions.history(key)]
    assert kinds == ["SessionCreated", "QrIssued"]
    assert key in sim_server.pairgate.service.running_keys


async def test_a_socket_reconnect_rejoins_with_session_join(
    sim_server: Server, browser: Any
) -> None:
    key = unique_key("page")
    page = await open_page(browser, f"{sim_server.url}/?key={key}")
    await wait_for_qr(page)
    # Drop the Socket.IO connection from the client side; socket.io-client reconnects.
    seen = await page.evaluate("() => window.__states.length")
    await page.evaluate("() => window.__pairgateSocket.io.engine.close()")
    # The page notices (connecting), reconnects, rejoins and is back in qr with the code.
    await page.wait_for_function(
        "seen => { const after = window.__states.slice(seen);"
        " const lost = after.indexOf('connecting');"
        " return lost >= 0 && after.indexOf('qr', lost) > lost; }",
        arg=seen,
    )
    await wait_for_qr(page)
    assert await page.evaluate("() => window.__pairgateSocket.connected")
    code = decode_qr(await page.locator("#qr").get_attribute("src"))
    current = await sim_server.get(f"/api/simulator/devices/{key}/code")
    assert current.json()["code"] == code


async def test_expiry_shows_qr_expired(browser: Any, tmp_path: Path) -> None:
    settings = Settings(
        simulate=True, data_dir=tmp_path / "data", sim_qr_timeouts=(1.0, 1.0), expiry_grace=0.5
    )
    async with running(settings) as server:
        key = unique_key("page")
        page = await open_page(browser, f"{server.url}/?key={key}")
        await expect(status(page)).to_have_attribute("data-state", "disconnected")
        await expect(status(page)).to_contain_text("qr expired")
        # The explanation is the server's (adapters/http/scan_page.py), not a copy in the page.
        await expect(status(page)).to_contain_text(REASON_TEXTS["en"][DisconnectReason.QR_EXPIRED])
        await expect(page.locator("#qr")).to_be_hidden()
        await screenshot(page, tmp_path, "disconnected")


async def test_the_simulate_scan_button_links_the_device(sim_server: Server, browser: Any) -> None:
    key = unique_key("page")
    page = await open_page(browser, f"{sim_server.url}/scan?key={key}")
    await wait_for_qr(page)
    await page.get_by_role("button", name="Simulate scan").click()
    states = await wait_for_state(page, "ready")
    assert states.index("authenticated") < states.index("ready")
    await expect(page.locator("#sim-result")).to_contain_text("done")

    # The other phone moves: log out ends the link with its reason.
    await page.get_by_role("button", name="Log out on the phone").click()
    await expect(status(page)).to_have_attribute("data-state", "disconnected")
    await expect(status(page)).to_contain_text("user logged out")


async def test_the_key_field_takes_the_servers_pattern(sim_server: Server, browser: Any) -> None:
    page = await open_page(browser, f"{sim_server.url}/")
    key = page.locator("#key")
    for value, valid in [("device-1.a_b", True), ("..", False), ("a b", False), ("é", False)]:
        await key.fill(value)
        assert await key.evaluate("el => el.checkValidity()") is valid, value


async def test_a_session_error_is_shown(sim_server: Server, browser: Any) -> None:
    page = await open_page(browser, f"{sim_server.url}/?key=phone1&engine=nope")
    await expect(status(page)).to_have_attribute("data-state", "error")
    await expect(status(page)).to_contain_text("engine 'nope' is not available")


async def test_language_follows_the_browser_and_the_switch(
    sim_server: Server, browser: Any
) -> None:
    page = await open_page(browser, f"{sim_server.url}/", locale="id-ID")
    await expect(page.locator("h1")).to_have_text("Tautkan perangkat WhatsApp")
    await expect(page.locator("html")).to_have_attribute("lang", "id")

    page = await open_page(browser, f"{sim_server.url}/?key={unique_key('page')}")
    await wait_for_qr(page)
    await expect(page.locator("h1")).to_have_text("Link a WhatsApp device")
    await page.get_by_role("button", name="Bahasa Indonesia").click()
    await expect(page.locator("html")).to_have_attribute("lang", "id")
    await expect(page.locator("h1")).to_have_text("Tautkan perangkat WhatsApp")
    await expect(status(page)).to_contain_text("Pindai kode QR")
    await expect(page.locator("#countdown")).to_contain_text("detik")
    await expect(page.get_by_label("Kunci perangkat")).to_be_visible()
    await expect(page.get_by_role("button", name="Bahasa Indonesia")).to_have_attribute(
        "aria-pressed", "true"
    )


async def test_the_page_works_from_the_keyboard(sim_server: Server, browser: Any) -> None:
    page = await open_page(browser, f"{sim_server.url}/")
    await expect(status(page)).to_have_attribute("data-state", "idle")
    await page.get_by_label("Device key").focus()
    await page.keyboard.type(unique_key("kbd"))
    await page.keyboard.press("Enter")
    await wait_for_qr(page)
    await expect(page.locator("#name")).to_have_value(re.compile(r"^kbd-"))


async def test_static_files_info_and_code_endpoints(tmp_path: Path) -> None:
    async with running(Settings(simulate=True, data_dir=tmp_path / "sim")) as server:
        for path in ("/", "/scan"):
            page = await server.get(path)
            assert page.status_code == 200 and 'id="status"' in page.text
        bundle = await server.get("/static/vendor/socket.io.min.js")
        assert bundle.status_code == 200 and "Socket.IO v4.8.4" in bundle.text
        assert (await server.get("/api/info")).json() == {"simulate": True}
        missing = await server.get("/api/simulator/devices/nobody/code")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
    async with running(Settings(simulate=False, data_dir=tmp_path / "real")) as server:
        assert (await server.get("/api/info")).json() == {"simulate": False}
        assert (await server.get("/api/simulator/devices/nobody/code")).status_code == 404


async def test_with_tokens_the_page_uses_its_token_for_everything(
    browser: Any, tmp_path: Path
) -> None:
    settings = Settings(simulate=True, data_dir=tmp_path / "data", tokens="carol:carol-secret")
    async with running(settings) as server:
        refused = await open_page(browser, f"{server.url}/?key={unique_key('page')}")
        await expect(status(refused)).to_have_attribute("data-state", "error")
        key = unique_key("page")
        page = await open_page(browser, f"{server.url}/?key={key}#token=carol-secret")
        await wait_for_qr(page)
        await page.get_by_role("button", name="Simulate scan").click()
        await wait_for_state(page, "ready")
        session = await server.pairgate.service.find(key)
        assert session is not None and session.owner == "carol"


async def test_the_passkey_step_is_explained_and_so_is_its_end(
    sim_server: Server, browser: Any
) -> None:
    key = unique_key("page")
    page = await open_page(browser, f"{sim_server.url}/?key={key}", locale="id-ID")
    await wait_for_qr(page)
    code = (await sim_server.get(f"/api/simulator/devices/{key}/code")).json()["code"]
    await sim_server.post(f"/api/simulator/devices/{key}/scan_passkey", {"code": code})
    await expect(status(page)).to_have_attribute("data-state", "passkey")
    await expect(status(page)).to_contain_text("WhatsApp meminta passkey akun ini")
    await expect(page.locator("#qr-box")).to_be_hidden()
    await page.get_by_role("button", name="English").click()
    await expect(status(page)).to_contain_text("asks for this account's passkey")
    # A wrong answer (from another client of the key): the end says why, beside the reason.
    wrong = {"key": key, "response": {"id": "x", "response": {"clientDataJSON": "e30"}}}
    await page.evaluate("(r) => window.__pairgateSocket.emit('session.passkey_response', r)", wrong)
    await expect(status(page)).to_have_attribute("data-state", "disconnected")
    await expect(status(page)).to_contain_text("session revoked")
    await expect(status(page)).to_contain_text("WhatsApp refused the passkey")
