"""The simulator's passkey account: WhatsApp's request for a passkey (WebAuthn), and the
check of an answer.

Offline there is no authenticator to verify a signature with: an answer is accepted when
it is an assertion (`webauthn.get`) for the challenge that was asked, which is what a
browser's `navigator.credentials.get()` puts in `clientDataJSON`.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

RP_ID = "whatsapp.com"


def passkey_request(timeout: float) -> tuple[str, dict[str, Any]]:
    """A new challenge, and the request options as WhatsApp's server would give them."""
    challenge = _b64url(secrets.token_bytes(32))
    options = {
        "challenge": challenge,
        "timeout": int(timeout * 1000),
        "rpId": RP_ID,
        "allowCredentials": [],
        "userVerification": "required",
    }
    return challenge, options


def answers(response: dict[str, Any], challenge: str) -> bool:
    """Whether `response` (a PublicKeyCredential as JSON) asserts `challenge`."""
    try:
        client_data = json.loads(_unb64url(response["response"]["clientDataJSON"]))
    except (KeyError, TypeError, ValueError):
        return False
    if not isinstance(client_data, dict):
        return False
    return client_data.get("type") == "webauthn.get" and client_data.get("challenge") == challenge


def client_data(challenge: str, kind: str = "webauthn.get") -> str:
    """`clientDataJSON` as a browser makes it for `challenge` (base64url), for tests and
    examples."""
    data = {"type": kind, "challenge": challenge, "origin": f"https://web.{RP_ID}"}
    return _b64url(json.dumps(data).encode())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
