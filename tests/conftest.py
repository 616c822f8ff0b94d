from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from entrypoints.settings import Settings
from tests.helpers import (
    POSTGRES_URL,
    Server,
    postgres_available,
    postgres_schema,
    start_server,
    tasks_shown_before_timeout,
)

FAST_QR = (2.0, 2.0)
TEST_CIPHER_KEY = "EfOssJp2onwPHNocJcWH1JYV92G0C0gIv/wB2vOiUMQ="  # for tests only


@pytest.fixture(params=["sqlite", "postgres", "postgres+cipher"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, object]]:
    """The same scenarios on the embedded SQLite file, on a real PostgreSQL, and encrypted."""
    if request.param == "sqlite":
        yield {"data_dir": tmp_path / "data"}
        return
    cipher = {"cipher_key": TEST_CIPHER_KEY} if request.param.endswith("+cipher") else {}
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with postgres_schema() as schema:
        yield {"database_url": f"{POSTGRES_URL}?schema={schema}", "data_dir": tmp_path, **cipher}


@pytest.fixture
def settings(store_settings: dict[str, object]) -> Settings:
    return Settings(simulate=True, sim_qr_timeouts=FAST_QR, expiry_grace=1.0, **store_settings)


@pytest.fixture
async def server(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    running = await start_server(settings)
    with tasks_shown_before_timeout(float(request.config.getini("timeout") or 0)):
        yield running
    await running.stop()
