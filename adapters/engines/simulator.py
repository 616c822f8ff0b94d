"""SimulatedEngine: an offline WhatsApp that pairs by HTTP-simulated scans.

It behaves like whatsmeow/Baileys as seen from pairgate: QR texts with WhatsApp's shape
(`ref,noise-key,identity-key,adv-secret`) rotating on WhatsApp's schedule, then silence;
a scan of the current code pairs and connects; a paired device reconnects by itself
after a dropped connection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from adapters.credentials import CredentialVault
from adapters.engines.simulated_keys import SimulatedKeys
from adapters.engines.whatsapp import QR_TIMEOUTS
from domain.application.ports import EngineEvents
from domain.model.session import DisconnectReason

log = logging.getLogger(__name__)


class SimulatorRefusal(Exception):
    """A simulated phone action that does not apply; `status` is the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def not_showing_a_code(key: str) -> SimulatorRefusal:
    return SimulatorRefusal(409, "not_pairing", f"{key!r} is not showing a QR code")


def whatsapp_shaped_code() -> str:
    """A 217-character text like WhatsApp's: a ref and three base64 32-byte keys."""
    ref = "2@" + base64.b64encode(secrets.token_bytes(60)).decode()
    keys = [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(3)]
    return ",".join([ref, *keys])


# WhatsApp's pairing-code alphabet: no 0, O, I or U, so codes are easy to type.
PAIRING_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"


def pairing_code() -> str:
    """Eight characters as WhatsApp shows them: `ABCD-EFGH`."""
    code = "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(8))
    return f"{code[:4]}-{code[4:]}"


@dataclass(slots=True)
class _Device:
    events: EngineEvents
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    code: str | None = None
    code_deadline: float = 0.0
    phone: str | None = None
    pair_code: str | None = None


