"""The operator console in Debian's Chromium (Playwright) on a real server with the
simulator and two identities: 200 sessions in mixed states, a pairing done elsewhere seen
live, a timeline checked against the stored history, a logout heard by the key's room,
another identity's view, and an axe-core scan (vendored in tests/e2e/node, offline).

Set PAIRGATE_SAVE_SCREENSHOTS=1 to refresh docs/screenshots/console-{devices,timeline}.png.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from benchmarks.console import QUERIES, fill, one_load, server_times
from entrypoints.settings import Settings
from tests.e2e.test_scan_page import SCREENSHOTS, expect
from tests.helpers import Client, Server, decode_qr, running, unique_key

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
AXE = Path(__file__).parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
PAGE_SIZE = 50


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(
        simulate=True,
        # Three codes: two rotate away quickly, the third waits for the scan.
        sim_qr_timeouts=(0.4, 0.4, 30.0),
        tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"),
        rate_limit_http="",
        data_dir=tmp_path / "data",
    )
    async with running(settings) as running_server:
        yield running_server


async def open_console(browser: Any, url: str, token: str, width: int = 1100) -> Any:
    context = await browser.new_context(locale="en-US", viewport={"width": width, "height": 900})
    page = await context.new_page()
    page.csp_violations = []  # the page runs under the server's Content-Security-Policy
    page.on(
        "console",
        lambda m: "Content Security Policy" in m.text and page.csp_violations.append(m.text),
    )
    await page.goto(f"{url}/console")
    await page.fill("#token", token)  # asked for once, on a 401
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("body")).to_have_attribute("data-live", "true")
    assert token not in page.url
    return page


async def shown_states(page: Any) -> dict[str, str]:
    rows = await page.eval_on_selector_all(
        "#rows tr", "trs => trs.map(tr => [tr.dataset.key, tr.dataset.state])"
    )
    return dict(rows)


async def pair_with_three_codes(server: Server, client: Client, key: str) -> str:
    ack = await client.call("session.create", {"key": key, "name": "Till", "engine": "simulator"})
    assert ack["ok"], ack
    code = decode_qr((await client.wait_for("session.qr", 3))["qr"])
    scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code}, ALICE)
    assert scanned.is_success, scanned.text
    return code


def millis(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


async def test_the_console_end_to_end(server: Server, browser: Any, tmp_path: Path) -> None:
    stored = fill(server.pairgate.sessions, "alice", 199, "fleet")
    bobs = fill(server.pairgate.sessions, "bob", 5, "bobs")
    # A name that is markup: shown as text, never run.
    markup = '<img src=x onerror="window.__pwned=1">'
    async with httpx.AsyncClient(base_url=server.url) as http:
        created = await http.post(
            "/api/sessions",
            json={"key": "fleet-markup", "name": markup, "engine": "simulator"},
            headers={"authorization": f"Bearer {ALICE}"},
        )
        assert created.status_code == 201, created.text
    stored = {"fleet-markup": "qr", **stored}  # (it shows its first code at once)
    page = await open_console(browser, server.url, ALICE)
    page_url = page.url

    # 200 sessions in mixed states, a page at a time from the server, each state right.
    await expect(page.locator("#rows tr")).to_have_count(PAGE_SIZE)
    for pages in range(2, 5):
        await page.click("#more")
        await expect(page.locator("#rows tr")).to_have_count(PAGE_SIZE * pages)
    assert await shown_states(page) == stored
    markup_row = page.locator('#rows tr[data-key="fleet-markup"] td').nth(1)
    await expect(markup_row).to_have_text(markup)
    assert await page.evaluate("() => window.__pwned") is None
    await expect(page.locator("#more")).to_be_hidden()
    counts = await page.eval_on_selector_all(
        "#counts li",
        "lis => lis.map(li => [li.dataset.state, +li.querySelector('strong').textContent])",
    )
    assert dict(counts) == {
        state: list(stored.values()).count(state)
        for state in ("created", "qr", "authenticated", "ready", "disconnected")
    }
    row = page.locator('#rows tr[data-key="fleet-00004"]')
    await expect(row.locator(".reason")).to_have_text("user logged out")
    await expect(row.locator("time")).to_have_text(re.compile(r"^(now|\d+ seconds? ago)$"))

    # Filtering and searching are the server's: each is a request, and its answer is shown.
    await page.select_option("#state-filter", "ready")
    async with page.expect_request(lambda r: "state=ready" in r.url and "/api/sessions?" in r.url):
        await page.click("#filters button[type=submit]")
    ready = [k for k, state in stored.items() if state == "ready"]
    await expect(page.locator("#rows tr")).to_have_count(len(ready))
    assert set((await shown_states(page)).values()) == {"ready"}
    await page.select_option("#state-filter", "")
    await page.fill("#q", "fleet-0018")
    async with page.expect_request(lambda r: "q=fleet-0018" in r.url):
        await page.click("#filters button[type=submit]")
    await expect(page.locator("#rows tr")).to_have_count(10)
    await page.fill("#q", "")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#rows tr")).to_have_count(PAGE_SIZE)
    if os.environ.get("PAIRGATE_SAVE_SCREENSHOTS"):
        await page.screenshot(path=str(SCREENSHOTS / "console-devices.png"))

    # A pairing done elsewhere (three codes shown, then scanned): its row turns ready live.
    key = unique_key("till")
    client = await Client().connect(server.url, auth={"token": ALICE})
    try:
        code = await pair_with_three_codes(server, client, key)
        await client.wait_for("session.ready")
        heard = time.monotonic()
        # The target is 1 s; the bound here only catches a row that never turns
        # (a loaded 2-core machine stretches everything): the time is printed.
        await expect(page.locator(f'#rows tr[data-key="{key}"]')).to_have_attribute(
            "data-state", "ready", timeout=5000
        )
        print(f"\nrow ready {1000 * (time.monotonic() - heard):.0f} ms after session.ready")
        assert page.url == page_url  # no reload, no navigation

        # Its timeline: each stored step, the durations the stored history gives.
        opener = page.locator(f'#rows tr[data-key="{key}"] button')
        await opener.focus()
        await page.keyboard.press("Enter")  # from the keyboard
        await expect(page.locator("#timeline-box")).to_be_focused()
        async with httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.get(
                f"/api/sessions/{key}/history", headers={"authorization": f"Bearer {ALICE}"}
            )
        assert answer.status_code == 200, answer.text
        events = answer.json()["events"]
        types = [event["type"] for event in events]
        assert types == [
            "SessionCreated",
            "QrIssued",
            "QrIssued",
            "QrIssued",
            "Authenticated",
            "Ready",
        ]
        timeline = page.locator("#timeline li")
        await expect(timeline).to_have_count(len(events))
        assert await timeline.evaluate_all("lis => lis.map(li => li.dataset.type)") == types
        await expect(page.locator("#sum-codesBeforeScan")).to_have_text("3")
        to_scan = millis(events[4]["timestamp"]) - millis(events[1]["timestamp"])
        to_ready = millis(events[5]["timestamp"]) - millis(events[4]["timestamp"])
        shown_scan = int(await page.get_attribute("#sum-timeToScan", "data-value"))
        shown_ready = int(await page.get_attribute("#sum-timeToReady", "data-value"))
        assert abs(shown_scan - to_scan) <= 1 and abs(shown_ready - to_ready) <= 1
        assert 700 <= shown_scan  # two codes of 0.4 s rotated away first
        assert code not in await page.content()  # fingerprints only
        await timeline.nth(4).get_by_role("button").click()
        await expect(page.locator("#at-state")).to_contain_text("version 5: authenticated")
        async with page.expect_download() as download_info:
            await page.click("#export")
        exported = json.loads(Path(await (await download_info.value).path()).read_text())
        assert exported == {"key": key, "events": events}
        if os.environ.get("PAIRGATE_SAVE_SCREENSHOTS"):
            await page.screenshot(path=str(SCREENSHOTS / "console-timeline.png"), full_page=True)

        # Log out from the console, confirmed: the key's room hears the seed's payload.
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#act-logout")
        assert await client.wait_for("session.disconnected") == {
            "key": key,
            "reason": "user logged out",
        }
        await expect(page.locator("#action-result")).to_contain_text("Log out: done")
        # Refused the second time: the typed error is shown.
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#act-logout")
        await expect(page.locator("#action-result")).to_contain_text("(invalid_transition)")

        # A pairing code for the ended session, confirmed: the code is shown.
        await page.fill("#phone", "628123456789")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#pair-form button[type=submit]")
        await expect(page.locator("#action-result")).to_contain_text(
            re.compile(r"Pairing code for .*: [A-Z0-9]{4}-[A-Z0-9]{4}")
        )
        # Delete: nothing without the confirmation, then revoked.
        page.once("dialog", lambda dialog: dialog.dismiss())
        await page.click("#act-delete")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.click("#act-delete")
        assert (await client.wait_for("session.disconnected", 2))["reason"] == "session revoked"
        await expect(page.locator(f'#rows tr[data-key="{key}"] .reason')).to_have_text(
            "session revoked"
        )
    finally:
        await client.close()

    # Escape closes the timeline and gives the focus back to its row.
    await page.locator("#timeline-box").focus()
    await page.keyboard.press("Escape")
    await expect(page.locator("#timeline-box")).to_be_hidden()
    await expect(page.locator(f'#rows tr[data-key="{key}"] button')).to_be_focused()

    # Indonesian, from the same data.
    await page.click('button[data-lang="id"]')
    await expect(page.locator("h1")).to_have_text("Konsol pairgate")
    await expect(page.locator('#rows tr[data-state="ready"] .state').first).to_have_text("siap")

    # Accessible (axe-core, injected from the vendored package) and readable at 360 px.
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: npm ci --prefix tests/e2e/node")
    await page.set_viewport_size({"width": 360, "height": 800})
    # Evaluated, not a <script>: the page's Content-Security-Policy refuses inline scripts.
    await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    result = await page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    serious = [v["id"] for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == [], serious
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360

    assert page.csp_violations == []

    # Another identity sees its own sessions only.
    theirs = await open_console(browser, server.url, BOB)
    await expect(theirs.locator("#rows tr")).to_have_count(5)
    assert await shown_states(theirs) == bobs

    # benchmarks.console's measurements work (its smoke, on this server and browser).
    timings = await one_load(browser, server.url, BOB)
    assert set(timings) == {
        "first_page_ms", "dom_content_loaded_ms", "list_render_ms", "search_ms", "filter_ms"
    }  # fmt: skip
    assert all(value > 0 for value in timings.values())
    assert set(await server_times(server.url, 1, BOB)) == set(QUERIES)

    # Link: the Scan-QR page for a new key, in this tab, with the token the console kept.
    new_key = unique_key("new")
    await theirs.fill("#link-key", new_key)
    await theirs.click("#link-form button[type=submit]")
    await expect(theirs.locator("#status")).to_have_attribute("data-state", "qr")
    assert f"key={new_key}" in theirs.url and BOB not in theirs.url
