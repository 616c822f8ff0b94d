"""Attacks on the transport, against a real server on loopback (issue 19).

Clients act from distinct addresses by binding their sockets to 127.0.0.2..9; the server
listens on 127.0.0.1 and sees each peer's real address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from entrypoints.settings import Settings
from tests.helpers import Client, Server, pair, running, unique_key

TEXT = {"content-type": "text/plain;charset=UTF-8"}


def open_server(tmp_path: Path, **overrides: Any) -> Settings:
    """Tokens off: every client is the one identity, told apart only by its address.
    (No identity-wide request limit, so that calm clients share no allowance with the
    flooder: what is tested here is the address.)"""
    options: dict[str, Any] = {
        "rate_limit_connection": "10/second",
        "rate_limit_identity": "",
    }
    return Settings(
        simulate=True,
        sim_qr_timeouts=(30.0, 30.0),  # no rotation between showing a code and its scan
        data_dir=tmp_path / "data",
        **(options | overrides),
    )


@contextlib.asynccontextmanager
async def client_from(
    address: str, url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """A connected Socket.IO client whose connection comes from `address`."""
    async with session_from(address) as http:
        client = Client(socketio.AsyncClient(http_session=http, reconnection=False))
        await client.connect(url, headers=headers or {})
        try:
            yield client
        finally:
            await client.close()


@contextlib.asynccontextmanager
async def session_from(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


async def refusal(url: str, address: str, headers: dict[str, str] | None = None) -> Any:
    """The connect_error message a client from `address` gets, or None if it connects."""
    async with session_from(address) as http:
        client = Client(socketio.AsyncClient(http_session=http, reconnection=False))
        refusals: list[Any] = []
        client.sio.on("connect_error", refusals.append)
        try:
            await client.connect(url, headers=headers or {})
        except socketio.exceptions.ConnectionError:
            assert refusals, "refused without a connect_error"
            return refusals[0]["message"]
        await client.close()
        return None


async def pair_from(address: str, server: Server) -> None:
    """A calm client from `address` links a device."""
    async with client_from(address, server.url) as calm:
        await pair(server, calm, unique_key())


async def flood_until_cut_off(client: Client) -> None:
    """Send requests as fast as possible, ignoring every `rate_limited`, until the server
    hangs up."""
    cut = asyncio.Event()
    client.sio.on("disconnect", lambda *_: cut.set())

    async def flood() -> None:
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            while not cut.is_set():
                await client.sio.emit("session.join", {"key": "nobody"})
                await asyncio.sleep(0)

    flooding = asyncio.create_task(flood())
    try:
        await asyncio.wait_for(cut.wait(), 15)
    finally:
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)


# -- 1. a ban by address bans only that address ------------------------------------------


async def test_a_banned_flooder_keeps_out_only_its_own_address(tmp_path: Path) -> None:
    async with running(open_server(tmp_path)) as server:
        async with client_from("127.0.0.2", server.url) as flooder:
            await flood_until_cut_off(flooder)
        assert await refusal(server.url, "127.0.0.2") == "rate_limited"
        for address in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            async with client_from(address, server.url) as calm:
                await pair(server, calm, unique_key())
            # ...while the flooder's reconnects are still refused.
            assert await refusal(server.url, "127.0.0.2") == "rate_limited"


@pytest.mark.parametrize("flooder", ["127.0.0.1", "127.0.0.2"])
async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, flooder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No proxy is trusted by default: not loopback (uvicorn's own default), and not
    whatever uvicorn's FORWARDED_ALLOW_IPS says."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    async with running(open_server(tmp_path)) as server:
        framed = {"X-Forwarded-For": "127.0.0.3"}
        async with client_from(flooder, server.url, headers=framed) as client:
            await flood_until_cut_off(client)
        # It cannot escape its ban by claiming another address...
        escape = {"X-Forwarded-For": "127.0.0.9"}
        assert await refusal(server.url, flooder, headers=escape) == "rate_limited"
        assert await refusal(server.url, flooder) == "rate_limited"
        # ...nor did it get the address it named banned.
        await pair_from("127.0.0.3", server)


async def test_x_forwarded_for_from_a_trusted_proxy_is_honoured(tmp_path: Path) -> None:
    proxy = "127.0.0.6"
    async with running(open_server(tmp_path, trusted_proxies=proxy)) as server:
        flooder, neighbour = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "203.0.113.8"}
        async with client_from(proxy, server.url, headers=flooder) as client:
            await flood_until_cut_off(client)
        assert await refusal(server.url, proxy, headers=flooder) == "rate_limited"
        # The proxy's other clients are not banned with it.
        async with client_from(proxy, server.url, headers=neighbour) as calm:
            await pair(server, calm, unique_key())
        # A direct client is not the proxy: X-Forwarded-For from it is still ignored.
        assert await refusal(server.url, "127.0.0.2", headers=flooder) is None


async def test_an_ipv6_flooder_cannot_escape_its_ban_within_its_own_64(tmp_path: Path) -> None:
    """An IPv6 host is given a whole /64: counted address by address, a flooder behind a
    trusted proxy would have 2^64 fresh addresses to come back from. Limits count a /64
    as one client (and an IPv4-mapped address as its IPv4 one)."""
    proxy = "127.0.0.6"
    async with running(open_server(tmp_path, trusted_proxies=proxy)) as server:
        flooder = {"X-Forwarded-For": "2001:db8:1:2::7"}
        async with client_from(proxy, server.url, headers=flooder) as client:
            await flood_until_cut_off(client)
        for escape in ("2001:db8:1:2::8", "2001:db8:1:2:ffff:ffff:ffff:ffff"):
            headers = {"X-Forwarded-For": escape}
            assert await refusal(server.url, proxy, headers=headers) == "rate_limited", escape
        # Another /64 is another client.
        async with client_from(
            proxy, server.url, headers={"X-Forwarded-For": "2001:db8:1:3::7"}
        ) as calm:
            await pair(server, calm, unique_key())

        mapped = {"X-Forwarded-For": "203.0.113.9"}
        async with client_from(proxy, server.url, headers=mapped) as client:
            await flood_until_cut_off(client)
        as_ipv6 = {"X-Forwarded-For": "::ffff:203.0.113.9"}
        assert await refusal(server.url, proxy, headers=as_ipv6) == "rate_limited"


async def test_the_http_api_counts_an_ipv6_client_by_its_64(tmp_path: Path) -> None:
    proxy = "127.0.0.6"
    # Per hour: the sliding window counter weighs the last window's count down as the next
    # one goes by, so a minute's boundary just after the 10th request let the 13th through.
    settings = open_server(tmp_path, trusted_proxies=proxy, rate_limit_http="10/hour")
    async with running(settings) as server:
        transport = httpx.AsyncHTTPTransport(local_address=proxy)
        async with httpx.AsyncClient(base_url=server.url, transport=transport) as http:

            async def status(client: str) -> int:
                reply = await http.get("/api/sessions", headers={"X-Forwarded-For": client})
                return reply.status_code

            statuses = [await status("2001:db8:5:6::1") for _ in range(12)]
            assert statuses[0] == 200 and statuses[-1] == 429
            assert await status("2001:db8:5:6:abcd::2") == 429  # the same /64
            assert await status("2001:db8:5:7::1") == 200  # another one


# -- 2. binary attachments are bounded before the event is dispatched ---------------------

# A raw Engine.IO v4 / Socket.IO v5 client: connects to "/", announces a binary event with
# `frames` attachments, then sends them, `size` bytes each, until the server hangs up.
ATTACHMENTS = """
import asyncio, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

