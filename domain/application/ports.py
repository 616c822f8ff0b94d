"""The domain's ports: what pairgate needs from the outside world, as Protocols."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from domain.model.session import DisconnectReason, SessionState, tenure_version

T = TypeVar("T")


class StoreCalls(Protocol):
    """Runs one (synchronous) event store call, where the service chose to run it: an
    adapter may time it, for instance."""

    def __call__(self, call: Callable[[], T], /) -> T: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class EngineEvents(Protocol):
    """What an engine reports about a device. pairgate's service implements it."""

    async def qr_issued(self, key: str, code: str, timeout: float) -> None: ...

    async def pair_code_issued(self, key: str, code: str, timeout: float) -> None:
        """The phone-number alternative to a QR code: `code` as WhatsApp shows it
        (`ABCD-EFGH`), to be typed on the phone within `timeout` seconds."""
        ...

    async def qr_expired(self, key: str) -> None:
        """The engine's last code timed out unscanned; it has stopped pairing."""
        ...

    async def passkey_required(self, key: str, options: dict[str, Any], timeout: float) -> None:
        """The phone accepted the code, and WhatsApp asks for the account's passkey before
        it links the device: `options` are the WebAuthn request options as WhatsApp gives
        them; the answer (`answer_passkey`) is due within `timeout` seconds."""
        ...

    async def passkey_rejected(self, key: str) -> None:
        """WhatsApp refused the passkey assertion it was given: the pairing has ended."""
        ...

    async def paired(self, key: str) -> None:
        """The phone scanned a code; the engine has stored the credentials."""
        ...

    async def connected(self, key: str) -> None:
        """The device is online with its credentials (after pairing or a reconnect)."""
        ...

    async def disconnected(self, key: str, reason: DisconnectReason) -> None: ...


class WhatsAppEngine(Protocol):
    """One WhatsApp implementation (simulator, neonize, baileys) serving many devices."""

    name: str

    async def start(
        self,
        key: str,
        events: EngineEvents,
        *,
        phone: str | None = None,
        proxy: str | None = None,
    ) -> None:
        """Connect the device: pair it (reporting QR codes) or resume its credentials.

        With `phone` (digits, international format) an unpaired device also asks WhatsApp
        for a pairing code for that number and reports it through `pair_code_issued`.
        With `proxy` (a URL checked by domain.model.proxy, credentials included) every
        connection to WhatsApp goes through that proxy; it is a secret: never logged.
        Returns once the work is under way; progress arrives through `events` (a report
        made from inside this call is recorded once the request that started it is done).
        """
        ...

    async def answer_passkey(self, key: str, response: dict[str, Any]) -> None:
        """Send WhatsApp the passkey assertion (a WebAuthn PublicKeyCredential as JSON)
        it asked for. NotImplementedError from an engine whose library cannot."""
        ...

    async def stop(self, key: str) -> None:
        """Close the device's connection and keep its credentials (shutdown)."""
        ...

    async def logout(self, key: str) -> None:
        """Unlink the device at WhatsApp, close it and delete its credentials."""
        ...

    async def discard(self, key: str) -> None:
        """Close the device and delete its credentials without telling WhatsApp."""
        ...

    async def close(self) -> None:
        """Release what the engine holds for all its devices (the process is ending)."""
        ...


class EngineCatalog(Protocol):
    def resolve(self, name: str) -> WhatsAppEngine:
        """The engine serving `name`; UnknownEngineError or EngineUnavailableError if none."""
        ...

    async def dialable(self, proxy: str) -> str:
        """The URL an engine is to dial `proxy` by, checked now (its host may be pinned to
        the address checked); ProxyRefusedError if engines may not dial it."""
        ...


class Subscriptions(Protocol):
    """Who follows a key: the clients its recorded events are projected onto (by a
    handler of those events, wired in the composition root)."""

    async def subscribe(self, key: str, subscriber: str) -> None:
        """Let `subscriber` (a connection) receive the key's events from now on."""
        ...

    async def unsubscribe_all(self, key: str) -> None:
        """The key changed hands: nobody subscribed so far hears of it again."""
        ...


