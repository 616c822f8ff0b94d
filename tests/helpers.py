"""Real parts for tests: a uvicorn server on a free port and recording Socket.IO clients."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import socketio
import uvicorn
import zxingcpp
from PIL import Image

from adapters.credentials import CredentialVault
from adapters.engines.simulated_keys import FILE as SIMULATED_KEYS
from adapters.engines.simulated_keys import SimulatedKeys
from entrypoints.asgi import create_app, pairgate_of
from entrypoints.server import PairgateServer, uvicorn_config
from entrypoints.settings import Settings

POSTGRES_URL = os.environ.get("PAIRGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("PAIRGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def simulated_keys(settings: Settings) -> int:
    """How many devices the simulator of a server with these settings holds keys for."""
    vault = CredentialVault(settings.credentials_path, settings.cipher)
    if not (vault.root / "simulator" / SIMULATED_KEYS).exists():
        return 0
    keys = SimulatedKeys(vault, "simulator")
    try:
        return keys.count()
    finally:
        keys.close()


def web_app(app: Any) -> Any:
    """The Starlette app of an app made by create_app, under its guards and Socket.IO's."""
    layer = app
    while not hasattr(layer, "other_asgi_app"):  # the guards around Socket.IO's app
        layer = layer.app
    return layer.other_asgi_app


def listening(port: int) -> bool:
    """Whether a local service accepts connections on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def rss_mb(pid: int | str = "self") -> float:
    """A process's resident memory now (not its peak), in MiB: this one's by default."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def postgres_available() -> bool:
    return listening(5432)


def redis_available() -> bool:
    return listening(6379)


@contextmanager
def postgres_schema(prefix: str = "test") -> Iterator[str]:
    """A PostgreSQL schema of its own for one test (its name), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{name}" CASCADE')


Grant = tuple[str, str, datetime, datetime | None]  # key, holder, acquired, released (None: held)


def lease_log(schema: str) -> list[Grant]:
    """A deployment's lease log (pairgate_lease_log), by key, then by time of grant (with
    a cipher key, each key blinded: the same key, the same value, to compare grants by)."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        rows = connection.execute(
            f'SELECT key, holder, acquired_at, released_at FROM "{schema}".pairgate_lease_log '
            "ORDER BY key, acquired_at, id"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def older_lease_log(schema: str, grants: list[tuple[str, str, bool]]) -> str:
    """A lease log as versions before `sealed_key` left it (keys in plain text), with
    these grants (key, holder, released); its qualified name."""
    import psycopg

    table = f'"{schema}".pairgate_lease_log'
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            f"CREATE TABLE {table} (id bigserial PRIMARY KEY, key text NOT NULL, "
            "holder text NOT NULL, acquired_at timestamptz NOT NULL DEFAULT now(), "
            "released_at timestamptz)"
        )
        for key, holder, released in grants:
            admin.execute(
                f"INSERT INTO {table} (key, holder, released_at) "
                "VALUES (%s, %s, CASE WHEN %s THEN now() END)",
                (key, holder, released),
            )
    return table


def overlapping_grants(grants: list[Grant]) -> list[tuple[Grant, Grant]]:
    """Each pair of successive grants of a key (in `lease_log`'s order) where the later one
    began before the earlier one ended: a key run by two holders at once."""
    return [
        (earlier, later)
        for earlier, later in zip(grants, grants[1:], strict=False)
        if earlier[0] == later[0] and (earlier[3] is None or earlier[3] > later[2])
    ]


