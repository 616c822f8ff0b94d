"""Linux timer slack: how late the kernel may fire a thread's timers.

A server holding thousands of idle connections and rotating QR codes has timers due every
few milliseconds, each alone waking the event loop on a cold CPU (where a store append
costs five times what it costs in a busy loop: docs/performance.md). With a slack of S
milliseconds, timers due within S of each other end one `epoll_wait` together, and the
loop wakes once for all of them. I/O wakes the loop as before; only timers may run late.

The slack belongs to a thread (`prctl(PR_SET_TIMERSLACK)`); threads and processes it
starts afterwards inherit it. Elsewhere than Linux nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30

log = logging.getLogger(__name__)

# The slack the process ran with before `set_timer_slack` (nanoseconds): the kernel's.
_before: int | None = None


def set_timer_slack(milliseconds: float) -> bool:
    """Give the calling thread (the event loop's) `milliseconds` of timer slack; 0 leaves
    the kernel's default. Whether the slack was set."""
    global _before
    if milliseconds <= 0 or not sys.platform.startswith("linux"):
        return False
    before = timer_slack_ns()
    if not _prctl(PR_SET_TIMERSLACK, round(milliseconds * 1_000_000)):
        return False
    if _before is None:
        _before = before
    return True


def timer_slack_ns() -> int | None:
    """The calling thread's timer slack in nanoseconds (None where there is none)."""
    if not sys.platform.startswith("linux"):
        return None
    slack = _libc().prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    return int(slack) if slack >= 0 else None


@contextmanager
def kernel_timer_slack() -> Iterator[None]:
    """The calling thread at the slack it had before `set_timer_slack`, for the span of
    starting a runtime of its own, whose threads inherit it: Go's scheduler (neonize)
    checks its threads every 20 µs to 10 ms and must not oversleep by the server's slack."""
    if _before is None:
        yield
        return
    current = timer_slack_ns()
    _prctl(PR_SET_TIMERSLACK, _before)
    try:
        yield
    finally:
        if current is not None:
            _prctl(PR_SET_TIMERSLACK, current)


def _prctl(option: int, value: int) -> bool:
    if _libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0:
        return True
    problem = os.strerror(ctypes.get_errno())
    log.warning("timer slack not set (%s); timers keep the kernel's default", problem)
    return False


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
