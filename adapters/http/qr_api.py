"""The codes on show: the QR code as a PNG image (or JSON), and the pairing code.

A backend driving pairing over REST shows the image itself or hands the data URI on; the
code's text never leaves the server except as the image (as in `session.qr`).
"""

from __future__ import annotations

import base64
import math
from datetime import datetime

from starlette.responses import Response
from starlette.routing import Route

from adapters.http.models import PairCodeView, QrView
from adapters.http.rest import JSON, Api, Call, HttpRefusal, Operation, ok
from adapters.qr.png import qr_data_uri
from domain.application.pairing import PairingService
from domain.application.ports import Clock
from domain.model.session import DeviceSession

PNG = "image/png"
MAX_RANGES = 32  # of an Accept header: more are ignored
QR = Operation(
    "GET",
    "/api/sessions/{key}/qr",
    "getQrCode",
    f"The QR code on show: {PNG} by default, JSON with `Accept: {JSON}`; 409 no_code when "
    "the session shows none (not pairing, or the code expired).",
    {200: QrView},
    refusals=(404, 406, 409),
    media={200: PNG},
)
PAIR_CODE = Operation(
    "GET",
    "/api/sessions/{key}/pair-code",
    "getPairCode",
    "The pairing code on show; 409 no_code when there is none.",
    {200: PairCodeView},
    refusals=(404, 409),
)
OPERATIONS = [QR, PAIR_CODE]


def code_routes(service: PairingService, api: Api, clock: Clock) -> list[Route]:
    async def qr(call: Call) -> Response:
        key = call.key
        media = preferred(call.request.headers.get("accept"), (PNG, JSON))
        session = await service.state(key, call.caller.identity)
        left = session.qr_seconds_left(clock.now())
        if session.qr_code is None or left <= 0:
            raise _no_code(session, "QR code")
        image = qr_data_uri(session.qr_code)
        if media == PNG:
            png = base64.b64decode(image.partition(",")[2])
            return Response(png, media_type=PNG, headers={"cache-control": "no-store"})
        return ok({"key": key, "qr": image} | _shown(left, session.qr_expires_at))

    async def pair_code(call: Call) -> Response:
        key = call.key
        session = await service.state(key, call.caller.identity)
        left = session.pair_code_seconds_left(clock.now())
        if session.pair_code is None or left <= 0:
            raise _no_code(session, "pairing code")
        return ok(
            {"key": key, "code": session.pair_code} | _shown(left, session.pair_code_expires_at)
        )

    return [QR.route(api, qr), PAIR_CODE.route(api, pair_code)]


def preferred(accept: str | None, offered: tuple[str, ...]) -> str:
    """The offered media type the Accept header ranks highest (the first offered on a tie,
    or without Accept); HttpRefusal 406 if it accepts none. A type's quality is that of
    the most specific range naming it: `image/png;q=0, */*` refuses PNG."""
    if accept is None or not accept.strip():
        return offered[0]
    ranges = [_media_range(part) for part in accept.split(",")[:MAX_RANGES]]
    ranked = []
    for position, choice in enumerate(offered):
        names = (choice, choice.partition("/")[0] + "/*", "*/*")  # most specific first
        matching = [(names.index(media), q) for media, q in ranges if media in names]
        if matching and (q := min(matching)[1]) > 0:
            ranked.append((q, -position, choice))
    if not ranked:
        raise HttpRefusal(406, "invalid_payload", f"Accept one of: {', '.join(offered)}")
    return max(ranked)[2]


def _media_range(part: str) -> tuple[str, float]:
    media, *params = (piece.strip().lower() for piece in part.split(";"))
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                return media, 0.0
            return media, q if 0 <= q <= 1 else 0.0
    return media, 1.0


def _shown(left: float, deadline: datetime | None) -> dict[str, object]:
    assert deadline is not None  # a code on show has one
    return {"timeout": math.ceil(left), "expires_at": deadline.isoformat()}


def _no_code(session: DeviceSession, what: str) -> HttpRefusal:
    return HttpRefusal(409, "no_code", f"session {session.key!r} shows no {what} now")