@dataclass
class Server:
    url: str
    app: Any
    _server: uvicorn.Server
    _task: asyncio.Task[None]

    @property
    def pairgate(self) -> Any:
        return pairgate_of(self.app)

    async def stop(self) -> None:
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 15)

    async def post(self, path: str, json: Any = None, token: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else None
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            return await http.post(path, json=json, headers=headers)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            return await http.get(path)


@contextmanager
def tasks_shown_before_timeout(timeout: float, ahead: float = 10) -> Iterator[None]:
    """pytest-timeout's dump shows each thread's stack, not what the event loop's tasks
    wait for (a test stuck on an await leaves the loop idle in `select`): print every
    task's stack to stderr `ahead` seconds before the test's timeout, if it comes."""
    loop = asyncio.get_running_loop()

    def show() -> None:
        print(f"--- asyncio tasks, {ahead:g} s before the timeout ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            print(f"{task.get_name()}:", file=sys.stderr)
            awaited: Any = task.get_coro()
            while awaited is not None:  # down the chain of awaits, to what it waits on
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:
                    print(f"    waits on {awaited!r}"[:300], file=sys.stderr)
                    break
                code = frame.f_code
                print(f"    {code.co_filename}:{frame.f_lineno} {code.co_name}", file=sys.stderr)
                awaited = getattr(awaited, "cr_await", None) or getattr(
                    awaited, "gi_yieldfrom", None
                )

    timer = loop.call_later(timeout - ahead, show) if timeout > ahead else None
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


async def start_server(settings: Settings, *, recovered: bool = True) -> Server:
    app = create_app(settings)
    config = uvicorn_config(
        app, settings, host="127.0.0.1", port=0, log_level="warning", lifespan="on"
    )
    server = PairgateServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    # Recovery runs in the background (the server answers at once): tests start from a
    # settled store, every device the last run left resumed.
    if recovered:
        await app.pairgate.recovered()
    port = server.servers[0].sockets[0].getsockname()[1]
    return Server(f"http://127.0.0.1:{port}", app, server, task)


T = TypeVar("T")


@dataclass
class ThreadedServer:
    """A server on an event loop of its own, in a thread: for tests that drive it from
    synchronous code (hypothesis, schemathesis)."""

    loop: asyncio.AbstractEventLoop
    server: Server

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)


@contextmanager
def running_in_thread(settings: Settings) -> Iterator[ThreadedServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="threaded-server", daemon=True)
    thread.start()
    threaded = ThreadedServer(
        loop, asyncio.run_coroutine_threadsafe(start_server(settings), loop).result(30)
    )
    try:
        yield threaded
    finally:
        threaded.run(threaded.server.stop())
        threaded.run(_cancel_the_rest())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _cancel_the_rest() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@asynccontextmanager
async def running(settings: Settings, *, recovered: bool = True) -> AsyncIterator[Server]:
    server = await start_server(settings, recovered=recovered)
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Client:
    """A python-socketio client that records every event it receives, in order."""

    sio: socketio.AsyncClient = field(default_factory=socketio.AsyncClient)
    events: list[tuple[str, Any]] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        async def record(event: str, data: Any = None) -> None:
            async with self._arrived:
                self.events.append((event, data))
                self._arrived.notify_all()

        self.sio.on("*", record)

    async def connect(self, url: str, transports: list[str] | None = None, **kwargs: Any) -> Client:
        transports = transports or ["websocket"]
        await self.sio.connect(url, transports=transports, wait_timeout=10, **kwargs)
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def wait_for(self, event: str, count: int = 1, timeout: float = 10) -> Any:
        """The payload of the `count`-th `event` received, waiting for it if needed."""

        def arrived() -> list[Any]:
            return [data for name, data in self.events if name == event]

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(arrived()) >= count), timeout)
        return arrived()[count - 1]

    async def wait_until(self, event: str, key: str, timeout: float = 10) -> Any:
        """The payload of the first `event` about `key`, waiting for it if needed."""

        def found() -> Any:
            return next((e for n, e in self.events if n == event and e["key"] == key), None)

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout)
        return found()

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def close(self) -> None:
        await self.sio.disconnect()


@asynccontextmanager
async def clients(url: str, count: int = 1, **kwargs: Any) -> AsyncIterator[list[Client]]:
    connected = [await Client().connect(url, **kwargs) for _ in range(count)]
    try:
        yield connected
    finally:
        for client in connected:
            await client.close()


def decode_qr(data_uri: str) -> str:
    """Read a `session.qr` image back with a standard decoder (zxing-cpp)."""
    prefix = "data:image/png;base64,"
    assert data_uri.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(data_uri[len(prefix) :])))
    # QR codes only, as a phone's scanner looks: with every format enabled, zxing-cpp now
    # and then also "finds" a short ITF barcode among a QR code's modules (~1 in 400).
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(results) == 1, "expected exactly one QR code in the image"
    return results[0].text


async def pair(
    server: Server, client: Client, key: str, engine: str = "simulator", name: str = "Phone"
) -> str:
    """The seed flow to `ready`: create, the simulated phone scans the code on show.
    Returns the code's text."""
    ack = await client.call("session.create", {"key": key, "name": name, "engine": engine})
    assert ack["ok"], ack
    code = decode_qr((await client.wait_for("session.qr"))["qr"])
    scanned = await server.post(f"/api/simulator/devices/{key}/scan", {"code": code})
    assert scanned.is_success, scanned.text
    await client.wait_for("session.ready")
    return code


def unique_key(prefix: str = "device") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