async def main():
    url, frames, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sent, closed = 0, False
    async with connect(url, local_addr=("127.0.0.2", 0), max_size=None) as ws:
        assert (await ws.recv()).startswith("0")  # Engine.IO open
        await ws.send("40")  # Socket.IO CONNECT to "/"
        assert (await ws.recv()).startswith("40")
        await ws.send("45" + str(frames) + '-["x",{"_placeholder":true,"num":0}]')
        chunk = bytes(size)
        try:
            for _ in range(frames):
                await ws.send(chunk)
                sent += 1
            while True:  # what the server said before hanging up, then its close
                await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed:
            closed = True
        except TimeoutError:
            pass
    print(sent, closed, flush=True)

asyncio.run(main())
"""


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_binary_attachments_cannot_grow_memory(tmp_path: Path) -> None:
    frames, size = 6000, 65_000  # each frame under PAIRGATE_MAX_PAYLOAD_BYTES
    async with running(open_server(tmp_path)) as server:
        await pair_from("127.0.0.3", server)  # warm: imports, QR rendering, decoding
        baseline, peak = rss_bytes(), 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_bytes())
                await asyncio.sleep(0.02)

        sampling = asyncio.create_task(sample())
        url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ATTACHMENTS,
            url,
            str(frames),
            str(size),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            await pair_from("127.0.0.3", server)  # meanwhile
            out, _ = await asyncio.wait_for(attacker.communicate(), 60)
        finally:
            if attacker.returncode is None:
                attacker.kill()
                await attacker.communicate()
        peak = max(peak, rss_bytes())
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        sent, closed = out.split()
        grown = (peak - baseline) / 2**20
        print(f"\nbinary attachments: RSS +{grown:.1f} MB, {sent.decode()} frames sent")
        assert grown < 20, f"RSS grew {grown:.0f} MB over {sent.decode()} frames"
        assert closed == b"True", "the server kept the offender's connection open"
        await pair_from("127.0.0.3", server)


# -- 12. Engine.IO sessions without a Socket.IO connection --------------------------------


def engineio_url(server: Server, transport: str) -> str:
    url = f"{server.url}/socket.io/?EIO=4&transport={transport}"
    return url.replace("http", "ws") if transport == "websocket" else url


HANDSHAKES = 20  # per address


async def test_polling_handshakes_are_bounded_per_address(tmp_path: Path) -> None:
    bound = HANDSHAKES
    async with running(open_server(tmp_path, max_handshakes_per_address=bound)) as server:
        statuses: list[int] = []
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:

            async def handshake_forever() -> None:
                while True:
                    statuses.append((await http.get(engineio_url(server, "polling"))).status_code)

            flooding = asyncio.create_task(handshake_forever())
            try:
                while len(statuses) < 100:
                    await asyncio.sleep(0.01)
                async with client_from("127.0.0.3", server.url) as calm:
                    await pair(server, calm, unique_key())
                    held = len(server.pairgate.sio.eio.sockets)
            finally:
                flooding.cancel()
                await asyncio.gather(flooding, return_exceptions=True)
        assert set(statuses) <= {200, 401}, set(statuses)  # 401: Engine.IO's only refusal
        assert statuses.count(200) <= bound
        assert held <= bound + 1  # the flooder's, and the calm client's


async def polling_session(http: httpx.AsyncClient, server: Server) -> str:
    """An Engine.IO polling session's URL (handshake made, Socket.IO not connected)."""
    opened = await http.get(engineio_url(server, "polling"))
    assert opened.status_code == 200, opened.text
    sid = opened.text[opened.text.index("{") :]
    return f"{engineio_url(server, 'polling')}&sid={json.loads(sid)['sid']}"


