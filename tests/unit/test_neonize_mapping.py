"""NeonizeEngine's mapping of whatsmeow's events, driven the way Go drives neonize.

Each event is a real neonize protobuf object, serialised and handed to the real client's
`event.execute` (what the Go library calls, on a thread of its own), so it goes through
the handlers the engine registered with neonize. Only the blocking connection is
replaced: it stays up until the engine stops it, instead of dialling WhatsApp.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.credentials import CredentialVault
from domain.model.session import DisconnectReason

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("neonize") is None,
    reason="neonize is not installed (pip install 'pairgate[neonize]')",
)

R = DisconnectReason
KEY = "device123"


@pytest.fixture(scope="module")
def nz() -> Any:
    """neonize's event and proto modules (skips if the library cannot load here)."""
    from adapters.engines.neonize import library

    try:
        library.neonize()
    except (ImportError, OSError) as error:
        pytest.skip(f"neonize cannot be loaded: {error}")
    return library


@dataclass
class Reports:
    """EngineEvents that records what the engine reports."""

    got: list[tuple[Any, ...]] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _add(self, *report: Any) -> None:
        async with self._arrived:
            self.got.append(report)
            self._arrived.notify_all()

    async def qr_issued(self, key: str, code: str, timeout: float) -> None:
        await self._add("qr_issued", code, timeout)

    async def pair_code_issued(self, key: str, code: str, timeout: float) -> None:
        await self._add("pair_code_issued", code, timeout)

    async def qr_expired(self, key: str) -> None:
        await self._add("qr_expired")

    async def paired(self, key: str) -> None:
        await self._add("paired")

    async def connected(self, key: str) -> None:
        await self._add("connected")

    async def disconnected(self, key: str, reason: DisconnectReason) -> None:
        await self._add("disconnected", reason)

    async def wait(self, count: int, timeout: float = 5.0) -> list[tuple[Any, ...]]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.got) >= count), timeout)
        return self.got


def _engine_class() -> type:
    from adapters.engines.neonize import NeonizeEngine
    from adapters.engines.neonize.clients import WhatsmeowClients

    class HeldClients(WhatsmeowClients):  # type: ignore[misc, valid-type]
        """Clients whose connections stay up (no dial) until stopped or failed."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.clients: list[Any] = []
            self.fail: Exception | None = None
            self._held: dict[int, threading.Event] = {}

        def run(self, client: Any) -> None:
            self.clients.append(client)
            if self.fail is not None:
                raise self.fail
            held = self._held.setdefault(id(client), threading.Event())
            held.wait(30)

        def stop(self, client: Any) -> None:
            self._held.setdefault(id(client), threading.Event()).set()

    class HeldConnection(NeonizeEngine):  # type: ignore[misc, valid-type]
        """NeonizeEngine whose connections stay up (no dial) until stopped or failed."""

        def __init__(self, *args: Any, fail: Exception | None = None, **kwargs: Any) -> None:
            self.held = None
            super().__init__(*args, clients=self._held_clients, **kwargs)
            self.held.fail = fail

        def _held_clients(self, *args: Any) -> HeldClients:
            self.held = HeldClients(*args)
            return self.held

        @property
        def clients(self) -> list[Any]:
            return self.held.clients

    return HeldConnection


@pytest.fixture
async def engine(nz: Any, tmp_path: Path) -> AsyncIterator[Any]:
    running = _engine_class()(CredentialVault(tmp_path / "credentials"))
    yield running
    await running.close()


async def started(engine: Any, reports: Reports, phone: str | None = None) -> Any:
    """Start KEY and return its neonize client, once the connection is up."""
    count = len(engine.clients)
    await engine.start(KEY, reports, phone=phone)
    for _ in range(500):
        if len(engine.clients) > count:
            return engine.clients[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("the engine did not connect")


def go_emits(client: Any, event: Any) -> None:
    """What whatsmeow does for an event: neonize's C callback with the serialised proto."""
    from neonize.events import EVENT_TO_INT

    data = event.SerializeToString()
    buffer = ctypes.create_string_buffer(data, len(data) or 1)
    client.event.execute(0, ctypes.addressof(buffer), len(data), EVENT_TO_INT[type(event)])


def go_shows_qr(client: Any, code: str) -> None:
    """whatsmeow's QR callback: a C string, handed to the handler the engine set."""
    buffer = ctypes.create_string_buffer(code.encode())
    client._NewClient__onQr(0, ctypes.addressof(buffer))


async def emit(client: Any, *events: Any) -> None:
    for event in events:
        await asyncio.to_thread(go_emits, client, event)  # on another thread, as Go does


def proto() -> Any:
    from adapters.engines.neonize import library

    return library.proto()


