"""neonize, imported on first use and kept from touching pairgate's logging.

Importing neonize runs `logging.basicConfig(level=INFO, handlers=[its own])` and starts
a log-forwarding thread, so it is imported lazily by the engine, never by pairgate at
start-up, and the root logger is put back the way pairgate configured it.
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import subprocess
import threading
import time
import warnings
from types import ModuleType
from typing import Any

from adapters.timer_slack import kernel_timer_slack

_importing = threading.Lock()


@functools.cache
def neonize() -> ModuleType:
    """`neonize.client` (NewClient, and the event and proto classes it re-exports)."""
    with _importing:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            # Go's runtime starts here, its threads inheriting this thread's timer slack.
            with warnings.catch_warnings(), kernel_timer_slack():
                warnings.simplefilter("ignore", ResourceWarning)
                client = importlib.import_module("neonize.client")
                _reap_leaked_pipes()
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        return client


def events() -> Any:
    """The `neonize.events` module: ConnectedEv, PairStatusEv, LoggedOutEv …"""
    neonize()
    return importlib.import_module("neonize.events")


def proto() -> Any:
    """The `neonize.proto.Neonize_pb2` module: JID, ConnectFailureReason …"""
    neonize()
    return importlib.import_module("neonize.proto.Neonize_pb2")


def _reap_leaked_pipes() -> None:
    """neonize's import runs `os.popen("uname -a").read()` without closing the pipe.
    subprocess parks such a Popen until its next start-up reaps it, and the open pipe
    would then raise a ResourceWarning in whatever code started a subprocess next: reap
    it here, while that warning is ignored."""
    cleanup = getattr(subprocess, "_cleanup", None)
    active = getattr(subprocess, "_active", None)
    if cleanup is None or active is None:
        return
    deadline = time.monotonic() + 2.0
    while True:
        cleanup()
        gc.collect()
        if not active or time.monotonic() > deadline:
            return
        time.sleep(0.01)
