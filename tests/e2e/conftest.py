"""Fixtures for end-to-end tests: real `pairgate serve` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.service_process import ServiceProcess


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts `pairgate serve` processes; whatever still runs at teardown is killed."""
    started: list[ServiceProcess] = []

    def start(
        data_dir: Path,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> ServiceProcess:
        log = tmp_path / f"pairgate-{len(started)}.log"
        service = ServiceProcess.start(data_dir, log, env, preexec_fn)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.kill()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright (the browser tests skip where it is missing)."""
    from tests.e2e.test_scan_page import CHROMIUM, CHROMIUM_ARGS, playwright_api

    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()
