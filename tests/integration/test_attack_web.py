"""Issue 19's web attacks, replayed against a real server: a page load unlinking a device,
missing security headers, tokens in the access log, and DNS rebinding through `Host`."""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import socketio

from adapters.http.guards import HostPolicy, normalize
from entrypoints.logs import REDACTED, JsonFormatter, RedactSecrets
from entrypoints.settings import Settings
from tests.e2e.service_process import ServiceProcess, poll
from tests.helpers import Client, Server, pair, running, simulated_keys, unique_key

# -- 4. a page load (session.create from ?key=) must not discard a link -------------------


@pytest.fixture
def sim_settings(tmp_path: Path) -> Settings:
    # Codes that outlast a slow scan; a dropped device that stays away for the whole test.
    return Settings(
        simulate=True,
        data_dir=tmp_path / "data",
        sim_qr_timeouts=(30.0, 30.0),
        sim_reconnect_delay=3600.0,
    )


@pytest.fixture(params=["restarted server", "dropped connection"])
async def offline_device(
    request: pytest.FixtureRequest, sim_settings: Settings
) -> AsyncIterator[tuple[Server, str]]:
    """A paired device offline (`disconnected`, `connection lost`) holding its credentials:
    either a server restarted without recovery, or a connection that dropped here and has
    not come back yet. Yields the server now responsible for it, and its key."""
    key = unique_key("victim")
    if request.param == "restarted server":
        async with running(sim_settings) as first:
            client = await Client().connect(first.url)
            await pair(first, client, key)
            await client.close()
        settings = sim_settings.model_copy(update={"recover": False})
        async with running(settings) as server:
            yield server, key
        return
    async with running(sim_settings) as server:
        client = await Client().connect(server.url)
        await pair(server, client, key)
        dropped = await server.post(f"/api/simulator/devices/{key}/drop")
        assert dropped.is_success, dropped.text
        await client.wait_for("session.disconnected")
        await client.close()
        yield server, key


async def _standing(server: Server, key: str) -> tuple[str, str | None, bool]:
    session = await server.pairgate.service.find(key)
    assert session is not None
    reason = session.reason.value if session.reason is not None else None
    return session.state.value, reason, session.holds_credentials


async def test_a_plain_create_does_not_unlink_an_offline_device(
    offline_device: tuple[Server, str], sim_settings: Settings
) -> None:
    server, key = offline_device
    assert await _standing(server, key) == ("disconnected", "connection lost", True)
    assert simulated_keys(sim_settings) == 1
    versions = len(server.pairgate.sessions.history(key))

    # What the Scan page sends on load for /scan?key=<key>, e.g. from a hidden iframe.
    client = await Client().connect(server.url, headers={"Origin": server.url})
    try:
        ack = await client.call("session.create", {"key": key, "name": key, "engine": "baileys"})
        assert ack["ok"] is False, ack
        assert ack["error"]["code"] == "invalid_transition"
        assert "relink" in ack["error"]["message"]
        error = await client.wait_for("session.error")
        assert error["key"] == key and error["code"] == "invalid_transition"
    finally:
        await client.close()

    assert simulated_keys(sim_settings) == 1  # the credentials stay
    assert await _standing(server, key) == ("disconnected", "connection lost", True)
    assert len(server.pairgate.sessions.history(key)) == versions  # nothing recorded


async def test_relink_true_is_the_deliberate_way_to_pair_again(
    offline_device: tuple[Server, str], sim_settings: Settings
) -> None:
    server, key = offline_device
    client = await Client().connect(server.url)
    try:
        request = {"key": key, "name": "New phone", "engine": "simulator", "relink": True}
        ack = await client.call("session.create", request)
        assert ack["ok"] is True, ack
        assert ack["state"] == "created"
        await client.wait_for("session.qr")
        assert simulated_keys(sim_settings) == 0  # the old link is gone, as asked
        kinds = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
        assert kinds.count("Restarted") == 1
    finally:
        await client.close()


async def test_relink_must_be_a_boolean(sim_settings: Settings) -> None:
    async with running(sim_settings) as server:
        client = await Client().connect(server.url)
        try:
            request = {"key": "k1", "name": "n", "engine": "simulator", "relink": "yes"}
            ack = await client.call("session.create", request)
            assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload", ack
            assert "relink" in ack["error"]["message"]
        finally:
            await client.close()