class DeviceLeases(Protocol):
    """Who runs each device's engine when several processes share one store.

    A process runs a key's engine only while it holds the key's lease; the lease goes
    with the process (a crash frees it), so another process can take the device over.
    """

    async def acquire(self, key: str) -> bool:
        """Take the key's lease (True), or False when another live process holds it."""
        ...

    async def acquire_many(self, keys: Collection[str]) -> set[str]:
        """Take the leases of these keys at once (a takeover's batch), by `acquire`'s
        rules: the keys taken now (not those held already: some use case has them)."""
        ...

    async def release(self, key: str) -> None:
        """Give the lease up: this process no longer runs the key's engine."""
        ...

    async def release_many(self, keys: Collection[str]) -> None:
        """`release` for each of these keys, at once (a shutdown's batch)."""
        ...

    async def forward(self, key: str, command: str, args: dict[str, str]) -> None:
        """Have the lease holder run `command` for the key; EngineUnavailableError if no
        holder answers in time."""
        ...


class SoleProcess:
    """DeviceLeases for one process alone on its store: every lease is its own."""

    async def acquire(self, key: str) -> bool:
        return True

    async def acquire_many(self, keys: Collection[str]) -> set[str]:
        return set(keys)

    async def release(self, key: str) -> None:
        return None

    async def release_many(self, keys: Collection[str]) -> None:
        return None

    async def forward(self, key: str, command: str, args: dict[str, str]) -> None:
        raise AssertionError("a sole process never forwards")  # acquire is always True


@dataclass(frozen=True)
class SessionRow:
    """A session as the sessions read model holds it: as of its last recorded event."""

    key: str
    owner: str
    name: str
    engine: str
    state: SessionState
    reason: DisconnectReason | None  # the last Disconnected's, while disconnected; else None
    version: int  # the aggregate's version after that event
    updated_at: datetime  # that event's timestamp, timezone-aware UTC
    # Holds a linked device's credentials; None: not known (a row kept before this was).
    linked: bool | None = None
    # The version from which the owner holds the key (DeviceSession.tenure_from); None:
    # not known (a row kept before this was: counted from 1 until its next event).
    tenure_from: int | None = None

    @property
    def tenure_start(self) -> int:
        """`tenure_from`, or 1 when not known."""
        return self.tenure_from or 1

    @property
    def tenure_version(self) -> int:
        """The version as the owner counts it (DeviceSession.tenure_version)."""
        return tenure_version(self.version, self.tenure_start)


@dataclass(frozen=True)
class RecoveryCandidates:
    """The keys whose session may need an engine (a superset: recovery reads each one),
    by what the sessions read model knows of them."""

    # May still be recorded as live (a live row, or a key of the log's tail the rows do not
    # reflect yet): a process that died with it live left it so. Settled before serving.
    unsettled: list[str]
    # Recorded offline (disconnected; linked, or not known to be unlinked): nothing to set
    # straight, only to resume, in the background.
    offline: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.unsettled, *self.offline]


@dataclass(frozen=True)
class SessionRowPage:
    rows: Sequence[SessionRow]
    next: str | None  # the cursor for the page after this one; None: this is the last


LIST_PAGE_SIZE = 50
MAX_LIST_PAGE_SIZE = 200
MAX_CURSOR_LENGTH = 200
CURSOR_ALPHABET = "A-Za-z0-9_.~=-"  # as in a regular expression's [...]
MAX_SEARCH_LENGTH = 128  # a search is a prefix of a key or of a name (up to 128)


class SessionIndex(Protocol):
    """The sessions read model (a projection of the recorded events): one owner's
    sessions without reading every stream."""

    async def page(
        self,
        owner: str,
        *,
        state: SessionState | None = None,
        engine: str | None = None,
        after: str | None = None,
        limit: int = LIST_PAGE_SIZE,
        search: str | None = None,
    ) -> SessionRowPage:
        """The owner's sessions, most recently changed first (ties: key, descending),
        filtered by state and engine name when given, at most `limit` (1 to
        MAX_LIST_PAGE_SIZE) rows after the cursor `after`. `search`: only sessions whose
        key or name starts with it (case-sensitive; where keys and names are stored
        encrypted, only the session whose key it is).

        A cursor is opaque to callers: at most MAX_CURSOR_LENGTH characters of
        CURSOR_ALPHABET (URL-safe as it is: base64url fits), made by this index for the
        same owner and filters.
        One it cannot read raises InvalidPageError (domain.model.errors). Another owner's
        sessions never appear, whatever the cursor says.
        """
        ...

    async def counts(self, owner: str) -> dict[SessionState, int]:
        """How many of the owner's sessions are in each state (every state, 0 or more)."""
        ...