def failure(reason: str) -> Any:
    p = proto()
    reason_value = p.ConnectFailureReason.Value(reason)
    return p.ConnectFailure(Reason=reason_value, Message="test", Raw=p.Node(Tag="failure"))


def keep_alive_timeout() -> Any:
    return proto().KeepAliveTimeout(ErrorCount=2, LastSuccess=1_700_000_000)


def stream_error() -> Any:
    return proto().StreamError(Code="500", Raw=proto().Node(Tag="stream:error"))


def ev(name: str, **fields: Any) -> Callable[[], Any]:
    return lambda: getattr(proto(), name)(**fields)


def pair_success() -> Any:
    p = proto()
    jid = p.JID(User="6281234567890", Server="s.whatsapp.net", Device=7, RawAgent=0, Integrator=0)
    success = p.PairStatus.PStatus.Value("SUCCESS")
    return p.PairStatus(ID=jid, BusinessName="", Platform="android", Status=success)


def connected() -> Any:
    return proto().Connected(status=True)


# -- the table: every neonize event the engine handles, and what pairgate hears --------

ENDINGS = [
    ("LoggedOut", ev("LoggedOut", OnConnect=False, Reason=1), R.USER_LOGGED_OUT),
    ("LoggedOut on connect", ev("LoggedOut", OnConnect=True, Reason=1), R.USER_LOGGED_OUT),
    ("StreamReplaced", ev("StreamReplaced"), R.SESSION_REVOKED),
    ("TemporaryBan", ev("TemporaryBan", Code=2, Expire=3600), R.SESSION_REVOKED),
    ("ClientOutdated", ev("ClientOutdated"), R.SESSION_REVOKED),
    *[
        (f"ConnectFailure {reason}", lambda reason=reason: failure(reason), R.SESSION_REVOKED)
        for reason in (
            "LOGGED_OUT",
            "TEMP_BANNED",
            "MAIN_DEVICE_GONE",
            "UNKNOWN_LOGOUT",
            "CLIENT_OUTDATED",
            "BAD_USER_AGENT",
        )
    ],
    *[
        (f"ConnectFailure {reason}", lambda reason=reason: failure(reason), R.CONNECTION_LOST)
        for reason in ("GENERIC", "INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "EXPERIMENTAL")
    ],
    ("Disconnected", ev("Disconnected", status=True), R.CONNECTION_LOST),
    ("KeepAliveTimeout", lambda: keep_alive_timeout(), R.CONNECTION_LOST),
    ("StreamError", lambda: stream_error(), R.CONNECTION_LOST),
]


@pytest.mark.parametrize(("name", "make", "reason"), ENDINGS, ids=[e[0] for e in ENDINGS])
async def test_each_ending_event_reports_its_reason(
    engine: Any, name: str, make: Callable[[], Any], reason: DisconnectReason
) -> None:
    reports = Reports()
    client = await started(engine, reports)
    await emit(client, connected(), make())
    assert await reports.wait(2) == [("connected",), ("disconnected", reason)]


async def test_qr_codes_carry_whatsmeows_timeouts(engine: Any) -> None:
    reports = Reports()
    client = await started(engine, reports)
    for number in range(6):
        await asyncio.to_thread(go_shows_qr, client, f"2@ref{number},a,b,c")
    got = await reports.wait(6)
    assert got == [("qr_issued", f"2@ref{n},a,b,c", t) for n, t in enumerate([60.0] + [20.0] * 5)]


async def test_the_last_code_timing_out_is_reported_as_expired(nz: Any, tmp_path: Path) -> None:
    engine = _engine_class()(CredentialVault(tmp_path), qr_timeouts=(0.2, 0.1))
    try:
        reports = Reports()
        client = await started(engine, reports)
        await asyncio.to_thread(go_shows_qr, client, "2@first")
        await reports.wait(1)
        await asyncio.to_thread(go_shows_qr, client, "2@second")
        got = await reports.wait(3, timeout=3)
        assert got == [
            ("qr_issued", "2@first", 0.2),
            ("qr_issued", "2@second", 0.1),
            ("qr_expired",),
        ]
        # It stops the client itself too: nothing runs for the key any more.
        for _ in range(100):
            if engine.status(KEY) is None:
                break
            await asyncio.sleep(0.01)
        assert engine.status(KEY) is None
    finally:
        await engine.close()


async def test_scanning_pairs_then_connects(engine: Any) -> None:
    reports = Reports()
    client = await started(engine, reports)
    await asyncio.to_thread(go_shows_qr, client, "2@code")
    await emit(client, pair_success(), connected())
    assert await reports.wait(3) == [("qr_issued", "2@code", 60.0), ("paired",), ("connected",)]
    assert engine.status(KEY).paired and engine.status(KEY).online


async def test_a_failed_pairing_reports_nothing(engine: Any) -> None:
    reports = Reports()
    client = await started(engine, reports)
    p = proto()
    jid = p.JID(User="", Server="", Device=0, RawAgent=0, Integrator=0)
    status = p.PairStatus.PStatus.Value("ERROR")
    error = p.PairStatus(ID=jid, BusinessName="", Platform="", Status=status, Error="bad")
    await emit(client, error, connected())
    assert await reports.wait(1) == [("connected",)]


@pytest.mark.parametrize(
    ("lost", "back"),
    [("Disconnected", "Connected"), ("KeepAliveTimeout", "KeepAliveRestored")],
)
async def test_a_paired_device_is_connected_again_after_a_drop(
    engine: Any, lost: str, back: str
) -> None:
    reports = Reports()
    client = await started(engine, reports)
    p = proto()
    drop = {
        "Disconnected": lambda: p.Disconnected(status=True),
        "KeepAliveTimeout": keep_alive_timeout,
    }
    again = {"Connected": connected, "KeepAliveRestored": p.KeepAliveRestored}
    await emit(client, pair_success(), connected(), drop[lost]())
    # A second timeout is the same outage: reported once.
    await emit(client, drop[lost](), again[back]())
    assert await reports.wait(4) == [
        ("paired",),
        ("connected",),
        ("disconnected", R.CONNECTION_LOST),
        ("connected",),
    ]


async def test_keep_alive_restored_without_a_loss_reports_nothing(engine: Any) -> None:
    reports = Reports()
    client = await started(engine, reports)
    await emit(client, proto().KeepAliveRestored(), connected())
    assert await reports.wait(1) == [("connected",)]


async def test_a_phone_number_gets_a_pairing_code_after_the_first_qr(nz: Any, engine: Any) -> None:
    reports = Reports()
    asked: list[tuple[Any, ...]] = []

    def pair_phone(phone: str, push: bool, client_name: Any = None) -> str:
        asked.append((phone, push, client_name))
        return "ABCD1234"

    engine.fail = None
    client = await started(engine, reports, phone="6281234567890")
    client.PairPhone = pair_phone
    await asyncio.to_thread(go_shows_qr, client, "2@code")
    assert await reports.wait(2) == [
        ("qr_issued", "2@code", 60.0),
        ("pair_code_issued", "ABCD-1234", 160.0),
    ]
    assert asked == [("6281234567890", True, nz.neonize().ClientName.LINUX)]


async def test_a_failed_dial_is_a_lost_connection(nz: Any, tmp_path: Path) -> None:
    from neonize.exc import NeonizeError

    engine = _engine_class()(CredentialVault(tmp_path), fail=NeonizeError("failed to dial"))
    try:
        reports = Reports()
        await engine.start(KEY, reports)
        assert await reports.wait(1) == [("disconnected", R.CONNECTION_LOST)]
    finally:
        await engine.close()


async def test_a_paired_device_retries_a_failed_dial(nz: Any, tmp_path: Path) -> None:
    from neonize.exc import NeonizeError

    vault = CredentialVault(tmp_path)
    vault.write("neonize", KEY, "whatsmeow.sqlite3", b"")  # stored credentials: paired
    engine = _engine_class()(vault, fail=NeonizeError("no route"), retry_delays=(0.05,))
    try:
        reports = Reports()
        await engine.start(KEY, reports)
        for _ in range(200):
            if len(engine.clients) >= 3:
                break
            await asyncio.sleep(0.01)
        # Reported once; the attempts go on until it connects or is stopped.
        assert reports.got == [("disconnected", R.CONNECTION_LOST)]
        assert len(engine.clients) >= 3 and engine.status(KEY).paired
        engine.fail = None
        for _ in range(200):
            if engine.status(KEY).attempts == 0 or len(engine.clients) > 10:
                break
            await emit(engine.clients[-1], connected())
            await asyncio.sleep(0.02)
        assert reports.got[-1] == ("connected",)
    finally:
        await engine.close()


async def test_a_resumed_device_asked_to_pair_has_lost_its_credentials(
    nz: Any, tmp_path: Path
) -> None:
    vault = CredentialVault(tmp_path)
    vault.write("neonize", KEY, "whatsmeow.sqlite3", b"")
    engine = _engine_class()(vault)
    try:
        reports = Reports()
        client = await started(engine, reports)
        await asyncio.to_thread(go_shows_qr, client, "2@code")
        assert await reports.wait(1) == [("disconnected", R.SESSION_REVOKED)]
    finally:
        await engine.close()


async def test_stop_ends_the_connection_and_a_late_event_is_not_reported(engine: Any) -> None:
    reports = Reports()
    client = await started(engine, reports)
    await engine.stop(KEY)
    assert engine.status(KEY) is None
    await emit(client, connected())
    await asyncio.sleep(0.05)
    assert reports.got == []


def test_importing_neonize_keeps_pairgates_logging() -> None:
    script = (
        "import logging, sys\n"
        "handler = logging.NullHandler()\n"
        "logging.basicConfig(handlers=[handler], level=logging.WARNING)\n"
        "from adapters.engines.neonize import library\n"
        "library.neonize()\n"
        "root = logging.getLogger()\n"
        "sys.exit(0 if root.handlers == [handler] and root.level == logging.WARNING else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    assert done.returncode == 0


def test_pairgate_does_not_import_neonize_until_an_engine_starts() -> None:
    script = (
        "import sys\n"
        "from entrypoints.asgi import create_app\n"
        "from adapters.engines.neonize import NeonizeEngine\n"
        "sys.exit(1 if 'neonize' in sys.modules else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    assert done.returncode == 0


# -- through pairgate's own service: what gets recorded, and the teardown it triggers --


@dataclass
class Published:
    events: list[str] = field(default_factory=list)

    async def subscribe(self, key: str, subscriber: str) -> None:
        pass

    async def unsubscribe_all(self, key: str) -> None:
        pass

    async def recorded(self, key: str, event: Any) -> None:
        name = type(event).__name__
        self.events.append(f"{name}({event.reason})" if name == "Disconnected" else name)


@dataclass
class Clock:
    def now(self) -> Any:
        from datetime import UTC, datetime

        return datetime.now(UTC)


async def serving(engine: Any) -> tuple[Any, Published]:
    from adapters.engines.catalog import Engines
    from domain.application.dispatch import EventBus
    from domain.application.pairing import PairingService
    from domain.application.sessions import DeviceSessions
    from domain.application.store_calls import StoreAccess
    from domain.model.session import DeviceSession

    sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    published = Published()
    bus = EventBus()
    engines = Engines({"neonize": engine})
    service = PairingService(StoreAccess(sessions), engines, published, Clock(), bus=bus)
    bus.register(
        {
            DeviceSession.Disconnected: [service.link_ended],
            DeviceSession.Event: [published.recorded],
        }
    )
    await service.create(KEY, "Phone", "neonize", "owner", "sid")
    return service, published


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_the_service_records_a_pairing_and_a_phone_logout(
    engine: Any, tmp_path: Path
) -> None:
    service, published = await serving(engine)
    await until(lambda: bool(engine.clients))
    assert CredentialVault(tmp_path / "credentials").holds("neonize", KEY)
    client = engine.clients[-1]
    await asyncio.to_thread(go_shows_qr, client, "2@code")
    await emit(client, pair_success(), connected())
    await until(lambda: published.events[-1:] == ["Ready"])
    assert engine.status(KEY).paired
    await emit(client, proto().LoggedOut(OnConnect=False, Reason=1))
    vault = CredentialVault(tmp_path / "credentials")
    # The store whatsmeow was opened on is deleted with the link.
    await until(lambda: published.events[-1:] == ["Disconnected(user logged out)"])
    assert engine.status(KEY) is None and not vault.holds("neonize", KEY)
    assert published.events == [
        "SessionCreated",
        "QrIssued",
        "Authenticated",
        "Ready",
        "Disconnected(user logged out)",
    ]
    await service.shutdown()


async def test_the_service_discards_a_pairing_whose_codes_ran_out(nz: Any, tmp_path: Path) -> None:
    vault = CredentialVault(tmp_path)
    engine = _engine_class()(vault, qr_timeouts=(0.1,))
    try:
        service, published = await serving(engine)
        await until(lambda: bool(engine.clients))
        vault.write("neonize", KEY, "whatsmeow.sqlite3", b"")  # what whatsmeow would leave
        await asyncio.to_thread(go_shows_qr, client := engine.clients[-1], "2@code")
        await until(lambda: published.events[-1:] == ["Disconnected(qr expired)"])
        # The service discarded it from within the engine's own report: stopped, deleted.
        await until(lambda: engine.status(KEY) is None and not vault.holds("neonize", KEY))
        assert published.events == ["SessionCreated", "QrIssued", "Disconnected(qr expired)"]
        await emit(client, connected())  # a late event from the stopped client
        await asyncio.sleep(0.05)
        assert published.events[-1] == "Disconnected(qr expired)"
        await service.shutdown()
    finally:
        await engine.close()
