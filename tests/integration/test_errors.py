"""Every `session.error` this server can produce, from real bad requests."""

from __future__ import annotations

from typing import Any

import pytest

from entrypoints.settings import Settings
from tests.helpers import Client, Server, clients, running, unique_key

VALID = {"key": "device-ok", "name": "My Device", "engine": "simulator"}
NO_PAYLOAD = object()
KEY_EVENTS = ["session.join", "session.logout", "session.delete", "session.history"]

BAD_CREATES: list[tuple[str, Any, str]] = [
    ("no payload", NO_PAYLOAD, "invalid_payload"),
    ("null", None, "invalid_payload"),
    ("string", "device123", "invalid_payload"),
    ("array", ["device123", "My Device", "baileys"], "invalid_payload"),
    ("number", 42, "invalid_payload"),
    ("boolean", True, "invalid_payload"),
    ("empty object", {}, "invalid_payload"),
    ("missing name and engine", {"key": "device123"}, "invalid_payload"),
    ("key is a number", {**VALID, "key": 123}, "invalid_payload"),
    ("key is null", {**VALID, "key": None}, "invalid_payload"),
    ("name is a number", {**VALID, "name": 5}, "invalid_payload"),
    ("engine is an object", {**VALID, "engine": {"name": "baileys"}}, "invalid_payload"),
    ("key with a space", {**VALID, "key": "bad key"}, "invalid_key"),
    ("empty key", {**VALID, "key": ""}, "invalid_key"),
    ("65-character key", {**VALID, "key": "k" * 65}, "invalid_key"),
    ("non-ASCII key", {**VALID, "key": "ключ"}, "invalid_key"),
    ("path-like key", {**VALID, "key": "../etc/passwd"}, "invalid_key"),
    ("huge key", {**VALID, "key": "k" * 20_000}, "invalid_key"),
    ("huge name", {**VALID, "name": "n" * 20_000}, "invalid_payload"),
    ("empty name", {**VALID, "name": ""}, "invalid_payload"),
    ("name with a newline", {**VALID, "name": "My\nDevice"}, "invalid_payload"),
    ("huge engine", {**VALID, "engine": "e" * 20_000}, "invalid_payload"),
    ("unknown engine", {**VALID, "engine": "foo"}, "unknown_engine"),
]


async def request(client: Client, event: str, payload: Any) -> Any:
    if payload is NO_PAYLOAD:
        return await client.sio.call(event, timeout=10)
    return await client.call(event, payload)


async def assert_healthy(server: Server, client: Client) -> None:
    assert (await server.get("/healthz")).status_code == 200
    key = unique_key("healthy")
    ack = await client.call("session.create", {**VALID, "key": key})
    assert ack["ok"] is True and ack["state"] == "created"


@pytest.mark.parametrize(("case", "payload", "code"), BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
async def test_bad_create_is_refused_with_a_typed_error(
    server: Server, case: str, payload: Any, code: str
) -> None:
    async with clients(server.url) as [client]:
        ack = await request(client, "session.create", payload)
        assert ack["ok"] is False
        assert ack["error"]["code"] == code
        assert ack["error"]["message"]
        error = await client.wait_for("session.error")
        assert set(error) == {"key", "code", "message"}
        assert error["code"] == code and error["message"] == ack["error"]["message"]
        if isinstance(payload, dict) and isinstance(payload.get("key"), str):
            assert error["key"] == payload["key"][:64]
        else:
            assert error["key"] is None
        assert client.names() == ["session.error"]  # nothing was created or joined
        await assert_healthy(server, client)


@pytest.mark.parametrize("event", KEY_EVENTS)
@pytest.mark.parametrize(
    ("payload", "code"),
    [("device123", "invalid_payload"), ({}, "invalid_payload"), ({"key": "a b"}, "invalid_key")],
)
async def test_bad_key_requests_are_refused(
    server: Server, event: str, payload: Any, code: str
) -> None:
    async with clients(server.url) as [client]:
        ack = await client.call(event, payload)
        assert ack["ok"] is False and ack["error"]["code"] == code
        assert (await client.wait_for("session.error"))["code"] == code


@pytest.mark.parametrize("event", KEY_EVENTS)
async def test_unknown_key_is_not_found(server: Server, event: str) -> None:
    key = unique_key("missing")
    async with clients(server.url) as [client]:
        ack = await client.call(event, {"key": key})
        assert ack == {
            "ok": False,
            "error": {"code": "not_found", "message": f"no session with key {key!r}"},
        }
        assert await client.wait_for("session.error") == {
            "key": key,
            "code": "not_found",
            "message": f"no session with key {key!r}",
        }


async def test_logging_out_twice_is_an_invalid_transition(server: Server) -> None:
    key = unique_key()
    async with clients(server.url) as [client]:
        await client.call("session.create", {**VALID, "key": key})
        await client.wait_for("session.qr")
        first = await client.call("session.logout", {"key": key})
        assert first["ok"] is True and first["reason"] == "user logged out"
        second = await client.call("session.logout", {"key": key})
        assert second["ok"] is False
        assert second["error"]["code"] == "invalid_transition"
        assert "disconnected" in second["error"]["message"]
        await assert_healthy(server, client)
    kinds = [type(e).__name__ for e in server.pairgate.sessions.history(key)]
    assert kinds == ["SessionCreated", "QrIssued", "Disconnected"]


async def test_the_simulator_is_unavailable_outside_simulator_mode(settings: Settings) -> None:
    production = settings.model_copy(update={"simulate": False})
    async with running(production) as server, clients(server.url) as [client]:
        ack = await client.call("session.create", {**VALID, "engine": "simulator"})
        assert ack["error"]["code"] == "engine_unavailable"
        assert "use one of" in ack["error"]["message"]
        unknown = await client.call("session.create", {**VALID, "engine": "foo"})
        assert unknown["error"]["code"] == "unknown_engine"
        assert (await server.post("/api/simulator/devices/device-ok/scan", {})).status_code == 404
        assert server.pairgate.sessions.find("device-ok") is None


async def test_an_unknown_session_request_is_refused(server: Server) -> None:
    async with clients(server.url) as [client]:
        ack = await client.call("session.restart", {"key": "device123"})
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
        assert "session.create" in ack["error"]["message"]
        error = await client.wait_for("session.error")
        assert error["key"] == "device123" and error["code"] == "invalid_payload"
        # Events outside pairgate's protocol are left alone, as Socket.IO servers do.
        assert await client.call("chat.message", {"text": "hi"}) is None
        await assert_healthy(server, client)