async def test_a_polling_post_of_a_packet_engineio_does_not_take_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """A NOOP (or any packet type a client never sends) made python-engineio disconnect
    the session and wait, inside the POST, for the client's next poll to fetch the close:
    a client that never polls held the request, its task and the session for good."""
    async with running(open_server(tmp_path)) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            url = await polling_session(http, server)
            posted = await http.post(url, content=b"6", headers=TEXT)
            assert posted.status_code == 400, posted.text
            assert (await http.get(url)).status_code == 400  # the session is gone
        assert server.pairgate.sio.eio.sockets == {}


async def test_a_polling_post_to_a_session_its_client_closed_is_a_400(tmp_path: Path) -> None:
    """After a client's own close packet, a POST for its session raised KeyError in
    python-engineio: a 500 and a traceback in the log."""
    async with running(open_server(tmp_path)) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            url = await polling_session(http, server)
            assert (await http.post(url, content=b"1", headers=TEXT)).status_code == 200
            late = await http.post(url, content=b"40", headers=TEXT)
            assert late.status_code == 400, late.text
            assert (await http.post(url, content=b"40", headers=TEXT)).status_code == 400


MALFORMED = ["4z", "42[]", "42{}", "42[1,2]", "44", "45-[]", '42["session.create",']
MALFORMED.append('42["session.create",' + "[" * 5000 + "]" * 5000 + "]")  # too deep to parse


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("malformed", MALFORMED)
async def test_malformed_socketio_packets_hang_up_their_sender_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, malformed: str
) -> None:
    """Each malformed Socket.IO packet was an ERROR with a traceback ("message async
    handler error"), read before any limit, and the connection stayed open: a client
    could write the log as fast as it sent frames."""
    async with running(open_server(tmp_path)) as server:
        async with connect(engineio_url(server, "websocket")) as ws:
            await ws.recv()  # Engine.IO's open packet
            await ws.send("40")
            assert (await ws.recv()).startswith("40")
            with pytest.raises(ConnectionClosed):
                for _ in range(100):
                    await ws.send(malformed)
                while True:
                    assert await asyncio.wait_for(ws.recv(), 5) == "1"  # Engine.IO's close
        async with client_from("127.0.0.3", server.url) as calm:  # the server serves on
            await pair(server, calm, unique_key())
    assert tracebacks(caplog) == []
    said = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(said) == 1, said  # one line for the client, not one per packet


