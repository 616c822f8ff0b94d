"""The baseline: the seed flow on bare python-socketio, with no domain and no store.

    python -m benchmarks.baseline_app --port 8001

Same uvicorn, same Socket.IO server options and the same QR renderer (adapters/qr_png, in a
worker thread) as `pairgate serve --simulate`, and the same simulator paths the load client
uses: `session.create` answers `session.created` and `session.qr`; GET
`/api/simulator/devices/{key}/code` returns the code; POST `.../scan` with it emits
`session.authenticated` and `session.ready`. Whatever pairgate costs beyond this is its own.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.engines.simulator import whatsapp_shaped_code
from adapters.qr.png import qr_data_uri

QR_TIMEOUT = 60


def create_app() -> socketio.ASGIApp:
    sio = socketio.AsyncServer(async_mode="asgi", max_http_buffer_size=65536)
    codes: dict[str, str] = {}

    @sio.on("session.create")
    async def create(sid: str, data: Any) -> dict[str, Any]:
        key = data["key"]
        await sio.enter_room(sid, key)
        await sio.emit("session.created", {"key": key, "message": "Session created"}, room=key)
        code = codes[key] = whatsapp_shaped_code()
        image = await asyncio.to_thread(qr_data_uri, code)
        await sio.emit("session.qr", {"key": key, "qr": image, "timeout": QR_TIMEOUT}, room=key)
        return {"ok": True, "key": key, "state": "qr"}

    async def current_code(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        if key not in codes:
            return JSONResponse({"ok": False, "error": {"code": "not_pairing"}}, status_code=409)
        return JSONResponse({"ok": True, "key": key, "code": codes[key]})

    async def scan(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        body = await request.json()
        if codes.get(key) != body.get("code"):
            return JSONResponse({"ok": False, "error": {"code": "wrong_code"}}, status_code=409)
        del codes[key]
        await sio.emit("session.authenticated", {"key": key}, room=key)
        await sio.emit("session.ready", {"key": key}, room=key)
        return JSONResponse({"ok": True, "key": key})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    base = "/api/simulator/devices/{key:str}/"
    web = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route(base + "code", current_code),
            Route(base + "scan", scan, methods=["POST"]),
        ]
    )
    return socketio.ASGIApp(sio, other_asgi_app=web)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # The options `pairgate serve` gives uvicorn (entrypoints/cli.py).
    config = uvicorn.Config(
        create_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=10,
        ws_per_message_deflate=False,  # PAIRGATE_WS_COMPRESSION's default
        ws_ping_interval=None,  # as pairgate: Engine.IO's heartbeat watches connections
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
