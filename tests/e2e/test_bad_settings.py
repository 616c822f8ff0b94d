"""A setting that cannot work stops `pairgate serve`, `history` and `export` at once:
exit status 2 within 5 s and one line naming the setting and where it points (host,
port, database, schema; never a password), not a traceback or a server that starts and
is never ready."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.service_process import free_port
from tests.helpers import postgres_available

PAIRGATE = str(Path(sys.executable).with_name("pairgate"))
PASSWORD = "s3cret-pw"
# Not a speed target (benchmarks hold those): a bound that only a hang reaches. A start-up
# that imports everything takes seconds on a loaded 2-core machine; the bounded waits
# themselves (CONNECT_TIMEOUT, Redis' socket timeouts) are a few seconds each.
DEADLINE = 25.0


def cases() -> list[tuple[str, dict[str, str], list[str]]]:
    """(what, settings, words the line must hold)."""
    closed = free_port()
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1"
    found = [
        ("log level", {"PAIRGATE_LOG_LEVEL": "loud"}, ["PAIRGATE_LOG_LEVEL", "'debug'"]),
        (
            "not a database URL",
            {"PAIRGATE_DATABASE_URL": f"garbage{PASSWORD}"},
            ["PAIRGATE_DATABASE_URL", "postgresql://"],
        ),
        (
            "a closed port",
            {"PAIRGATE_DATABASE_URL": f"{url}:{closed}/test"},
            ["PAIRGATE_DATABASE_URL", f"127.0.0.1:{closed}", '"test"', "refused"],
        ),
        (
            "a missing tokens file",
            {"PAIRGATE_TOKENS_FILE": "/nonexistent/tokens"},
            ["PAIRGATE_TOKENS_FILE:", "/nonexistent/tokens", "No such file"],
        ),
        (
            "not a Redis URL",
            {"PAIRGATE_REDIS_URL": f"garbage{PASSWORD}"},
            ["PAIRGATE_REDIS_URL", "redis://"],
        ),
        (
            "not a network",
            {"PAIRGATE_PROXY_ALLOWED_NETWORKS": "10.0.0.0/8,10.0.0.0/33"},
            ["PAIRGATE_PROXY_ALLOWED_NETWORKS", "10.0.0.0/33"],
        ),
    ]
    if postgres_available():
        found += [
            (
                "a missing database",
                {"PAIRGATE_DATABASE_URL": f"{url}:5432/nosuchdb"},
                ["PAIRGATE_DATABASE_URL", "127.0.0.1:5432", '"nosuchdb"', "does not exist"],
            ),
            (
                "a missing schema",
                {"PAIRGATE_DATABASE_URL": f"{url}:5432/test?schema=nosuchschema"},
                ["PAIRGATE_DATABASE_URL", '"nosuchschema"', '"test"', "127.0.0.1:5432"],
            ),
        ]
    return found


# Two at a time: each is timed, and the machine may have two cores.
_AT_ONCE = asyncio.Semaphore(2)


async def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRGATE_", "POSTGRES_"))}
    async with _AT_ONCE:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            PAIRGATE,
            *command,
            env=clean | env,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


async def test_each_unusable_setting_stops_every_command_with_one_line(tmp_path: Path) -> None:
    commands = [["serve", "--port", str(free_port())], ["history", "k"]]
    runs = [
        (what, command, words, run(command, env, tmp_path))
        for what, env, words in cases()
        for command in commands + [["export"]] * (what == "a closed port")
    ]
    results = await asyncio.gather(*(started for *_, started in runs))
    for (what, command, words, _), (status, out, err, seconds) in zip(runs, results, strict=True):
        label = f"{what}, pairgate {command[0]}"
        assert status == 2, (label, err)
        assert seconds < DEADLINE, (label, seconds)
        assert out == "" and len(err.splitlines()) == 1, (label, err)
        assert err.startswith("pairgate: "), (label, err)
        for word in words:
            assert word in err, (label, word, err)
        assert PASSWORD not in err, (label, err)
    assert not (tmp_path / "data").exists()  # nothing was created on the way


async def test_an_unreachable_redis_stops_serve(tmp_path: Path) -> None:
    port = free_port()
    env = {"PAIRGATE_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}
    status, out, err, seconds = await run(["serve", "--port", str(free_port())], env, tmp_path)
    assert status == 2 and seconds < DEADLINE, (status, seconds, err)
    assert err.splitlines() == [
        f"pairgate: PAIRGATE_REDIS_URL: cannot reach Redis at 127.0.0.1:{port}: "
        f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."
    ]


@pytest.mark.parametrize("level", ["DEBUG", "warning"])
def test_log_levels_are_read_in_any_case(level: str) -> None:
    from entrypoints.settings import Settings

    assert Settings(log_level=level).log_level == level.lower()
