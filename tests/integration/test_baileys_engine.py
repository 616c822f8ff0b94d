"""The Baileys engine with its real Node sidecar.

Two halves: recorded `connection.update` shapes replayed through the real sidecar (its
`--replay` mode stands in for makeWASocket), checking what pairgate reports for each; and
the real Baileys offline (WhatsApp unreachable) behind a real pairgate server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.credentials import CredentialVault
from adapters.engines.baileys import BaileysEngine, sidecar_installed
from adapters.engines.baileys.engine import sidecar_command
from adapters.engines.baileys.reasons import QR_REFS_ENDED
from adapters.engines.baileys.sidecar import Sidecar, SidecarError
from domain.model.session import DisconnectReason as Reason
from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, decode_qr, running, unique_key

pytestmark = pytest.mark.skipif(
    not (shutil.which("node") and sidecar_installed()),
    reason="needs Node.js and `npm ci --prefix adapters/engines/baileys/sidecar`",
)

# Shapes as the real Baileys emits them against the stand-in (tests/e2e/test_baileys_standin.py).
QR = "https://wa.me/settings/linked_devices#2@ref,noise,identity,adv,1"
OFFLINE = "WebSocket Error (getaddrinfo ENOTFOUND web.whatsapp.com)"


class Reports:
    """EngineEvents that records what the engine reported, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self._arrived = asyncio.Condition()

    async def _add(self, *report: Any) -> None:
        async with self._arrived:
            self.seen.append(report)
            self._arrived.notify_all()

    async def qr_issued(self, key: str, code: str, timeout: float) -> None:
        await self._add("qr", key, code, timeout)

    async def pair_code_issued(self, key: str, code: str, timeout: float) -> None:
        await self._add("pair_code", key, code, timeout)

    async def qr_expired(self, key: str) -> None:
        await self._add("qr_expired", key)

    async def passkey_required(self, key: str, options: dict[str, Any], timeout: float) -> None:
        await self._add("passkey_required", key, options, timeout)

    async def passkey_rejected(self, key: str) -> None:
        await self._add("passkey_rejected", key)

    async def paired(self, key: str) -> None:
        await self._add("paired", key)

    async def connected(self, key: str) -> None:
        await self._add("connected", key)

    async def disconnected(self, key: str, reason: Reason) -> None:
        await self._add("disconnected", key, reason)

    async def wait(
        self, done: Callable[[list[tuple[Any, ...]]], bool], timeout: float = 10
    ) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: done(self.seen)), timeout)

    async def wait_count(self, key: str, count: int) -> list[tuple[Any, ...]]:
        await self.wait(lambda seen: len(self.of(key)) >= count)
        return self.of(key)

    def of(self, key: str) -> list[tuple[Any, ...]]:
        return [report[:1] + report[2:] for report in self.seen if report[1] == key]


def update(after: int = 0, **fields: Any) -> dict[str, Any]:
    return {"after": after, "update": fields}


def closed(status: int, message: str, after: int = 0) -> dict[str, Any]:
    error = {"statusCode": status, "message": message}
    return update(after, connection="close", lastDisconnect={"error": error})


PAIR_SUCCESS = {
    "after": 0,
    "creds": {"me": {"id": "6281234567890:1@s.whatsapp.net", "lid": "100001:1@lid"}},
    "update": {"isNewLogin": True},
}


@asynccontextmanager
async def replaying(
    tmp_path: Path, scripts: dict[str, list[list[dict[str, Any]]]], vault: CredentialVault
) -> AsyncIterator[BaileysEngine]:
    replay = tmp_path / f"replay-{time.monotonic_ns()}.json"
    replay.write_text(json.dumps(scripts))
    engine = BaileysEngine(vault, args=["--replay", str(replay)], reconnect_delays=[0.05])
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
def vault(tmp_path: Path) -> CredentialVault:
    return CredentialVault(tmp_path / "credentials")


# -- recorded connection.update shapes, replayed through the real sidecar ------------

CLOSES = [
    (401, "Intentional Logout", ("disconnected", Reason.USER_LOGGED_OUT)),
    # The phone removed the device: a stream error pushed to the live socket.
    (401, "Stream Errored (conflict)", ("disconnected", Reason.USER_LOGGED_OUT)),
    # ... or, while it was offline, its next login refused.
    (401, "Connection Failure", ("disconnected", Reason.USER_LOGGED_OUT)),
    (440, "Stream Errored (conflict)", ("disconnected", Reason.SESSION_REVOKED)),
    (403, "Forbidden", ("disconnected", Reason.SESSION_REVOKED)),
    (411, "Multidevice mismatch", ("disconnected", Reason.SESSION_REVOKED)),
    (428, "Connection Closed", ("disconnected", Reason.CONNECTION_LOST)),
    (428, "Connection Terminated", ("disconnected", Reason.CONNECTION_LOST)),  # socket dropped
    (408, OFFLINE, ("disconnected", Reason.CONNECTION_LOST)),
    (500, "Bad session", ("disconnected", Reason.CONNECTION_LOST)),
    (408, QR_REFS_ENDED, ("qr_expired",)),
]


