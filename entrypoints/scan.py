"""`pairgate scan`: link a device from a terminal.

Exit status: 0 when the session is ready, 1 on `session.disconnected` (the reason is
printed), 2 on `session.error` or a refused request, 3 when the server cannot be reached.
"""

from __future__ import annotations

import asyncio
import base64
import io
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import segno
import socketio

READY, DISCONNECTED, REFUSED, UNREACHABLE = 0, 1, 2, 3


def qr_text(data_uri: str) -> str:
    """The text inside a `session.qr` image, to print it again as terminal blocks."""
    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(data_uri.split(",", 1)[1])))
    only_qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    found = zxingcpp.read_barcodes(image, formats=only_qr)
    if not found:
        raise ValueError("the server's QR image holds no QR code")
    return found[0].text


def terminal_qr(text: str) -> str:
    out = io.StringIO()
    segno.make(text, error="L", micro=False).terminal(out=out, compact=True, border=2)
    return out.getvalue()


@dataclass
class Scan:
    key: str
    name: str
    engine: str
    out: TextIO

    def __post_init__(self) -> None:
        self.outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.countdown: asyncio.Task[None] | None = None

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def finish(self, status: int) -> None:
        if self.countdown is not None:
            self.countdown.cancel()
        if not self.outcome.done():
            self.outcome.set_result(status)

    # -- server events ----------------------------------------------------------------

    async def on_qr(self, data: dict[str, Any]) -> None:
        if self.countdown is not None:
            self.countdown.cancel()
        text = await asyncio.to_thread(qr_text, data["qr"])
        self.say(f"Scan within {data['timeout']} s (WhatsApp: Linked devices → Link a device):")
        self.out.write(terminal_qr(text))
        self.countdown = asyncio.create_task(self._count_down(int(data["timeout"])))

    async def _count_down(self, seconds: int) -> None:
        if not self.out.isatty():
            return  # a log or a pipe gets the code's lifetime once, above
        for left in range(seconds, 0, -1):
            self.out.write(f"\r{left:4d} s left ")
            self.out.flush()
            await asyncio.sleep(1)
        self.out.write("\n")

    def on_state(self, event: str, data: dict[str, Any]) -> None:
        if event == "session.disconnected":
            self.finish(DISCONNECTED)
            self.say(f"disconnected: {data['reason']}")
        elif event == "session.error":
            self.finish(REFUSED)
            self.say(f"error {data['code']}: {data['message']}")
        else:
            if event == "session.ready":
                self.finish(READY)
            self.say(event.removeprefix("session."))


async def scan(
    server: str,
    key: str,
    name: str,
    engine: str,
    token: str | None,
    out: TextIO,
    relink: bool = False,
) -> int:
    run = Scan(key, name, engine, out)
    client = socketio.AsyncClient(reconnection_attempts=5)
    client.on("session.qr", run.on_qr)
    for state in ("created", "authenticated", "ready", "disconnected", "error"):
        event = f"session.{state}"
        client.on(event, lambda data, event=event: run.on_state(event, data))

    async def rejoin() -> None:
        # A reconnect is a new connection with no rooms: follow the key again.
        if first_connect.done():
            client.start_background_task(client.call, "session.join", {"key": key})

    refusals: list[str] = []  # what the server said when it refused to connect us

    def refused(data: Any) -> None:
        # A dict is the server's answer ({"message": "unauthorized"}); a transport failure
        # (nobody listening) is reported as a plain string.
        if isinstance(data, dict):
            refusals.append(str(data.get("message")))

    client.on("connect", rejoin)
    client.on("connect_error", refused)
    first_connect: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    try:
        await client.connect(
            server,
            auth={"token": token} if token else None,
            wait_timeout=10,
            transports=["websocket"],
        )
    except socketio.exceptions.ConnectionError as error:
        if refusals:  # the server answered: "unauthorized", "rate_limited", ...
            print(f"pairgate: {server} refused the connection: {refusals[0]}", file=sys.stderr)
            return REFUSED
        print(f"pairgate: cannot connect to {server}: {error}", file=sys.stderr)
        return UNREACHABLE
    first_connect.set_result(None)
    try:
        request: dict[str, object] = {"key": key, "name": name, "engine": engine}
        if relink:  # unlink a device that still holds credentials: only when asked
            request["relink"] = True
        ack = await client.call("session.create", request)
        if not ack.get("ok"):
            run.finish(REFUSED)  # session.error already said why
        elif ack.get("state") == "ready":
            run.say("ready")
            run.finish(READY)
        return await run.outcome
    finally:
        await client.disconnect()
