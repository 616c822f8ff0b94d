"""A local proxy for tests: SOCKS5 (RFC 1928, user/password RFC 1929) and HTTP CONNECT
on one port. It records who asked to dial where, then refuses: offline, WhatsApp cannot
be reached anyway, and what matters is that the engine's dial came through here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dial:
    kind: str  # "socks5" or "http"
    host: str
    port: int
    user: str | None
    password: str | None


@dataclass
class LocalProxy:
    port: int = 0
    dials: list[Dial] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, scheme: str, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user}:{password}@" if user else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    async def wait_for_dial(self, timeout: float = 20) -> Dial:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self.dials), timeout)
        return self.dials[0]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            first = await reader.readexactly(1)
            dial = await (
                self._socks5(reader, writer)
                if first == b"\x05"
                else self._http(first, reader, writer)
            )
            async with self._arrived:
                self.dials.append(dial)
                self._arrived.notify_all()
        writer.close()

    async def _socks5(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Dial:
        methods = await reader.readexactly((await reader.readexactly(1))[0])
        user = password = None
        if 2 in methods:  # user name and password
            writer.write(b"\x05\x02")
            await reader.readexactly(1)
            user = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            password = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            writer.write(b"\x01\x00")
        else:
            writer.write(b"\x05\x00")
        _, _, _, kind = await reader.readexactly(4)
        if kind == 3:  # a host name
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            raw = await reader.readexactly(4 if kind == 1 else 16)
            host = ".".join(map(str, raw)) if kind == 1 else raw.hex()
        port = int.from_bytes(await reader.readexactly(2), "big")
        writer.write(b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00")  # connection refused
        await writer.drain()
        return Dial("socks5", host, port, user, password)

    async def _http(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Dial:
        head = (first + await reader.readuntil(b"\r\n\r\n")).decode()
        request, *headers = head.split("\r\n")
        method, target, _ = request.split(" ")
        assert method == "CONNECT", request
        host, _, port = target.rpartition(":")
        user = password = None
        for line in headers:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                decoded = base64.b64decode(value.strip().split(" ", 1)[1]).decode()
                user, _, password = decoded.partition(":")
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return Dial("http", host, int(port), user, password)


@contextlib.asynccontextmanager
async def local_proxy() -> AsyncIterator[LocalProxy]:
    proxy = LocalProxy()
    listener = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.port = listener.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        listener.close()
        await listener.wait_closed()