async def test_each_close_of_a_pairing_socket_is_reported_as_its_reason(
    tmp_path: Path, vault: CredentialVault
) -> None:
    keys = [f"close-{status}-{n}" for n, (status, _, _) in enumerate(CLOSES)]
    scripts = {
        key: [[update(connection="connecting"), update(qr=QR), closed(status, message, 50)]]
        for key, (status, message, _) in zip(keys, CLOSES, strict=True)
    }
    reports = Reports()
    async with replaying(tmp_path, scripts, vault) as engine:
        await asyncio.gather(*(engine.start(key, reports) for key in keys))
        for key, (status, message, expected) in zip(keys, CLOSES, strict=True):
            seen = await reports.wait_count(key, 2)
            assert seen == [("qr", QR, 60.0), expected], (status, message)
            assert not vault.holds("baileys", key)


async def test_a_scan_pairs_restarts_on_515_and_connects(
    tmp_path: Path, vault: CredentialVault
) -> None:
    pairing = [
        update(connection="connecting"),
        update(qr=QR),
        update(20, qr=QR + "2"),
        # Before the scan Baileys already saves routing info: it must not reach the disk.
        {"after": 0, "creds": {"routingInfo": "CAUIAg=="}, "update": {}},
        # The scan comes well after: the disk is looked at in between (under load, a look
        # right after the second code could come after a scan that followed at once).
        {**PAIR_SUCCESS, "after": 2000},
        closed(515, "Stream Errored (restart required)", 20),
    ]
    online = [update(connection="connecting"), update(20, connection="open")]
    reports = Reports()
    async with replaying(tmp_path, {"k": [pairing, online]}, vault) as engine:
        await engine.start("k", reports)
        await reports.wait_count("k", 2)
        await asyncio.sleep(0.5)  # the routing info's save has been handled by now
        assert not vault.holds("baileys", "k"), "nothing is stored before the device pairs"
        seen = await reports.wait_count("k", 4)
    assert seen == [("qr", QR, 60.0), ("qr", QR + "2", 20.0), ("paired",), ("connected",)]
    directory = vault.directory("baileys", "k", create=False)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    creds = directory / "creds.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text())["me"]["id"].startswith("6281234567890")


async def test_a_paired_device_reconnects_and_resumes_without_a_qr(
    tmp_path: Path, vault: CredentialVault
) -> None:
    pairing = [update(qr=QR), PAIR_SUCCESS, closed(515, "restart required")]
    online = [update(connection="open"), closed(428, "Connection Terminated", 50)]
    offline = [closed(408, OFFLINE, 10)]  # the first reconnection attempt fails
    again = [update(connection="open")]
    reports = Reports()
    async with replaying(tmp_path, {"k": [pairing, online, offline, again]}, vault) as engine:
        await engine.start("k", reports)
        seen = await reports.wait_count("k", 5)
    lost = ("disconnected", Reason.CONNECTION_LOST)
    assert seen == [("qr", QR, 60.0), ("paired",), ("connected",), lost, ("connected",)]

    # A new process (recovery at start-up) resumes from the stored credentials.
    reports = Reports()
    async with replaying(tmp_path, {"k": [[update(connection="open")]]}, vault) as engine:
        await engine.start("k", reports, phone="6281234567890")
        assert await reports.wait_count("k", 1) == [("connected",)]
        await engine.logout("k")
    assert not vault.holds("baileys", "k")


async def test_a_phone_number_gets_a_pairing_code(tmp_path: Path, vault: CredentialVault) -> None:
    reports = Reports()
    async with replaying(tmp_path, {"k": [[update(qr=QR)]]}, vault) as engine:
        await engine.start("k", reports, phone="6281234567890")
        seen = await reports.wait_count("k", 2)
    assert seen == [("qr", QR, 60.0), ("pair_code", "ABCD-1234", 160.0)]


async def test_a_logged_out_paired_device_loses_its_credentials(
    tmp_path: Path, vault: CredentialVault
) -> None:
    pairing = [update(qr=QR), PAIR_SUCCESS, closed(515, "restart required")]
    online = [update(connection="open"), closed(401, "Connection Failure", 20)]
    reports = Reports()
    async with replaying(tmp_path, {"k": [pairing, online]}, vault) as engine:
        await engine.start("k", reports)
        seen = await reports.wait_count("k", 4)
    assert seen[2:] == [("connected",), ("disconnected", Reason.USER_LOGGED_OUT)]
    assert not vault.holds("baileys", "k")


