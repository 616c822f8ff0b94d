"""What a webhook says: the event as history shows it, signed as Standard Webhooks has it
(https://www.standardwebhooks.com: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from datetime import datetime

from adapters.payloads import EVENT_NAMES
from adapters.qr.png import qr_data_uri
from domain.application.history import event_record
from domain.application.ports import SessionRow
from domain.application.sessions import Event
from domain.model.session import DeviceSession

SECRET_PREFIX = "whsec_"
EVENT_TYPES = tuple(dict.fromkeys(EVENT_NAMES.values()))


def render(event: Event, row: SessionRow) -> tuple[str, str] | None:
    """The event's type and body: `{type, timestamp, data}`, data being the history
    record (QR codes as fingerprints) with the key; a session.qr's also has the image."""
    event_type = EVENT_NAMES.get(type(event))
    if event_type is None:
        return None
    record = event_record(event, tenure_from=row.tenure_start, key=row.key, state=row.state.value)
    data = {"key": row.key, **record}
    if isinstance(event, DeviceSession.QrIssued):
        data["qr"] = qr_data_uri(event.code)
    body = {"type": event_type, "timestamp": record["timestamp"], "data": data}
    return event_type, json.dumps(body, separators=(",", ":"))


def as_sent(body: str, now: datetime) -> str:
    """The body as it goes out: a QR image whose code has expired is left out."""
    if '"qr":' not in body:
        return body
    message = json.loads(body)
    data = message["data"]
    if data.get("qr") and datetime.fromisoformat(data["expires_at"]) <= now:
        data["qr"] = None
        return json.dumps(message, separators=(",", ":"))
    return body


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (ValueError if it is not one)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret is {SECRET_PREFIX} followed by base64")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(f"a webhook secret is {SECRET_PREFIX} followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret's key must be 24 to 64 bytes")
    return key


def signed_headers(secret: str, message_id: str, timestamp: int, body: str) -> dict[str, str]:
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }
