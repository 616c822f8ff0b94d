"""The AsyncAPI 3.0 document of pairgate's Socket.IO protocol, generated from the pydantic
models the gateway validates and emits with (adapters.payloads), so the two cannot drift.

`pairgate asyncapi > docs/asyncapi.yaml` (or `python -m adapters.socketio.asyncapi`) writes it; a
test checks that the committed file is what this module generates.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from adapters import payloads
from adapters.console_payloads import SessionChanged, WatchAccepted, WatchRequest

REF = "#/components/schemas/{model}"


# Acknowledgements are plain dicts in the gateway; these models only describe them.
class Refusal(BaseModel):
    code: payloads.ErrorCode
    message: str
    retry_after: float | None = Field(None, description="Seconds until a retry can succeed")


class Refused(BaseModel):
    """Any request's acknowledgement when it is refused (session.error follows)."""

    ok: Literal[False]
    error: Refusal


class Accepted(BaseModel):
    """A request's acknowledgement on success: the session as the request left it."""

    ok: Literal[True]
    key: str
    state: payloads.StateValue
    name: str
    engine: str
    reason: str | None = Field(None, description="Only in the disconnected state")
    joined: bool | None = Field(
        None, description="session.create only: true when it joined a live session"
    )


class HistoryAccepted(BaseModel):
    """session.history's acknowledgement: a page of the recorded events, oldest first."""

    ok: Literal[True]
    key: str
    events: list[dict[str, Any]] = Field(
        description="{version, type, timestamp, state, ...the event's fields}; QR texts "
        "appear as a 12-hex-digit fingerprint"
    )
    next: int | None = Field(
        description="`after` for the next page; null: this page reaches the last version (or `at`)"
    )


# Socket.IO's own CONNECT and CONNECT_ERROR packets of the namespace, as pairgate uses them.
class ConnectAuth(BaseModel):
    """The `auth` of the namespace CONNECT (socket.io-client: `io(url, {auth: {token}})`)."""

    token: str | None = Field(
        None, description="Required when the server has PAIRGATE_TOKENS; else ignored"
    )


class ConnectRefusedData(BaseModel):
    retry_after: float = Field(description="Seconds until a connection can succeed")


class ConnectError(BaseModel):
    """Why the server refused the connection (socket.io-client: the `connect_error` event's
    `err.message` and `err.data`)."""

    message: Literal["unauthorized", "rate_limited"]
    data: ConnectRefusedData | None = Field(None, description="rate_limited only")


# Before any request: the client connects with `auth`, the server accepts or refuses.
CONNECTION: list[tuple[str, type[BaseModel], str, str]] = [
    ("connect", ConnectAuth, "receive", "Connect to the namespace, with the access token."),
    ("connect_error", ConnectError, "send", "The connection is refused, and why."),
]
# (event, payload model, summary); requests are acknowledged with (ack models).
REQUESTS: list[tuple[str, type[BaseModel], str, list[type[BaseModel]]]] = [
    ("session.create", payloads.CreateRequest, "Start pairing a device (or join it if live).",
     [Accepted, Refused]),
    ("session.join", payloads.KeyRequest, "Follow a key's events again (after a reconnect).",
     [Accepted, Refused]),
    ("session.logout", payloads.KeyRequest, "Unlink the device: user logged out.",
     [Accepted, Refused]),
    ("session.delete", payloads.KeyRequest, "Stop and forget the device: session revoked.",
     [Accepted, Refused]),
    ("session.history", payloads.HistoryRequest, "A page of the key's recorded events.",
     [HistoryAccepted, Refused]),
    ("session.passkey_response", payloads.PasskeyResponseRequest,
     "Answer WhatsApp's passkey request (extension).", [Accepted, Refused]),
    ("console.watch", WatchRequest,
     "Hear session.changed for every session of this identity (extension).",
     [WatchAccepted, Refused]),
]  # fmt: skip
EMISSIONS: list[tuple[str, type[BaseModel], str]] = [
    ("session.created", payloads.SessionCreated, "The session was created (or restarted)."),
    ("session.qr", payloads.SessionQr, "A QR code to scan, once per code."),
    ("session.pair_code", payloads.SessionPairCode, "A code to type on the phone."),
    (
        "session.passkey_required",
        payloads.SessionPasskeyRequired,
        "Scanned; WhatsApp asks for the account's passkey (extension).",
    ),
    (
        "session.passkey_failed",
        payloads.SessionPasskeyFailed,
        "The pairing ended at the passkey step, and why (extension).",
    ),
    ("session.authenticated", payloads.SessionKey, "The phone scanned the code."),
    ("session.ready", payloads.SessionKey, "The device is linked and online."),
    ("session.disconnected", payloads.SessionDisconnected, "The session ended or went offline."),
    ("session.error", payloads.SessionError, "A refused request, to the requester only."),
    (
        "session.changed",
        SessionChanged,
        "A session of the identity changed: to its console.watch connections (extension).",
    ),
]


