"""NeonizeEngine: real WhatsApp linked devices through neonize (whatsmeow, in Go).

One whatsmeow client per device, each with its own credential store: a SQLite file in
the device's vault directory (0700; the file 0600), or one shared PostgreSQL database
when `database_url` is given (see docs/engines.md). neonize calls back on Go threads;
every callback is handed to the event loop and handled there, one device's in order,
by one task per device, which reports to pairgate through EngineEvents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from adapters.credentials import CredentialVault
from adapters.engines.neonize import library
from adapters.engines.neonize.clients import STOP_TIMEOUT, WhatsmeowClients
from adapters.engines.neonize.device import (
    Device,
    DeviceStatus,
    pair_code_format,
)
from adapters.engines.neonize.mapping import REASONS, Signal, describe
from adapters.engines.neonize.stores import WhatsmeowStores
from adapters.engines.whatsapp import PAIR_CODE_TIMEOUT, QR_TIMEOUTS
from domain.application.ports import EngineEvents
from domain.model.session import DisconnectReason

log = logging.getLogger(__name__)

# A paired device whose connection attempt failed outright (whatsmeow does not retry
# those) tries again after these delays, the last one repeating.
RETRY_DELAYS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class NeonizeEngine:
    name = "neonize"

    def __init__(
        self,
        vault: CredentialVault,
        *,
        database_url: str | None = None,
        max_devices: int = 500,
        qr_timeouts: Sequence[float] = QR_TIMEOUTS,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        client_name: str = "LINUX",
        clients: Callable[[WhatsmeowStores, int], WhatsmeowClients] = WhatsmeowClients,
    ) -> None:
        """`database_url`: keep whatsmeow's stores in this PostgreSQL database instead of
        one SQLite file per device. `client_name`: how the phone lists the linked device
        when paired by code (a neonize `ClientName`). `clients`: what runs the whatsmeow
        clients (tests hold connections up without dialling WhatsApp)."""
        self._stores = WhatsmeowStores(vault, self.name, database_url)
        self._max_devices = max_devices
        self._qr_timeouts = tuple(qr_timeouts)
        self._retry_delays = tuple(retry_delays)
        self._client_name = client_name
        self._devices: dict[str, Device] = {}
        self._clients = clients(self._stores, max_devices)

    # -- WhatsAppEngine ---------------------------------------------------------------

    async def start(
        self,
        key: str,
        events: EngineEvents,
        *,
        phone: str | None = None,
        proxy: str | None = None,
    ) -> None:
        await self.stop(key)
        if len(self._devices) >= self._max_devices:
            raise RuntimeError(f"the neonize engine serves at most {self._max_devices} devices")
        await self._call(library.neonize)  # the first import takes ~0.3 s
        paired = await self._call(self._stores.holds, key)
        device = self._devices[key] = Device(key, events, phone, paired, proxy)
        device.consumer = asyncio.create_task(self._consume(device), name=f"neonize:{key}")
        device.inbox.put_nowait(("connect", device.generation))

    async def answer_passkey(self, key: str, response: dict[str, Any]) -> None:
        raise NotImplementedError(
            "neonize 0.5.2's Python API forwards neither whatsmeow's PairPasskeyRequest "
            "nor SendPasskeyResponse"
        )

    async def stop(self, key: str) -> None:
        device = self._devices.pop(key, None)
        if device is not None:
            await self._halt(device)

    async def logout(self, key: str) -> None:
        device = self._devices.get(key)
        client = device.client if device is not None else None
        if device is not None and device.online and client is not None:
            try:
                await asyncio.wait_for(self._call(client.logout), STOP_TIMEOUT)
            except Exception as error:
                log.warning(
                    "WhatsApp was not told that %s logged out: %s", key, error, extra={"key": key}
                )
        else:
            log.info(
                "%s is offline: WhatsApp keeps listing it until the phone removes it",
                key,
                extra={"key": key},
            )
        await self.discard(key)

    async def discard(self, key: str) -> None:
        await self.stop(key)
        await self._call(self._stores.forget, key)

    async def close(self) -> None:
        """Stop every device and let the engine's threads go (at shutdown)."""
        for key in list(self._devices):
            await self.stop(key)
        await self._clients.close()

    def status(self, key: str) -> DeviceStatus | None:
        device = self._devices.get(key)
        if device is None:
            return None
        return device.status(self._stores.describe(key))

    # -- one device's events, in order --------------------------------------------------

    async def _consume(self, device: Device) -> None:
        while True:
            item = await device.inbox.get()
            if device.stopped:
                return
            what, generation, *args = item
            if generation != device.generation:
                continue  # from a client the device has replaced
            try:
                await self._handle(device, what, *args)
            except Exception:
                log.exception(
                    "neonize: handling %s for %s failed",
                    what,
                    device.key,
                    extra={"key": device.key},
                )

    async def _handle(self, device: Device, what: str, *args: Any) -> None:
        if what == "connect":
            await self._clients.connect(device)
        elif what == "qr":
            await self._show_code(device, args[0].decode())
        elif what == "expired":
            await self._expire(device, args[0])
        elif what == "pair_code":
            if not (device.ended or device.paired):
                await device.events.pair_code_issued(device.key, args[0], PAIR_CODE_TIMEOUT)
        elif what == "event":
            await self._on_event(device, args[0], args[1])
        elif what == "ended":
            await self._on_connection_end(device, args[0])

    async def _show_code(self, device: Device, code: str) -> None:
        if device.ended:
            return
        if device.paired:
            # whatsmeow asks to pair only when its store holds no device: the stored
            # credentials are gone (or were never completed), so this link is over.
            log.warning(
                "neonize: %s shows a QR code: its stored credentials are gone",
                device.key,
                extra={"key": device.key},
            )
            device.ended = True
            await device.events.disconnected(device.key, DisconnectReason.SESSION_REVOKED)
            return
        index, device.codes = device.codes, device.codes + 1
        timeout = self._qr_timeouts[min(index, len(self._qr_timeouts) - 1)]
        await device.events.qr_issued(device.key, code, timeout)
        last = index >= len(self._qr_timeouts) - 1
        # whatsmeow shows the next code when this one times out; a little slack for that.
        device.arm_expiry(timeout if last else timeout + 5.0)
        if device.phone is not None and index == 0:
            self._helper(device, self._ask_pair_code(device, device.generation))

    async def _expire(self, device: Device, codes: int) -> None:
        if codes != device.codes or device.ended or device.paired:
            return
        device.ended = True
        await device.events.qr_expired(device.key)
        if self._devices.get(device.key) is device:  # pairgate ignored it: stop anyway
            await self.stop(device.key)

    async def _on_event(self, device: Device, signal: Signal, event: Any) -> None:
        log.debug(
            "neonize %s: %s -> %s",
            device.key,
            describe(event),
            signal.value,
            extra={"key": device.key},
        )
        key, events = device.key, device.events
        if device.ended:
            return
        if signal is Signal.PAIRED:
            device.cancel_expiry()
            device.paired = True
            await self._call(self._stores.remember, key, event.ID)
            await events.paired(key)
        elif signal is Signal.PAIR_FAILED:
            log.warning(
                "neonize: pairing %s failed: %s",
                key,
                event.Error or "no reason given",
                extra={"key": key},
            )
        elif signal is Signal.CONNECTED or (signal is Signal.RESTORED and device.lost):
            device.cancel_expiry()
            device.online, device.lost, device.attempts = True, False, 0
            await events.connected(key)
        elif signal is Signal.LOST:
            await self._report_lost(device, describe(event))
        elif signal in (Signal.LOGGED_OUT, Signal.REVOKED):
            log.warning(
                "neonize: %s ended by WhatsApp: %s", key, describe(event), extra={"key": key}
            )
            device.ended, device.online = True, False
            device.cancel_expiry()
            await events.disconnected(key, REASONS[signal])

    async def _report_lost(self, device: Device, why: str) -> None:
        if device.lost or device.ended:
            return
        log.info("neonize: %s lost its connection: %s", device.key, why, extra={"key": device.key})
        device.lost, device.online = True, False
        await device.events.disconnected(device.key, DisconnectReason.CONNECTION_LOST)

    async def _on_connection_end(self, device: Device, error: BaseException | None) -> None:
        """neonize's connect() returned: the attempt failed (no retry by whatsmeow)."""
        device.client = device.connection = None
        device.cancel_expiry()
        await self._report_lost(device, str(error) if error else "the client stopped")
        if self._devices.get(device.key) is not device or device.stopped:
            return
        if device.paired and not device.ended:
            delay = self._retry_delays[min(device.attempts, len(self._retry_delays) - 1)]
            device.attempts += 1
            log.info(
                "neonize: %s tries again in %.0f s", device.key, delay, extra={"key": device.key}
            )
            device.retry = device.later(delay, ("connect", device.generation))
        else:
            # Nothing runs for it any more; pairgate discards it when it records the loss.
            self._devices.pop(device.key, None)
            device.stopped = True
            device.inbox.put_nowait(("stop", -1))

    # -- the whatsmeow client -----------------------------------------------------------

    async def _ask_pair_code(self, device: Device, generation: int) -> None:
        client = device.client
        if client is None or device.phone is None:
            return
        enum = library.neonize().ClientName
        try:
            code = await self._call(
                client.PairPhone, device.phone, True, client_name=enum[self._client_name]
            )
        except Exception as error:
            log.warning(
                "neonize: no pairing code for %s: %s", device.key, error, extra={"key": device.key}
            )
            return
        device.deliver(("pair_code", generation, pair_code_format(code)))

    async def _halt(self, device: Device) -> None:
        device.stopped = True
        device.cancel_expiry()
        if device.retry is not None:
            device.retry.cancel()
        current = asyncio.current_task()
        for task in [device.consumer, *device.helpers]:
            # Not the task that is reporting right now (pairgate stops a device from
            # within its report): that report completes, and the task then ends.
            if task is not None and task is not current:
                task.cancel()
        device.inbox.put_nowait(("stop", -1))
        await self._clients.halt(device)

    def _helper(self, device: Device, work: Any) -> None:
        task = asyncio.create_task(work)
        device.helpers.add(task)
        task.add_done_callback(device.helpers.discard)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self._clients.call(fn, *args, **kwargs)
