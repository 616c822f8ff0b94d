"""adapters/projection: the seed's `session.qr`, its image rendered off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from adapters.engines.simulator import whatsapp_shaped_code
from adapters.socketio import projection
from tests.helpers import decode_qr


async def test_codes_are_rendered_off_the_event_loop_on_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    render = projection.qr_data_uri
    rendered_on: list[int] = []

    def watched(code: str) -> str:
        rendered_on.append(threading.get_ident())
        return render(code)

    monkeypatch.setattr(projection, "qr_data_uri", watched)
    codes = [whatsapp_shaped_code() for _ in range(8)]  # due together, as rotations can be

    emissions = await asyncio.gather(*(projection.qr_emission("k", c, 19.2) for c in codes))

    assert len(rendered_on) == len(codes)
    assert threading.get_ident() not in rendered_on
    assert len(set(rendered_on)) == 1
    for (name, payload), code in zip(emissions, codes, strict=True):
        assert (name, payload.key, payload.timeout) == ("session.qr", "k", 20)
        assert decode_qr(payload.qr) == code
