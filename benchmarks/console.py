"""The operator console with many sessions: how long its devices view takes to show its
first page, and what a search or a filter costs, measured in Debian's Chromium.

    python -m benchmarks.console --sessions 10000 --json console.json

An in-process server (simulator, SQLite in a temporary directory) whose store is filled
directly with `--sessions` sessions of one identity in mixed states (their events written
as pairings would have written them; no engines run), then /console is opened in
Chromium. Reported: navigation start → the first page's rows in the table
(`first_page_ms`), the page's own list request + render (`list_render_ms`), and a search
and a state filter answered by the server (`search_ms`, `filter_ms`: request + render),
each the median of `--repeat` page loads after a first one; and the server's answers to
the list alone (`server_ms`). `fill` is also what the console's browser test uses to put
its sessions in place.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import emit
from domain.application.sessions import DeviceSessions
from domain.model.session import DeviceSession, DisconnectReason

CHROMIUM = "/usr/bin/chromium"
ENGINES = ("simulator", "baileys")
BATCH = 500  # sessions per store transaction


def fill(sessions: DeviceSessions, owner: str, count: int, prefix: str) -> dict[str, str]:
    """`count` sessions of `owner` (keys `<prefix>-00000`...), in six kinds of state in
    turn: created, qr, ready, and disconnected by each of three reasons. Their states."""
    states: dict[str, str] = {}
    events: list[Any] = []
    now = datetime.now(UTC)
    for number in range(count):
        key = f"{prefix}-{number:05d}"
        session = DeviceSession(
            key=key, name=f"Device {number}", engine=ENGINES[number % 2], owner=owner, proxy=None
        )
        kind = number % 6
        if kind >= 1:
            session.issue_qr(f"2@{key},noise,identity,secret", 60, now)
        if kind == 5:
            session.disconnect(DisconnectReason.QR_EXPIRED)
        elif kind >= 2:
            session.authenticate()
            session.mark_ready()
            if kind == 3:
                session.disconnect(DisconnectReason.CONNECTION_LOST)
            elif kind == 4:
                session.disconnect(DisconnectReason.USER_LOGGED_OUT)
        events += session.collect_events()
        states[key] = session.state.value
        if len(events) >= BATCH:
            sessions.events.put(events)
            events = []
    if events:
        sessions.events.put(events)
    return states


async def measure(count: int, repeat: int, samples: int = 20) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from entrypoints.settings import Settings
    from tests.helpers import running

    with tempfile.TemporaryDirectory() as directory:
        # No HTTP rate limit: the list is asked 80 times in a row below.
        settings = Settings(simulate=True, data_dir=Path(directory) / "data", rate_limit_http="")
        async with running(settings) as server:
            started = time.perf_counter()
            fill(server.pairgate.sessions, "default", count, "bench")
            filled_s = time.perf_counter() - started
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                # A first load, not counted: the read model has just been handed the
                # whole fill to project (a list waits for it, up to 2 s), and the server's
                # and the browser's caches are cold.
                await one_load(browser, server.url)
                runs = [await one_load(browser, server.url) for _ in range(repeat)]
                await browser.close()
            server_ms = await server_times(server.url, samples)
    return {
        "sessions": count,
        "fill_s": round(filled_s, 2),
        "repeat": repeat,
        "server_ms": server_ms,
        **{name: statistics.median(run[name] for run in runs) for name in runs[0]},
        "runs": runs,
    }


async def one_load(browser: Any, url: str, token: str | None = None) -> dict[str, float]:
    """One page load's timings (`token`: typed into the page's form when it asks)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{url}/console")
    if token is not None:
        await page.fill("#token", token)
        await page.click("#token-form button[type=submit]")
    await page.wait_for_function("() => window.__firstPageAt != null", timeout=30_000)
    first = await page.evaluate("() => [window.__firstPageAt, window.__consoleRendered]")
    navigation = "performance.getEntriesByType('navigation')[0]"
    loaded = await page.evaluate(f"() => {navigation}.domContentLoadedEventEnd")
    timings = {
        "first_page_ms": round(first[0], 1),
        "dom_content_loaded_ms": round(loaded, 1),
        "list_render_ms": round(first[1], 1),
    }
    for name, field, value in (("search_ms", "#q", "bench-0999"), ("filter_ms", None, "ready")):
        if field is None:
            await page.fill("#q", "")
            await page.select_option("#state-filter", value)
        else:
            await page.fill(field, value)
        loads = await page.evaluate("() => window.__consoleLoads")
        await page.click("#filters button[type=submit]")
        await page.wait_for_function(f"() => window.__consoleLoads > {loads}")
        timings[name] = round(await page.evaluate("() => window.__consoleRendered"), 1)
    await context.close()
    return timings


# The list's answers alone (median of --samples, ms): a first page; a search matching ten keys; a
# search matching nothing, which reads every row of the owner (the worst case); a filter.
QUERIES = {
    "first_page": "",
    "search_10": "q=bench-0999",
    "search_none": "q=nothing-matches",
    "state_ready": "state=ready",
}


async def server_times(
    url: str, samples_per_query: int, token: str | None = None
) -> dict[str, float]:
    import httpx

    times: dict[str, float] = {}
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
        for name, query in QUERIES.items():
            samples = []
            for _ in range(samples_per_query):
                started = time.perf_counter()
                answer = await http.get(f"/api/sessions?{query}")
                samples.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
            times[name] = round(statistics.median(samples), 2)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20, help="requests per list query")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = asyncio.run(measure(arguments.sessions, arguments.repeat, arguments.samples))
    emit(result, arguments.json)


if __name__ == "__main__":
    main()
