"""BaileysEngine: WhatsApp through Baileys, hosted by one Node sidecar per pairgate process.

The sidecar starts with the first Baileys session and is started again when it dies:
sessions it served get `connection lost`, paired devices are resumed. Each device's
credentials live in `CredentialVault.directory("baileys", key)`, written by the sidecar once
the device has paired (AES-GCM sealed with the vault's key: sidecar/sealed-auth-state.mjs),
so `vault.holds` is "paired". What a closed socket means is decided in
`reasons.py` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.credentials import CredentialVault
from adapters.engines.baileys.reasons import Next, outcome
from adapters.engines.baileys.sidecar import SIDECAR_SCRIPT, Message, Sidecar, SidecarError
from adapters.engines.whatsapp import PAIR_CODE_TIMEOUT, QR_TIMEOUTS, passkey_timeout
from domain.application.ports import EngineEvents
from domain.model.session import DisconnectReason

log = logging.getLogger(__name__)

# Seconds before a paired device's reconnection attempts; the last one repeats.
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
SIDECAR_EXITED = "the Baileys sidecar exited"


@dataclass
class _Device:
    events: EngineEvents
    phone: str | None
    live: bool  # as pairgate records it: reports of a lost connection only while live
    proxy: str | None = None  # a secret (its credentials): sent to the sidecar, never logged
    inbox: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    retry: asyncio.Task[None] | None = None
    attempts: int = 0


def sidecar_command(node: str = "node", args: Sequence[str] = ()) -> list[str]:
    """The sidecar's command line. Baileys rotates the codes on WhatsApp's schedule
    without saying for how long each is good: the sidecar reports the times it is given."""
    schedule = ["--qr-timeouts", ",".join(f"{t:g}" for t in QR_TIMEOUTS)]
    schedule += ["--pair-code-timeout", f"{PAIR_CODE_TIMEOUT:g}"]
    return [node, str(SIDECAR_SCRIPT), *schedule, *args]


class BaileysEngine:
    name = "baileys"

    def __init__(
        self,
        vault: CredentialVault,
        *,
        node: str = "node",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        reconnect_delays: Sequence[float] = RECONNECT_DELAYS,
    ) -> None:
        """`args`: extra sidecar arguments (tests pass `--replay FILE`)."""
        self._vault = vault
        argv = sidecar_command(node, args)
        self._sidecar = Sidecar(argv, self._on_event, self._on_sidecar_exit, env=env)
        self._spawning = asyncio.Lock()
        self._reconnect_delays = tuple(reconnect_delays)
        self._devices: dict[str, _Device] = {}
        # Each started key's proxy, until its credentials go: an offline device that is
        # logged out connects to WhatsApp through it, never directly.
        self._proxies: dict[str, str | None] = {}
        self._closed = False

    @property
    def sidecar_pid(self) -> int | None:
        return self._sidecar.pid

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
        paired = await asyncio.to_thread(self._vault.holds, self.name, key)
        # Unpaired: a new pairing, live as recorded. Paired: a resume of an offline device.
        device = _Device(events, None if paired else phone, not paired, proxy)
        self._proxies[key] = proxy
        self._devices[key] = device
        device.worker = asyncio.create_task(self._work(key, device), name=f"baileys:{key}")
        try:
            await self._connect(key, device)
        except Exception:
            self._forget(key, device)
            raise

    async def answer_passkey(self, key: str, response: dict[str, Any]) -> None:
        raise NotImplementedError("Baileys 7.0.0-rc14 does not implement WhatsApp's passkey step")

    async def stop(self, key: str) -> None:
        if self._forget(key) is not None and self._sidecar.running:
            with contextlib.suppress(SidecarError):
                await self._sidecar.call("stop", key=key)

    async def logout(self, key: str) -> None:
        self._forget(key)
        directory = str(self._vault.directory(self.name, key, create=False))
        try:
            if await asyncio.to_thread(self._vault.holds, self.name, key):
                await self._ensure_sidecar()
            if self._sidecar.running:
                files = self._device_files(key, directory)
                reply = await self._sidecar.call("logout", proxy=self._proxies.get(key), **files)
                if not reply.get("unlinked"):
                    log.warning(
                        "could not unlink %s at WhatsApp; deleting its credentials",
                        key,
                        extra={"key": key},
                    )
        except SidecarError as error:
            log.warning(
                "could not unlink %s at WhatsApp (%s); deleting its keys",
                key,
                error,
                extra={"key": key},
            )
        self._proxies.pop(key, None)
        await asyncio.to_thread(self._vault.remove, self.name, key)

    async def discard(self, key: str) -> None:
        self._forget(key)
        await self._delete_credentials(key)

    async def close(self) -> None:
        """Close every socket (credentials stay) and end the sidecar. Call at shutdown."""
        self._closed = True
        devices = list(self._devices.items())
        for key, device in devices:
            self._forget(key, device)
        await self._sidecar.close()
        tasks = [t for _, d in devices for t in (d.worker, d.retry) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the sidecar ------------------------------------------------------------------

    async def _ensure_sidecar(self) -> None:
        async with self._spawning:
            if self._closed:
                raise SidecarError("the Baileys engine is closed")
            if not self._sidecar.running:
                await self._sidecar.start()

    async def _connect(self, key: str, device: _Device) -> None:
        await self._ensure_sidecar()
        directory = await asyncio.to_thread(self._vault.directory, self.name, key)
        if self._devices.get(key) is device:
            where = self._device_files(key, str(directory))
            await self._sidecar.call("start", phone=device.phone, proxy=device.proxy, **where)

    async def _delete_credentials(self, key: str) -> None:
        """Delete the key's files once the sidecar writes them no more: its socket's work
        under way when it ended may still save them, and would bring them back."""
        if self._sidecar.running:
            with contextlib.suppress(SidecarError):
                await self._sidecar.call("discard", key=key)
        self._proxies.pop(key, None)
        await asyncio.to_thread(self._vault.remove, self.name, key)

    def _device_files(self, key: str, directory: str) -> dict[str, Any]:
        """Where the sidecar keeps the device's auth state, and the key that seals it."""
        return {"key": key, "dir": directory, "cipher": self._vault.cipher_key}

    def _on_event(self, message: Message) -> None:
        device = self._devices.get(str(message.get("key")))
        if device is not None:
            device.inbox.put_nowait(message)

    def _on_sidecar_exit(self) -> None:
        if self._closed:
            return
        for device in self._devices.values():
            device.inbox.put_nowait({"event": "closed", "status": None, "message": SIDECAR_EXITED})

    # -- one device's reports, in order -----------------------------------------------

    async def _work(self, key: str, device: _Device) -> None:
        while (message := await device.inbox.get()) is not None:
            if self._devices.get(key) is not device:
                continue
            try:
                await self._report(key, device, message)
            except Exception:
                log.exception("Baileys report for %s failed", key, extra={"key": key})

    async def _report(self, key: str, device: _Device, message: Message) -> None:
        events, kind = device.events, message.get("event")
        if kind == "qr":
            if message.get("resumed"):
                # A paired device asked to pair again: WhatsApp no longer knows its keys.
                await self.discard(key)
                await events.disconnected(key, DisconnectReason.SESSION_REVOKED)
                return
            await events.qr_issued(key, str(message["code"]), float(message["timeout"]))
        elif kind == "pair_code":
            await events.pair_code_issued(key, str(message["code"]), float(message["timeout"]))
        elif kind == "passkey_required":
            # Reported, not answerable (answer_passkey): the pairing ends passkey_unanswered.
            options = message.get("options")
            options = options if isinstance(options, dict) else {}
            await events.passkey_required(key, options, passkey_timeout(options))
        elif kind == "paired":
            await events.paired(key)
        elif kind == "connected":
            device.live, device.attempts = True, 0
            await events.connected(key)
        elif kind == "closed":
            await self._closed_socket(key, device, message.get("status"), str(message["message"]))

    async def _closed_socket(
        self, key: str, device: _Device, status: int | None, message: str
    ) -> None:
        result = outcome(status, message)
        log.info(
            "Baileys socket of %s closed (%s %s): %s",
            key,
            status,
            message,
            result.next.value,
            extra={"key": key},
        )
        if result.next is Next.RESTART:
            # At once the first time (after a scan); a server that keeps asking backs off.
            self._reconnect(key, device, self._next_delay(device) if device.attempts else 0.0)
            device.attempts = max(device.attempts, 1)
            return
        if result.next is Next.QR_EXPIRED:
            self._forget(key, device)
            await device.events.qr_expired(key)
            return
        reason = result.reason or DisconnectReason.CONNECTION_LOST
        paired = await asyncio.to_thread(self._vault.holds, self.name, key)
        if reason is DisconnectReason.CONNECTION_LOST and paired:
            self._reconnect(key, device, self._next_delay(device))
            if device.live:
                device.live = False
                await device.events.disconnected(key, reason)
            return
        self._forget(key, device)
        if reason.deletes_credentials:
            # Dead at WhatsApp's end: keeping them would only make the device retry forever.
            await self._delete_credentials(key)
        await device.events.disconnected(key, reason)

    def _next_delay(self, device: _Device) -> float:
        delays = self._reconnect_delays
        device.attempts += 1
        return delays[min(device.attempts - 1, len(delays) - 1)]

    def _reconnect(self, key: str, device: _Device, delay: float) -> None:
        async def again() -> None:
            await asyncio.sleep(delay)
            try:
                await self._connect(key, device)
            except SidecarError as error:
                log.warning("Baileys could not reconnect %s: %s", key, error, extra={"key": key})
                # A failed attempt counts as a closed socket, reported in order by the worker.
                device.inbox.put_nowait({"event": "closed", "status": None, "message": str(error)})

        if device.retry is not None and not device.retry.done():
            device.retry.cancel()  # one attempt at a time: a newer close supersedes it
        device.retry = asyncio.create_task(again(), name=f"baileys-retry:{key}")

    def _forget(self, key: str, device: _Device | None = None) -> _Device | None:
        """Stop serving `key` (only if it is still `device`, when given)."""
        current = self._devices.get(key)
        if current is None or (device is not None and current is not device):
            return None
        del self._devices[key]
        if current.retry is not None and current.retry is not asyncio.current_task():
            current.retry.cancel()
        current.inbox.put_nowait(None)
        return current