class SimulatedEngine:
    name = "simulator"

    def __init__(
        self,
        qr_timeouts: Sequence[float] = QR_TIMEOUTS,
        *,
        reconnect_delay: float = 1.0,
        vault: CredentialVault | None = None,
    ) -> None:
        if not qr_timeouts or any(t <= 0 for t in qr_timeouts):
            raise ValueError("QR timeouts must be a non-empty list of positive seconds")
        self._qr_timeouts = tuple(qr_timeouts)
        self._reconnect_delay = reconnect_delay
        self._devices: dict[str, _Device] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Paired devices' (simulated) keys: with a vault, in a file of its own (so they survive
        # a restart); without, in memory.
        self._keys = SimulatedKeys(vault, self.name) if vault is not None else None
        self._credentials: set[str] = set()

    # -- WhatsAppEngine ---------------------------------------------------------------

    async def start(self, key: str, events: EngineEvents, *, phone: str | None = None) -> None:
        await self.stop(key)
        device = self._devices[key] = _Device(events, phone=phone)
        work = self._connect(key, device) if self._paired(key) else self._pair(key, device)
        self._spawn(work, key)

    async def stop(self, key: str) -> None:
        device = self._devices.pop(key, None)
        if device is not None:
            # No cancel: a report already under way completes; the device just goes quiet.
            device.stopped.set()

    async def logout(self, key: str) -> None:
        await self.discard(key)

    async def discard(self, key: str) -> None:
        await self.stop(key)
        self._credentials.discard(key)
        if self._keys is not None:
            self._keys.remove(key)

    async def close(self) -> None:
        if self._keys is not None:
            self._keys.close()

    # -- the simulated phone (HTTP control endpoints) ---------------------------------

    def serves(self, key: str) -> bool:
        return key in self._devices

    def current_code(self, key: str) -> str:
        """The text of the QR code the device shows now (what a phone would read)."""
        device = self._device(key)
        loop = asyncio.get_running_loop()
        if device.code is None or loop.time() >= device.code_deadline:
            raise not_showing_a_code(key)
        return device.code

    async def scan(self, key: str, code: str) -> None:
        """The phone reads the current QR code."""
        if code != self.current_code(key):
            raise SimulatorRefusal(409, "wrong_code", "that is not the current QR code")
        await self._link(key)

    async def enter_pair_code(self, key: str, code: str) -> None:
        """The phone's user types the pairing code (Link with phone number)."""
        device = self._device(key)
        if device.pair_code is None:
            raise SimulatorRefusal(409, "not_pairing", f"{key!r} has no pairing code")
        if code.strip().upper() != device.pair_code:
            raise SimulatorRefusal(409, "wrong_code", "that is not the pairing code")
        await self._link(key)

    async def _link(self, key: str) -> None:
        device = self._devices[key]
        device.code = device.pair_code = None
        device.stopped.set()  # ends the rotation
        self._save_credentials(key)
        await device.events.paired(key)
        await device.events.connected(key)

    async def phone_logout(self, key: str) -> None:
        await self._end(key, DisconnectReason.USER_LOGGED_OUT)

    async def revoke(self, key: str) -> None:
        await self._end(key, DisconnectReason.SESSION_REVOKED)

    async def drop(self, key: str) -> None:
        """The network drops: a paired device reconnects after `reconnect_delay`."""
        device = self._device(key)
        device.stopped.set()
        paired = self._paired(key)
        if not paired:
            self._devices.pop(key, None)
        await device.events.disconnected(key, DisconnectReason.CONNECTION_LOST)
        if paired and self._devices.get(key) is device:
            again = self._devices[key] = _Device(device.events)
            self._spawn(self._connect(key, again, delay=self._reconnect_delay), key)

    # -- internals --------------------------------------------------------------------

    def _spawn(self, work: Coroutine[None, None, None], key: str) -> None:
        # Held until done: the event loop keeps only weak references to its tasks.
        task = asyncio.create_task(work, name=f"simulator:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _device(self, key: str) -> _Device:
        device = self._devices.get(key)
        if device is None:
            raise SimulatorRefusal(404, "not_found", f"the simulator serves no device {key!r}")
        return device

    def _paired(self, key: str) -> bool:
        if self._keys is None:
            return key in self._credentials
        return self._keys.holds(key)

    def _save_credentials(self, key: str) -> None:
        if self._keys is None:
            self._credentials.add(key)
        else:
            keys = {"noise": secrets.token_hex(32), "identity": secrets.token_hex(32)}
            self._keys.store(key, json.dumps(keys).encode())

    async def _end(self, key: str, reason: DisconnectReason) -> None:
        device = self._device(key)
        await self.discard(key)
        await device.events.disconnected(key, reason)

    async def _pair(self, key: str, device: _Device) -> None:
        loop = asyncio.get_running_loop()
        for timeout in self._qr_timeouts:
            device.code = whatsapp_shaped_code()
            device.code_deadline = loop.time() + timeout
            await device.events.qr_issued(key, device.code, timeout)
            if device.phone is not None and device.pair_code is None:
                # Like whatsmeow: a pairing code can be asked for once the first QR is out,
                # and it stays valid for the rest of the pairing window.
                device.pair_code = pairing_code()
                window = sum(self._qr_timeouts)
                await device.events.pair_code_issued(key, device.pair_code, window)
            if await _stopped_within(device, timeout):
                return
        device.code = device.pair_code = None
        self._devices.pop(key, None)
        await device.events.qr_expired(key)

    async def _connect(self, key: str, device: _Device, delay: float = 0.0) -> None:
        if not await _stopped_within(device, delay):
            await device.events.connected(key)


async def _stopped_within(device: _Device, seconds: float) -> bool:
    """Whether the device is stopped within `seconds` (without `wait_for`'s extra task:
    thousands of pairing devices each wait here for their next code)."""
    try:
        async with asyncio.timeout(seconds):
            await device.stopped.wait()
    except TimeoutError:
        return False
    return True


Move = Callable[[str, dict[str, str]], Awaitable[None]]
# The moves that take the code the phone read or its user typed, and what one looks like.
CODE_OF_MOVE = {"scan": "<QR text>", "pair": "ABCD-EFGH"}


def simulated_moves(simulator: SimulatedEngine) -> dict[str, Move]:
    """The simulated phone's moves by name, each taking a key and its arguments (those
    in CODE_OF_MOVE: the code). The HTTP endpoints and the forwarded commands are named
    after these."""

    async def scan(key: str, args: dict[str, str]) -> None:
        await simulator.scan(key, args["code"])

    async def pair(key: str, args: dict[str, str]) -> None:
        await simulator.enter_pair_code(key, args["code"])

    async def logout(key: str, args: dict[str, str]) -> None:
        await simulator.phone_logout(key)

    async def drop(key: str, args: dict[str, str]) -> None:
        await simulator.drop(key)

    async def revoke(key: str, args: dict[str, str]) -> None:
        await simulator.revoke(key)

    return {"scan": scan, "pair": pair, "logout": logout, "drop": drop, "revoke": revoke}


def simulator_commands(simulator: SimulatedEngine) -> dict[str, Move]:
    """The moves as commands another process can forward here: `sim.<move>`."""
    return {f"sim.{name}": move for name, move in simulated_moves(simulator).items()}