async def test_a_discarded_device_is_not_written_again_by_its_ended_socket(
    tmp_path: Path, vault: CredentialVault
) -> None:
    """`discard` (a restart, a revoked resume) ends the socket and deletes the files, but
    Baileys' work under way when a socket ends may still save credentials: none of that may
    land in the key's directory, not even once it exists again for the key's next pairing."""
    late = {"after": 1500, "late": True, "creds": {"me": {"id": "6281234567890:2@s.whatsapp.net"}}}
    reports = Reports()
    async with replaying(
        tmp_path, {"k": [[update(qr=QR), PAIR_SUCCESS, late], [update(qr=QR)]]}, vault
    ) as engine:
        await engine.start("k", reports)
        assert await reports.wait_count("k", 2) == [("qr", QR, 60.0), ("paired",)]
        assert vault.holds("baileys", "k")
        await engine.discard("k")
        assert not vault.holds("baileys", "k")
        await engine.start("k", reports)  # a new pairing: the key's directory again, empty
        await reports.wait_count("k", 3)
        creds = vault.directory("baileys", "k", create=False) / "creds.json"
        deadline = time.monotonic() + 2.5  # past the first socket's late save (1.5 s)
        while not creds.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not creds.exists(), "the discarded device's socket wrote its credentials again"
        assert not vault.holds("baileys", "k")


async def pair(tmp_path: Path, vault: CredentialVault, key: str) -> None:
    pairing = [update(qr=QR), PAIR_SUCCESS, closed(515, "restart required")]
    reports = Reports()
    async with replaying(tmp_path, {key: [pairing, [update(connection="open")]]}, vault) as engine:
        await engine.start(key, reports)
        await reports.wait_count(key, 3)
    assert vault.holds("baileys", key)


async def test_the_sidecar_is_restarted_after_it_dies(
    tmp_path: Path, vault: CredentialVault
) -> None:
    await pair(tmp_path, vault, "paired")
    reports = Reports()
    # A restarted sidecar reads its replay file afresh: "paired" opens again.
    scripts = {"paired": [[update(connection="open")]], "unpaired": [[update(qr=QR)]]}
    async with replaying(tmp_path, scripts, vault) as engine:
        await engine.start("paired", reports)
        await engine.start("unpaired", reports)
        await reports.wait_count("paired", 1)
        await reports.wait_count("unpaired", 1)
        pid = engine.sidecar_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        paired = await reports.wait_count("paired", 3)
        unpaired = await reports.wait_count("unpaired", 2)
        assert engine.sidecar_pid not in (None, pid)
    lost = ("disconnected", Reason.CONNECTION_LOST)
    assert paired == [("connected",), lost, ("connected",)]
    assert unpaired == [("qr", QR, 60.0), lost]
    assert vault.holds("baileys", "paired")


# -- the real Baileys, offline, behind a real pairgate server --------------------------


@asynccontextmanager
async def real_server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(simulate=False, data_dir=tmp_path / "data")
    async with running(settings) as server:
        engine = baileys_of(server)
        try:
            yield server
        finally:
            await server.stop()
            await engine.close()  # not yet part of Pairgate.close


def baileys_of(server: Server) -> BaileysEngine:
    engine = server.pairgate.engines.resolve("baileys")
    assert isinstance(engine, BaileysEngine)
    return engine


async def create(client: Client, key: str) -> Any:
    return await client.call(
        "session.create", {"key": key, "name": "My Device", "engine": "baileys"}
    )


async def test_offline_a_session_is_created_then_loses_its_connection(tmp_path: Path) -> None:
    async with real_server(tmp_path) as server, clients(server.url) as [client]:
        key = unique_key()
        started = time.monotonic()
        ack = await create(client, key)
        assert ack["ok"] is True and ack["state"] == "created"
        gone = await client.wait_for("session.disconnected", timeout=10)
        assert time.monotonic() - started < 10
        assert gone == {"key": key, "reason": "connection lost"}
        assert client.names() == ["session.created", "session.disconnected"]
        assert not CredentialVault(tmp_path / "data" / "credentials").holds("baileys", key)


async def test_offline_ten_sessions_at_once_keep_the_server_healthy(tmp_path: Path) -> None:
    async with real_server(tmp_path) as server, clients(server.url, 10) as connected:
        keys = [unique_key() for _ in connected]
        acks = await asyncio.gather(*(create(c, k) for c, k in zip(connected, keys, strict=True)))
        assert all(ack["ok"] for ack in acks)
        for client, key in zip(connected, keys, strict=True):
            gone = await client.wait_for("session.disconnected", timeout=10)
            assert gone == {"key": key, "reason": "connection lost"}
        health = await server.get("/healthz")
        assert health.status_code == 200 and health.json()["sessions_running"] == 0