async def test_ended_sessions_still_restart_without_relink(sim_settings: Settings) -> None:
    """Only a link is protected: a key whose pairing ended (no credentials) restarts."""
    async with running(sim_settings) as server:
        client = await Client().connect(server.url)
        try:
            key = unique_key("ended")
            await pair(server, client, key)
            await server.post(f"/api/simulator/devices/{key}/logout")
            await client.wait_for("session.disconnected")
            request = {"key": key, "name": "n", "engine": "simulator"}
            ack = await client.call("session.create", request)
            assert ack["ok"] is True and ack["state"] == "created", ack
        finally:
            await client.close()


# -- 4. security headers on every response ------------------------------------------------

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _assert_secured(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path}"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{where}: {name}"
    policy = response.headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in policy.split(";") if d.strip()}
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", f"{where}: {policy!r}"
    assert directives.get("script-src") == "script-src 'self'", f"{where}: {policy!r}"
    assert "'unsafe-inline'" not in policy, f"{where}: {policy!r}"


async def test_every_response_carries_the_security_headers(sim_settings: Settings) -> None:
    async with running(sim_settings) as server:
        paths = [
            "/",
            "/scan",
            "/scan?key=k1",
            "/static/scan.js",
            "/static/scan.css",
            "/static/vendor/socket.io.min.js",
            "/api/info",
            "/api/sessions/nobody",
            "/api/sessions/nobody/history",
            "/api/simulator/devices/nobody/code",
            "/healthz",
            "/readyz",
            "/metrics",
            "/no/such/page",
            "/socket.io/?EIO=4&transport=polling",
        ]
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for path in paths:
                _assert_secured(await http.get(path))
            _assert_secured(await http.post("/api/simulator/devices/nobody/drop"))


# -- 7. no secret reaches a log line -----------------------------------------------------

SECRET = "s3cr3t-T0KEN-4f9a"  # alice's token
GUESS = "wr0ng-GUESS-77c1"  # a token the server does not know: a secret all the same


async def _send_secrets(url: str) -> None:
    bearer = {"authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for path in (
            f"/scan?key=k1&token={SECRET}",
            f"/api/sessions/k1?token={SECRET}",
            f"/api/info?access_token={SECRET}&x=1",
            f"/static/scan.js?token={SECRET}",
        ):
            await http.get(path, headers=bearer)
        await http.post("/api/simulator/devices/k1/drop", headers=bearer)
        guess = {"authorization": f"Bearer {GUESS}"}
        await http.get(f"/api/sessions/k1?token={GUESS}&at=1", headers=guess)
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(
        f"{url}?token={SECRET}",
        transports=["polling", "websocket"],
        auth={"token": SECRET},
        headers=bearer,
        wait_timeout=10,
    )
    await sio.call("session.join", {"key": "k1"}, timeout=10)
    await sio.disconnect()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_tokens_reach_no_log_line(tmp_path: Path, log_format: str) -> None:
    env = {
        "PAIRGATE_LOG_FORMAT": log_format,
        "PAIRGATE_TOKENS": f"alice:{SECRET}",
        "PAIRGATE_LOG_LEVEL": "info",
    }
    data = tmp_path / "data"
    data.mkdir()
    service = ServiceProcess.start(data, tmp_path / "pairgate.log", env)
    try:
        await _send_secrets(service.url)
        # The access log line of the last request: then every earlier one is written too.
        poll(lambda: "/socket.io/" in service.log(), 10, "the access log")
        poll(lambda: "/api/simulator/devices/k1/drop" in service.log(), 10, "the access log")
    finally:
        service.terminate()
    lines = service.log().splitlines()
    assert any("/scan?key=k1" in line for line in lines), service.log()
    assert any(f"/api/sessions/k1?token={REDACTED}&at=1" in line for line in lines)
    leaked = [line for line in lines if SECRET in line or GUESS in line]
    assert not leaked, "\n".join(leaked)
    if log_format == "json":
        access = [json.loads(line) for line in lines if '"uvicorn.access"' in line]
        assert access, service.log()


# -- 11. DNS rebinding: a foreign Host is refused ------------------------------------------

EVIL = {"host": "evil.example", "origin": "http://evil.example"}