async def test_malformed_polling_payloads_are_a_400_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(open_server(tmp_path)) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            for body in (b"4\xff", b"\x1e", b"x"):  # bad UTF-8, an empty packet, no type
                url = await polling_session(http, server)
                posted = await http.post(url, content=body, headers=TEXT)
                assert posted.status_code == 400, (body, posted.text)
                assert (await http.get(url)).status_code == 400  # the session is gone
            # Engine.IO messages that are no Socket.IO packet: an empty binary one, an event
            # that is not a list. The POST took them; the session is closed after it.
            for body in (b"b!!!!", b"42[]"):
                url = await polling_session(http, server)
                assert (await http.post(url, content=b"40", headers=TEXT)).status_code == 200
                assert (await http.get(url)).text.startswith("40")
                assert (await http.post(url, content=body, headers=TEXT)).status_code == 200
                polled = await http.get(url)  # Engine.IO's close, or the session already gone
                assert polled.text == "1" or polled.status_code == 400, polled.text
    assert tracebacks(caplog) == []


async def test_a_connection_cycling_connect_and_disconnect_is_hung_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Socket.IO CONNECT and DISCONNECT packets are not requests the limits count: one
    websocket sent 3,000 `40`/`41` pairs in 2.4 s, each answered (0.28 s of CPU), with
    nothing to stop it. A client connects a namespace once, or a few times: more, and its
    transport is hung up (a new one costs it a handshake, which is bounded per address)."""
    async with running(open_server(tmp_path)) as server:
        async with connect(engineio_url(server, "websocket")) as ws:
            await ws.recv()  # Engine.IO's open packet
            answered = 0
            with pytest.raises(ConnectionClosed):
                for _ in range(100):
                    await ws.send("40")
                    await ws.send("41")
                    while (await asyncio.wait_for(ws.recv(), 5)).startswith("40"):
                        answered += 1
                        break
        assert answered <= 10, answered
        async with client_from("127.0.0.3", server.url) as calm:  # the server serves on
            await pair(server, calm, unique_key())
    said = [r.getMessage() for r in caplog.records if "connects" in r.getMessage()]
    assert len(said) == 1, said


async def test_websocket_handshakes_are_bounded_per_address(tmp_path: Path) -> None:
    bound = HANDSHAKES
    async with running(open_server(tmp_path, max_handshakes_per_address=bound)) as server:
        opened: list[ClientConnection] = []
        refused = 0
        try:
            for _ in range(bound + 20):
                try:
                    ws = await connect(
                        engineio_url(server, "websocket"), local_addr=("127.0.0.2", 0)
                    )
                except InvalidStatus:
                    refused += 1
                    continue
                opened.append(ws)
                with contextlib.suppress(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)  # the open packet, or a close
            open_now = sum(1 for ws in opened if ws.close_code is None)
            await pair_from("127.0.0.3", server)
        finally:
            for ws in opened:
                await ws.close()
        assert open_now <= bound, (open_now, refused)


async def test_a_websocket_that_never_sends_connect_is_closed(tmp_path: Path) -> None:
    async with running(open_server(tmp_path, connect_timeout=1.0)) as server:
        async with connect(engineio_url(server, "websocket"), local_addr=("127.0.0.2", 0)) as ws:
            assert (await ws.recv()).startswith("0")  # Engine.IO open, then nothing more
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 6)  # a ping comes only after 25 s
            assert time.monotonic() - started < 1.0 + 3


# -- 9. slow headers (under a low open-files limit: tests/e2e/test_attack_slow_headers.py) --


async def open_from(address: str, server: Server) -> tuple[asyncio.StreamReader, Any]:
    port = int(server.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (reading what it sends)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    return True


async def test_a_request_whose_headers_never_end_is_closed(tmp_path: Path) -> None:
    async with running(open_server(tmp_path, header_timeout=1.0)) as server:
        reader, writer = await open_from("127.0.0.2", server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert await closed_within(reader, 1.0 + 3)
        writer.close()
        # The same after a first request on a kept-alive connection.
        reader, writer = await open_from("127.0.0.2", server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        assert await closed_within(reader, 1.0 + 3)
        writer.close()


async def test_a_request_whose_body_trickles_in_is_closed(tmp_path: Path) -> None:
    """Complete headers, then a body a byte at a time: the connection (and the task
    waiting for the body) is held no longer than slow headers would be."""
    async with running(open_server(tmp_path, header_timeout=1.0)) as server:
        reader, writer = await open_from("127.0.0.2", server)
        writer.write(
            b"POST /api/simulator/devices/slow/scan HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )

        async def trickle() -> None:
            with contextlib.suppress(OSError):
                for _ in range(20):
                    await asyncio.sleep(0.3)
                    writer.write(b" ")
                    await writer.drain()

        trickling = asyncio.create_task(trickle())
        try:
            assert await closed_within(reader, 1.0 + 3)
        finally:
            trickling.cancel()
            writer.close()
        # A body that arrives in time is served as always.
        async with httpx.AsyncClient(base_url=server.url) as http:
            reply = await http.post("/api/simulator/devices/slow/scan", json={"code": "x"})
            assert reply.status_code in (404, 409)


async def test_connections_per_address_are_capped_except_for_trusted_proxies(
    tmp_path: Path,
) -> None:
    settings = open_server(tmp_path, max_connections_per_address=5, trusted_proxies="127.0.0.6")
    async with running(settings) as server:
        held = [await open_from("127.0.0.2", server) for _ in range(8)]
        proxied = [await open_from("127.0.0.6", server) for _ in range(8)]
        try:
            cut = [await closed_within(reader, 0.5) for reader, _ in held]
            assert cut.count(True) == 3, cut
            assert not any([await closed_within(reader, 0.1) for reader, _ in proxied])
            await pair_from("127.0.0.3", server)
        finally:
            for _, writer in held + proxied:
                writer.close()


async def test_connections_are_capped_in_all_whatever_their_addresses(tmp_path: Path) -> None:
    settings = open_server(tmp_path, max_connections=6, trusted_proxies="127.0.0.6")
    async with running(settings) as server:
        held = [await open_from(f"127.0.2.{n}", server) for n in range(1, 5)]
        held += [await open_from("127.0.0.6", server) for _ in range(4)]  # proxies count too
        try:
            cut = [await closed_within(reader, 0.5) for reader, _ in held]
            assert cut == [False] * 6 + [True] * 2, cut
            held[0][1].close()  # one goes: there is room for one more
            await asyncio.sleep(0.2)
            reader, writer = await open_from("127.0.2.9", server)
            held.append((reader, writer))
            assert not await closed_within(reader, 0.5)
        finally:
            for _, writer in held:
                writer.close()


def test_trusted_proxies_are_addresses_or_networks() -> None:
    proxies = Settings(trusted_proxies="10.0.0.7, 172.28.0.0/24,::1").trusted_proxies
    assert proxies == ("10.0.0.7", "172.28.0.0/24", "::1")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        Settings(trusted_proxies="*")  # would let every peer name any address
    assert Settings().trusted_proxies == ()