@asynccontextmanager
async def silent_whatsapp() -> AsyncIterator[str]:
    """A stand-in endpoint that accepts connections and never answers: sockets stay up."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    listener = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/ws/chat"
    finally:
        for writer in held:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def test_the_server_survives_a_killed_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with silent_whatsapp() as endpoint:
        monkeypatch.setenv("PAIRGATE_BAILEYS_WS_URL", endpoint)
        async with real_server(tmp_path) as server, clients(server.url) as [client]:
            key = unique_key()
            assert (await create(client, key))["ok"] is True
            engine = baileys_of(server)
            pid = engine.sidecar_pid
            assert pid is not None
            assert client.names() == ["session.created"], "the socket waits on the endpoint"
            os.kill(pid, signal.SIGKILL)
            gone = await client.wait_for("session.disconnected", timeout=10)
            assert gone == {"key": key, "reason": "connection lost"}

            again = unique_key()
            ack = await create(client, again)
            assert ack["ok"] is True and ack["state"] == "created"
            assert engine.sidecar_pid not in (None, pid)
            assert (await server.get("/healthz")).status_code == 200
            assert server.pairgate.service.running_keys == {again}


async def test_without_node_baileys_is_unavailable_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("entrypoints.engines.shutil.which", lambda name: None)
    async with running(Settings(simulate=False, data_dir=tmp_path)) as server:
        async with clients(server.url) as [client]:
            ack = await create(client, unique_key())
            error = await client.wait_for("session.error")
    assert ack["error"]["code"] == error["code"] == "engine_unavailable"
    assert "npm ci --prefix adapters/engines/baileys/sidecar" in error["message"]


async def test_logout_of_an_offline_device_deletes_its_credentials(
    tmp_path: Path, vault: CredentialVault
) -> None:
    await pair(tmp_path, vault, "k")
    engine = BaileysEngine(vault)  # the real Baileys: it tries to reach WhatsApp to unlink
    try:
        await engine.logout("k")
    finally:
        await engine.close()
    assert not vault.holds("baileys", "k")


async def test_the_sidecar_refuses_what_it_does_not_know() -> None:
    sidecar = Sidecar(sidecar_command(), on_event=lambda message: None, on_exit=lambda: None)
    try:
        await sidecar.start()
        with pytest.raises(SidecarError, match="failed"):
            await sidecar.call("reboot", key="k")
    finally:
        await sidecar.close()


async def test_a_missing_node_fails_the_start_not_the_process(vault: CredentialVault) -> None:
    engine = BaileysEngine(vault, node="/nonexistent/node")
    with pytest.raises(SidecarError, match="cannot run"):
        await engine.start("k", Reports())
    await engine.close()


async def test_a_resumed_device_asked_to_pair_again_is_revoked(
    tmp_path: Path, vault: CredentialVault
) -> None:
    await pair(tmp_path, vault, "k")
    reports = Reports()
    async with replaying(tmp_path, {"k": [[update(qr=QR)]]}, vault) as engine:
        await engine.start("k", reports)
        assert await reports.wait_count("k", 1) == [("disconnected", Reason.SESSION_REVOKED)]
    assert not vault.holds("baileys", "k")


async def test_the_seed_flow_and_a_restart_through_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pairgate's own service over the replaying sidecar: pair, stop the server, resume."""

    def replaying_engines(scripts: dict[str, list[list[dict[str, Any]]]]) -> None:
        replay = tmp_path / f"replay-{time.monotonic_ns()}.json"
        replay.write_text(json.dumps(scripts))
        engine = functools.partial(BaileysEngine, args=["--replay", str(replay)])
        monkeypatch.setattr("entrypoints.engines.baileys.BaileysEngine", engine)

    scan = [update(qr=QR), PAIR_SUCCESS, closed(515, "restart")]
    replaying_engines({"device123": [scan, [update(connection="open")]]})
    async with real_server(tmp_path) as server, clients(server.url) as [client]:
        await create(client, "device123")
        qr = await client.wait_for("session.qr")
        assert decode_qr(qr["qr"]) == QR and qr["timeout"] == 60
        await client.wait_for("session.ready")
        assert client.names() == [
            "session.created",
            "session.qr",
            "session.authenticated",
            "session.ready",
        ]

    replaying_engines({"device123": [[update(connection="open")]]})
    async with real_server(tmp_path) as server, clients(server.url) as [client]:
        joined = await client.call("session.join", {"key": "device123"})
        if joined["state"] != "ready":
            await client.wait_for("session.ready")
        assert "session.qr" not in client.names()
