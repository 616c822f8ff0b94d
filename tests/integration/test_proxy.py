"""A proxy per session: validated, dialled through by each engine, a secret at rest.

A real local proxy (tests/proxy_server.py: SOCKS5 and HTTP CONNECT) records each dial:
offline, WhatsApp cannot be reached, but the engine's connection attempt must reach the
proxy, naming WhatsApp's host and carrying the URL's credentials. The credentials never
show in history, logs or the store's files.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
from pathlib import Path

import pytest

from entrypoints.settings import Settings
from tests.conftest import TEST_CIPHER_KEY
from tests.helpers import Client, Server, clients, decode_qr, pair, running, unique_key
from tests.proxy_server import local_proxy

SECRET = "pr0xy-s3cret"
WHATSAPP_HOST = "web.whatsapp.com"
# A network of documentation addresses, allowed in these tests: no proxy there answers.
PROXIES = ("203.0.113.0/24",)


def files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


async def create(client: Client, key: str, engine: str = "simulator", **fields: object) -> dict:
    payload = {"key": key, "name": "Phone", "engine": engine, **fields}
    return await client.call("session.create", payload)


async def history(client: Client, key: str) -> list[dict]:
    reply = await client.call("session.history", {"key": key})
    assert reply["ok"], reply
    return reply["events"]


async def test_a_pairing_keeps_its_proxy_secret_and_a_resumed_device_keeps_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        simulate=True, data_dir=tmp_path / "data", cipher_key=TEST_CIPHER_KEY, log_level="debug",
        proxy_allowed_networks=PROXIES,
    )  # fmt: skip
    url = f"socks5://alice:{SECRET}@203.0.113.10:1080"
    key = unique_key()
    async with running(settings) as server, clients(server.url) as [client]:
        ack = await create(client, key, proxy=url)
        assert ack["ok"] is True, ack
        assert SECRET not in str(ack)
        assert server.pairgate.simulator.proxy_of(key) == url
        await scan(server, client, key)
        records = await history(client, key)
        assert records[0]["type"] == "SessionCreated"
        assert records[0]["proxy"] == "socks5://203.0.113.10:1080"
        assert SECRET not in str(records) and "alice" not in str(records)
    # The server restarts: the paired device is resumed through the proxy it was paired with.
    async with running(settings) as server:
        assert key in server.pairgate.service.running_keys
        assert server.pairgate.simulator.proxy_of(key) == url
    assert files_containing(tmp_path, SECRET) == []
    assert SECRET not in caplog.text


async def scan(server: Server, client: Client, key: str) -> None:
    """The simulated phone scans the code on show; the device becomes ready."""
    code = decode_qr((await client.wait_for("session.qr"))["qr"])
    scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
    assert scanned.is_success, scanned.text
    await client.wait_for("session.ready")


async def test_the_default_proxy_serves_a_pairing_that_names_none(tmp_path: Path) -> None:
    default = f"http://bob:{SECRET}@10.0.0.7:3128"
    settings = Settings(
        simulate=True,
        data_dir=tmp_path / "data",
        proxy=default,
        proxy_allowed_networks=("10.0.0.8",),
    )
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    async with running(settings) as server, clients(server.url) as [client]:
        own, defaulted = unique_key(), unique_key()
        assert (await create(client, own, proxy="https://10.0.0.8:443"))["ok"]
        assert (await create(client, defaulted))["ok"]
        assert server.pairgate.simulator.proxy_of(own) == "https://10.0.0.8:443"
        assert server.pairgate.simulator.proxy_of(defaulted) == default
        assert (await history(client, defaulted))[0]["proxy"] == "http://10.0.0.7:3128"
        # Without any proxy, history shows none, as before proxies existed.
    async with running(Settings(simulate=True, data_dir=tmp_path / "bare")) as server:
        async with clients(server.url) as [client]:
            direct = unique_key()
            await pair(server, client, direct)
            assert "proxy" not in (await history(client, direct))[0]


BAD_PROXIES = [
    ("ftp://203.0.113.10:21", "scheme is one of http, https, socks5"),
    ("socks5://203.0.113.10", "gives its port"),
    (f"socks5://alice:{SECRET}@:1080", "names a host"),
    (f"http://alice:{SECRET}@203.0.113.10:99999", "port must be a number"),
    (f"socks5://alice:{SECRET}@203.0.113.10:1080/path", "no path, query or fragment"),
    (f"socks5://:{SECRET}@203.0.113.10:1080", "password comes with a user name"),
    (f"socks5://203.0.113.10:1080\r\nX: {SECRET}", "no spaces or control characters"),
    (f"http://{SECRET}" + "h" * 5000 + ":80", "at most 2048 characters"),
    (1080, "valid string"),
]


async def test_a_bad_proxy_is_refused_as_invalid_payload_without_echoing_it(
    tmp_path: Path,
) -> None:
    settings = Settings(simulate=True, data_dir=tmp_path / "data")
    async with running(settings) as server, clients(server.url) as [client]:
        for count, (proxy, why) in enumerate(BAD_PROXIES, start=1):
            key = unique_key()
            ack = await create(client, key, proxy=proxy)
            assert ack["ok"] is False, proxy
            assert ack["error"]["code"] == "invalid_payload"
            assert why in ack["error"]["message"], (proxy, ack)
            assert SECRET not in str(ack)
            error = await client.wait_for("session.error", 2 * count - 1)  # then join's
            assert error["code"] == "invalid_payload" and SECRET not in str(error)
            missing = await client.call("session.join", {"key": key})
            assert missing["error"]["code"] == "not_found"  # nothing was created


# -- each real engine dials WhatsApp through the proxy ----------------------------------


def engine_available(engine: str) -> bool:
    if engine == "neonize":
        return importlib.util.find_spec("neonize") is not None
    return shutil.which("node") is not None


@pytest.mark.parametrize("scheme", ["socks5", "http"])
@pytest.mark.parametrize("engine", ["neonize", "baileys"])
async def test_each_engine_dials_whatsapp_through_the_proxy(
    tmp_path: Path, engine: str, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    if not engine_available(engine):
        pytest.skip(f"the {engine} engine is not installed here")
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        simulate=False, data_dir=tmp_path / "data", log_level="debug",
        proxy_allowed_networks=("127.0.0.1/32",),  # the local proxy
    )  # fmt: skip
    async with local_proxy() as proxy, running(settings) as server:
        engine_object = server.pairgate.engines.resolve(engine)
        try:
            async with clients(server.url) as [client]:
                key = unique_key()
                ack = await create(client, key, engine, proxy=proxy.url(scheme, "alice", SECRET))
                assert ack["ok"] is True, ack
                dial = await proxy.wait_for_dial()
                assert (dial.kind, dial.host, dial.port) == (scheme, WHATSAPP_HOST, 443)
                assert (dial.user, dial.password) == ("alice", SECRET)
                lost = await client.wait_for("session.disconnected", timeout=15)
                assert lost == {"key": key, "reason": "connection lost"}
        finally:
            await server.stop()
            close = getattr(engine_object, "close", None)
            if engine == "baileys" and close is not None:
                await close()
    assert SECRET not in caplog.text


async def test_an_offline_baileys_device_is_logged_out_through_its_proxy(tmp_path: Path) -> None:
    """Unlinking a stopped device connects with its credentials just for that: through
    the proxy it was started with, never straight to WhatsApp."""
    if not engine_available("baileys"):
        pytest.skip("the baileys engine is not installed here")
    from adapters.credentials import CredentialVault
    from adapters.engines.baileys import BaileysEngine
    from adapters.engines.baileys.sidecar import SIDECAR_SCRIPT
    from tests.integration.test_baileys_engine import Reports

    vault, key = CredentialVault(tmp_path / "credentials"), "offline-device"
    sealed = SIDECAR_SCRIPT.with_name("sealed-auth-state.mjs").as_uri()
    write = f"import {{ useSealedAuthState as s }} from '{sealed}'; "
    write += "await (await s(process.argv[1])).saveCreds()"
    node = await asyncio.create_subprocess_exec(
        "node", "--input-type=module", "-e", write, str(vault.directory("baileys", key))
    )
    assert await node.wait() == 0  # a paired device's auth state, as the sidecar keeps it
    engine = BaileysEngine(vault, reconnect_delays=[60.0])
    async with local_proxy() as proxy:
        try:
            await engine.start(key, Reports(), proxy=proxy.url("socks5", "alice", SECRET))
            await proxy.wait_for_dial()  # resuming
            await engine.stop(key)
            proxy.dials.clear()
            await engine.logout(key)
            dial = await proxy.wait_for_dial(timeout=1)  # it was made before logout returned
        finally:
            await engine.close()
    assert (dial.host, dial.user, dial.password) == (WHATSAPP_HOST, "alice", SECRET)
    assert not vault.holds("baileys", key)


async def test_the_rest_create_takes_a_proxy_with_the_same_rules(tmp_path: Path) -> None:
    settings = Settings(simulate=True, data_dir=tmp_path / "data", proxy_allowed_networks=PROXIES)
    url = f"socks5://alice:{SECRET}@203.0.113.10:1080"
    async with running(settings) as server:
        key = unique_key()
        body = {"key": key, "name": "Phone", "engine": "baileys", "proxy": url}
        created = await server.post("/api/sessions", body)
        assert created.status_code == 201, created.text
        assert SECRET not in created.text
        assert server.pairgate.simulator.proxy_of(key) == url
        history = await server.get(f"/api/sessions/{key}/history")
        assert history.json()["events"][0]["proxy"] == "socks5://203.0.113.10:1080"
        assert SECRET not in history.text
        bad = await server.post("/api/sessions", body | {"key": unique_key(), "proxy": url + "/x"})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_payload" and SECRET not in bad.text


@pytest.mark.parametrize(
    "inside",
    [
        f"socks5://alice:{SECRET}@127.0.0.1:6379",  # a service on the server itself
        "http://localhost:3128",  # a name for it
        "socks5://10.1.2.3:22",  # the server's network
        "http://[::1]:8080",
        "socks5://169.254.169.254:80",  # a cloud's metadata service
    ],
)
async def test_a_pairing_s_proxy_inside_the_server_s_network_is_refused(
    tmp_path: Path, inside: str
) -> None:
    """The engine dials a pairing's proxy from the server: any client that may pair could
    have it open connections into the server's own network (a port scan; a first byte to
    a service that trusts its network)."""
    async with running(Settings(simulate=True, data_dir=tmp_path / "data")) as server:
        async with clients(server.url) as [client]:
            key = unique_key()
            ack = await create(client, key, proxy=inside)
            assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload", ack
            assert "PAIRGATE_PROXY_ALLOWED_NETWORKS" in ack["error"]["message"]
            assert SECRET not in str(ack)
            assert key not in server.pairgate.service.running_keys  # never started
            assert (await server.get(f"/api/sessions/{key}")).status_code == 404  # nor recorded


async def test_a_proxy_no_longer_allowed_is_not_dialed_at_a_resume(tmp_path: Path) -> None:
    """Checked at every dial, not only when the pairing was made (a name may resolve
    elsewhere later; the operator may narrow the networks)."""
    allowed = Settings(
        simulate=True, data_dir=tmp_path / "data", proxy_allowed_networks=("127.0.0.1/32",)
    )
    key = unique_key()
    async with running(allowed) as server, clients(server.url) as [client]:
        assert (await create(client, key, proxy="socks5://127.0.0.1:1080"))["ok"]
        await scan(server, client, key)
    narrowed = allowed.model_copy(update={"proxy_allowed_networks": ()})
    async with running(narrowed) as server:
        assert key not in server.pairgate.service.running_keys
    async with running(allowed) as server:  # the control: allowed again, it is resumed
        assert key in server.pairgate.service.running_keys