def document() -> dict[str, Any]:
    models = {model for _, model, _, _ in REQUESTS} | {model for _, model, _ in EMISSIONS}
    models |= {ack for _, _, _, acks in REQUESTS for ack in acks}
    models |= {model for _, model, _, _ in CONNECTION}
    ordered = sorted(models, key=lambda model: model.__name__)
    requests = {model for _, model, _, _ in REQUESTS} | {ConnectAuth}
    _, defs = models_json_schema(
        [(model, "validation" if model in requests else "serialization") for model in ordered],
        ref_template=REF,
    )
    schemas = dict(sorted(defs.get("$defs", {}).items()))
    for _, model, _ in EMISSIONS:  # emitted with model_dump(): every field is always there
        schema = schemas[model.__name__]
        schema["required"] = list(schema["properties"])

    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event, model, action, summary in CONNECTION:
        messages[event] = _message(event, model, summary)
        operations[event] = {
            "action": action,
            "channel": {"$ref": "#/channels/root"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/root/messages/{event}"}],
        }
    for event, model, summary, acks in REQUESTS:
        messages[event] = _message(event, model, summary)
        ack_id = event + ".ack"
        messages[ack_id] = {
            "name": f"{event} acknowledgement",
            "payload": {"oneOf": [{"$ref": REF.format(model=ack.__name__)} for ack in acks]},
        }
        operations[event] = {
            "action": "receive",
            "channel": {"$ref": "#/channels/root"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/root/messages/{event}"}],
            "reply": {
                "channel": {"$ref": "#/channels/root"},
                "messages": [{"$ref": f"#/channels/root/messages/{ack_id}"}],
            },
        }
    for event, model, summary in EMISSIONS:
        messages[event] = _message(event, model, summary)
        operations[event] = {
            "action": "send",
            "channel": {"$ref": "#/channels/root"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/root/messages/{event}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "pairgate",
            "version": "0.1.0",
            "description": (
                "Link WhatsApp devices by QR code over Socket.IO (protocol v5, Engine.IO v4, "
                "path /socket.io). Requests are Socket.IO events from the client and are "
                "always acknowledged; session events go to the room named after the key. "
                "Generated from adapters/payloads.py: see docs/protocol.md for the prose."
            ),
        },
        "servers": {
            "local": {
                "host": "127.0.0.1:8000",
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "pairgate serve (websocket or HTTP long-polling transport)",
            }
        },
        "defaultContentType": "application/json",
        "channels": {
            "root": {
                "address": "/",
                "title": "Socket.IO namespace /",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            }
        },
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    header = "# Generated by `pairgate asyncapi` from adapters/payloads.py; do not edit.\n"
    body: str = yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=100)
    return header + body


def _message(event: str, model: type[BaseModel], summary: str) -> dict[str, Any]:
    return {
        "name": event,
        "title": event,
        "summary": summary,
        "payload": {"$ref": REF.format(model=model.__name__)},
    }


if __name__ == "__main__":
    sys.stdout.write(render())
