"""The whatsmeow clients of one NeonizeEngine, and the threads they run on.

Each device's client runs its whole connection on a worker thread of its own (neonize's
`connect()` returns only when the client stops); short calls (stop, logout, pairing
codes, the credential stores) run on the same pool. Start-ups go one at a time:
concurrent start-ups crashed the Go runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from adapters.credentials import device_name
from adapters.engines.neonize import library
from adapters.engines.neonize.device import Device, register_handlers
from adapters.engines.neonize.stores import WhatsmeowStores
from adapters.engines.neonize.workers import IdleClosingPool

log = logging.getLogger(__name__)

# Threads for short calls (stop, logout, pairing codes) besides one per live client.
CONTROL_THREADS = 8
# The next start-up waits until this one has shown a sign of life, has failed, or for
# this long.
START_GAP = 0.5
STOP_TIMEOUT = 10.0


class WhatsmeowClients:
    """Connects, runs and stops devices' whatsmeow clients. `run` and `stop` are the
    only calls that reach WhatsApp's servers (tests replace them to hold a connection
    up without dialling)."""

    def __init__(self, stores: WhatsmeowStores, max_devices: int) -> None:
        self._stores = stores
        self._workers = IdleClosingPool(max_devices + CONTROL_THREADS, "pairgate-neonize")
        self._gate = asyncio.Lock()
        self._uuids = itertools.count(1)

    def run(self, client: Any, proxy: str | None = None) -> None:
        """The client's whole connection (a worker thread): returns when it is stopped,
        raises when it could not connect (whatsmeow does not retry a failed dial). With
        `proxy`, whatsmeow dials WhatsApp (websocket and media) through it."""
        settings = library.neonize().ProxySettings(proxy_address=proxy) if proxy else None
        client.connect(settings)

    def stop(self, client: Any) -> None:
        client.stop()

    async def connect(self, device: Device) -> None:
        """Start the device's connection; it reports `("ended", ...)` to the device when
        the client's connection returns."""
        device.retry = None
        async with self._gate:
            if device.stopped:
                return
            device.generation += 1
            device.codes = 0
            device.begun.clear()
            loop = asyncio.get_running_loop()
            device.client = client = await self.call(self._new_client, device, loop)
            future = loop.run_in_executor(self._workers, self.run, client, device.proxy)
            device.connection = future
            generation = device.generation
            future.add_done_callback(
                lambda done: device.deliver(
                    ("ended", generation, None if done.cancelled() else done.exception())
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(device.begun.wait(), START_GAP)

    async def halt(self, device: Device) -> None:
        """Stop the device's client and wait (a bounded time) for its connection to end."""
        client, connection = device.client, device.connection
        if client is None or connection is None or connection.done():
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self.call(self.stop, client)
                await asyncio.shield(connection)
        except TimeoutError:
            log.warning(
                "neonize: %s did not stop within %.0f s",
                device.key,
                STOP_TIMEOUT,
                extra={"key": device.key},
            )
        except Exception:
            pass  # connect() ended with its error; the device is stopped either way

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future: Future[Any] = self._workers.submit(fn, *args, **kwargs)
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        await asyncio.to_thread(self._workers.shutdown, True)

    def _new_client(self, device: Device, loop: asyncio.AbstractEventLoop) -> Any:
        """A whatsmeow client for the device, its handlers registered (in a worker thread)."""
        neonize = library.neonize()
        # neonize keys its Go-side clients by uuid: one per connection attempt, so that a
        # replaced client's finalizer (it stops its uuid) can never stop its successor.
        digest = device_name(device.key)
        uuid = f"pairgate-{digest[:16]}-{next(self._uuids)}"
        name, arguments = self._stores.client_arguments(device.key)
        client = neonize.NewClient(name, uuid=uuid, **arguments)
        client.uuid = uuid.encode()  # given a JID, neonize would use the phone number
        register_handlers(client, device, loop)
        return client
