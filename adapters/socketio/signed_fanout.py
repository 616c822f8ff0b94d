"""Emissions over Redis pub/sub, signed by the deployment.

python-socketio's Redis manager acts on whatever is published on its channel. The
channel is named after the store's address, which is no secret, so whoever may publish
on that Redis (another deployment sharing it, say) could put its own QR code on every
page showing a key: a user who scans it links their WhatsApp to the attacker's device.

Here each message goes out in an envelope with the time it was sent and an HMAC-SHA256
of both under the deployment's fan-out key, and a message is acted on only if its MAC
is right and it is at most MAX_AGE seconds old (a recording replayed later is dropped).
Drops are logged, once a minute at most.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from adapters.socketio.rooms import IndexedRedisManager

log = logging.getLogger(__name__)

MAX_AGE = 60.0  # seconds; processes' clocks agree far better (NTP)
WARN_EVERY = 60.0  # seconds between two warnings about dropped messages


class SignedRedisManager(IndexedRedisManager):
    def __init__(self, url: str, *, key: bytes, **options: Any) -> None:
        super().__init__(url, **options)
        self._key = key
        self._dropped = 0
        self._warned_at = float("-inf")

    async def _publish(self, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":"))
        sent = round(time.time(), 3)
        await super()._publish({"body": body, "at": sent, "mac": self._mac(sent, body)})

    async def _listen(self) -> AsyncIterator[Any]:
        async for message in super()._listen():
            data = self._opened(message)
            if data is not None:
                yield data  # (python-socketio takes a dict as it is)

    def _opened(self, message: Any) -> dict[str, Any] | None:
        try:
            envelope = json.loads(message)
            body, sent, mac = envelope["body"], float(envelope["at"]), envelope["mac"]
            signed = isinstance(mac, str) and hmac.compare_digest(mac, self._mac(sent, body))
            if signed and abs(time.time() - sent) <= MAX_AGE:
                data = json.loads(body)
                if isinstance(data, dict):
                    return data
        except (ValueError, TypeError, KeyError):
            pass
        self._dropped += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "dropped %d message(s) on the fan-out channel not signed by this deployment "
                "(another deployment publishing on it? every process needs the same "
                "PAIRGATE_CIPHER_KEY)",
                self._dropped,
            )
            self._dropped = 0
        return None

    def _mac(self, sent: float, body: Any) -> str:
        text = f"{sent:.3f}|{body}".encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()
