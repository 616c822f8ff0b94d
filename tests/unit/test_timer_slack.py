"""adapters/timer_slack: the event loop's timers may fire late; Go's runtime keeps the kernel's."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from adapters.timer_slack import kernel_timer_slack, set_timer_slack, timer_slack_ns

T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="timer slack is Linux's"
)


def in_a_thread(work: Callable[[], T]) -> T:
    """`work()` on a thread of its own: the slack is per thread, and pytest's must stay."""
    outcome: list[T] = []
    thread = threading.Thread(target=lambda: outcome.append(work()))
    thread.start()
    thread.join()
    return outcome[0]


def test_the_calling_thread_gets_the_slack_and_zero_leaves_the_default() -> None:
    def work() -> tuple[int | None, bool, int | None, bool, int | None]:
        before = timer_slack_ns()
        applied = set_timer_slack(30)
        after = timer_slack_ns()
        return before, applied, after, set_timer_slack(0), timer_slack_ns()

    before, applied, after, zero_applied, after_zero = in_a_thread(work)
    assert before is not None and before < 30_000_000
    assert applied and after == 30_000_000
    assert not zero_applied and after_zero == 30_000_000


def test_kernel_timer_slack_puts_back_the_slack_from_before_for_a_while() -> None:
    def work() -> tuple[int | None, int | None, int | None]:
        before = timer_slack_ns()
        set_timer_slack(40)
        with kernel_timer_slack():
            inside = timer_slack_ns()
        return before, inside, timer_slack_ns()

    before, inside, after = in_a_thread(work)
    assert inside == before and after == 40_000_000


def test_neonizes_go_threads_start_with_the_kernels_slack() -> None:
    # A process of its own: Go's runtime starts once per process.
    script = """
import os
from adapters.timer_slack import set_timer_slack
from adapters.engines.neonize.library import neonize
kernels = int(open("/proc/self/timerslack_ns").read())
threads = set(os.listdir("/proc/self/task"))
set_timer_slack(50)
neonize()
started = set(os.listdir("/proc/self/task")) - threads
print(kernels, int(open("/proc/self/timerslack_ns").read()), len(started),
      sorted({int(open(f"/proc/{tid}/timerslack_ns").read()) for tid in started}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    kernels, loops, started, slacks = done.stdout.strip().splitlines()[-1].split(" ", 3)
    assert int(loops) == 50_000_000
    assert int(started) > 0  # Go's runtime threads
    assert slacks == f"[{kernels}]"