async def test_a_foreign_host_is_refused_on_every_route(sim_settings: Settings) -> None:
    async with running(sim_settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for path in ("/", "/scan?key=k1", "/api/info", "/healthz", "/static/scan.js"):
                response = await http.get(path, headers=EVIL)
                assert response.status_code == 400, f"{path}: {response.status_code}"
                error = response.json()["error"]
                assert error["code"] == "invalid_host", error
                assert "PAIRGATE_ALLOWED_HOSTS" in error["message"]
            polling = await http.get("/socket.io/?EIO=4&transport=polling", headers=EVIL)
            assert polling.status_code == 400 and polling.json()["ok"] is False
            scanned = await http.post("/api/simulator/devices/k1/drop", headers=EVIL)
            assert scanned.status_code == 400


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_a_rebinding_page_cannot_open_socket_io(
    sim_settings: Settings, transport: str
) -> None:
    async with running(sim_settings) as server:
        attacker = Client(socketio.AsyncClient(reconnection=False))
        key = unique_key("rebind")
        request = {"key": key, "name": "n", "engine": "simulator"}
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await attacker.connect(server.url, transports=[transport], headers=EVIL)
                await attacker.call("session.create", request)
        finally:
            if attacker.sio.connected:
                await attacker.close()
            if attacker.sio.eio.http is not None:  # a refused client leaves it open
                await attacker.sio.eio.http.close()
        assert await server.pairgate.service.find(key) is None


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]"], ids=["ip", "name", "fqdn", "ipv6"]
)
async def test_loopback_names_are_served(sim_settings: Settings, host: str) -> None:
    async with running(sim_settings) as server:
        port = server.url.rsplit(":", 1)[1]
        headers = {"host": f"{host}:{port}", "origin": f"http://{host}:{port}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/healthz", headers=headers)).status_code == 200
        client = await Client().connect(server.url, headers=headers)
        try:
            ack = await client.call("session.join", {"key": "nobody"})
            assert ack["error"]["code"] == "not_found"
        finally:
            await client.close()


async def test_allowed_hosts_setting_adds_names(sim_settings: Settings) -> None:
    settings = sim_settings.model_copy(update={"allowed_hosts": ("pairgate.example",)})
    async with running(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            ok = await http.get("/healthz", headers={"host": "pairgate.example"})
            assert ok.status_code == 200
            assert (await http.get("/healthz", headers=EVIL)).status_code == 400
            local = await http.get("/healthz")  # 127.0.0.1: still served
            assert local.status_code == 200


def test_the_host_policy_by_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    loopback = HostPolicy.for_bind("127.0.0.1")
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LocalHost."):
        assert loopback.allows(normalize(host)), host
    for host in ("evil.example", "10.0.0.7:8000", socket.gethostname(), "localhost.evil.example"):
        assert not loopback.allows(normalize(host)), host
    # Bound beyond loopback: IP literals (never rebindable) and this machine's name too.
    everywhere = HostPolicy.for_bind("0.0.0.0")
    for host in ("10.0.0.7:8000", "[fe80::1]:80", socket.gethostname(), "localhost"):
        assert everywhere.allows(normalize(host)), host
    assert not everywhere.allows("evil.example")

    monkeypatch.setenv("PAIRGATE_ALLOWED_HOSTS", "pairgate.example, *.corp.example")
    listed = Settings().allowed_hosts
    assert listed == ("pairgate.example", "*.corp.example")
    configured = HostPolicy.for_bind("0.0.0.0", listed)
    for host in ("pairgate.example:443", "a.corp.example", "PAIRGATE.EXAMPLE."):
        assert configured.allows(normalize(host)), host
    for host in ("corp.example", "evil.example", "pairgate.example.evil.example"):
        assert not configured.allows(normalize(host)), host
    assert HostPolicy.for_bind("127.0.0.1", ["*"]).allows("evil.example")


def test_the_log_filter_takes_secrets_out_of_every_part_of_a_record() -> None:
    redact = RedactSecrets([SECRET])
    formatter = JsonFormatter()

    def line(message: str, *args: object, **extra: object) -> str:
        record = logging.LogRecord("pairgate.x", logging.ERROR, __file__, 1, message, args, None)
        record.__dict__.update(extra)
        try:
            raise ValueError(f"postgresql://u:{GUESS}@db/x")
        except ValueError:
            record.exc_info = sys.exc_info()
        assert redact.filter(record)
        return formatter.format(record)

    lines = [
        line("Authorization: Bearer %s for %s", GUESS, "phone1"),
        line("got %s", {"token": GUESS}),
        line("plain " + SECRET),
        line("extra", auth={"token": GUESS}),
        line("GET /x?api_key=%s&key=phone1", GUESS),
    ]
    for text in lines:
        assert SECRET not in text and GUESS not in text, text
        assert REDACTED in text
    assert "key=phone1" in lines[-1]  # a device key is no secret
