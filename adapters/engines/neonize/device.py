"""One device as the neonize engine keeps it, and the way in from neonize's Go threads.

neonize calls its handlers on Go threads. Each handler only hands an item to the event
loop, into the device's inbox; the engine's one task per device takes items out in
order. Items are tuples `(what, generation, *args)`: the generation names the client
(connection attempt) they came from, so that a replaced client's late calls are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.engines.neonize.mapping import Signal, translators
from domain.application.ports import EngineEvents

log = logging.getLogger(__name__)

Item = tuple[Any, ...]


@dataclass(frozen=True)
class DeviceStatus:
    """What the engine holds for a key (for operators and tests)."""

    store: str  # what whatsmeow was opened on: a SQLite path, or "postgresql"
    paired: bool  # started from stored credentials, or paired since
    online: bool
    codes: int  # QR codes shown by the current client
    attempts: int  # connection attempts that failed in a row


@dataclass
class Device:
    key: str
    events: EngineEvents
    phone: str | None
    paired: bool
    proxy: str | None = None  # a secret (its credentials): never logged
    inbox: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    consumer: asyncio.Task[None] | None = None
    client: Any = None
    connection: asyncio.Future[None] | None = None
    generation: int = 0
    begun: asyncio.Event = field(default_factory=asyncio.Event)  # the client spoke or ended
    codes: int = 0
    expiry: asyncio.TimerHandle | None = None
    retry: asyncio.TimerHandle | None = None
    attempts: int = 0
    online: bool = False
    lost: bool = False  # a lost connection was reported and no reconnect since
    ended: bool = False  # the link ended (expired, logged out, revoked): report no more
    stopped: bool = False
    helpers: set[asyncio.Task[None]] = field(default_factory=set)

    def deliver(self, item: Item) -> None:
        """Queue an item for the device's task (on the event loop)."""
        if item[1] == self.generation:
            self.begun.set()
        self.inbox.put_nowait(item)

    def later(self, seconds: float, item: Item) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, self.inbox.put_nowait, item)

    def arm_expiry(self, seconds: float) -> None:
        """Expire the current QR code in `seconds` unless another one comes first."""
        self.cancel_expiry()
        self.expiry = self.later(seconds, ("expired", self.generation, self.codes))

    def cancel_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None

    def status(self, store: str) -> DeviceStatus:
        return DeviceStatus(store, self.paired, self.online, self.codes, self.attempts)


def register_handlers(client: Any, device: Device, loop: asyncio.AbstractEventLoop) -> None:
    """Give a new neonize client its QR and event handlers (before it connects)."""
    generation = device.generation

    def deliver(item: Item) -> None:
        what, *args = item
        try:
            loop.call_soon_threadsafe(device.deliver, (what, generation, *args))
        except RuntimeError:  # the loop has closed: nobody is listening any more
            log.debug(
                "neonize: %s for %s arrived after the loop closed",
                what,
                device.key,
                extra={"key": device.key},
            )

    def on_qr(_client: Any, code: bytes) -> None:
        deliver(("qr", code))

    client.event.qr(on_qr)
    for event_class, translate in translators().items():
        client.event(event_class)(_handler(translate, deliver))


def _handler(
    translate: Callable[[Any], Signal], deliver: Callable[[Item], None]
) -> Callable[[Any, Any], None]:
    """A neonize event handler. neonize swallows what a handler raises: log it here."""

    def handle(_client: Any, event: Any) -> None:
        try:
            deliver(("event", translate(event), event))
        except Exception:
            log.exception("neonize: could not handle %s", type(event).__name__)

    return handle


def pair_code_format(code: str) -> str:
    """As WhatsApp shows it: `ABCD-EFGH`."""
    plain = code.replace("-", "").strip().upper()
    return f"{plain[:4]}-{plain[4:]}" if len(plain) == 8 else code
