"""GET /api/sessions/{key} and /history: what an auditor reads over HTTP."""

from __future__ import annotations

import pytest

from tests.helpers import Server, clients, pair, unique_key


async def seed_flow(server: Server) -> tuple[str, str]:
    key = unique_key()
    async with clients(server.url) as [client]:
        code = await pair(server, client, key, engine="baileys", name="My Device")
    return key, code


async def test_state_now_and_at_a_version(server: Server) -> None:
    key, _ = await seed_flow(server)
    now = await server.get(f"/api/sessions/{key}")
    assert now.status_code == 200
    assert now.json() == {
        "ok": True,
        "key": key,
        "state": "ready",
        "name": "My Device",
        "engine": "baileys",
        "version": 4,
    }
    then = await server.get(f"/api/sessions/{key}?at=2")
    assert then.json()["state"] == "qr" and then.json()["version"] == 2


async def test_history_is_the_same_as_session_history(server: Server) -> None:
    key, code = await seed_flow(server)
    response = await server.get(f"/api/sessions/{key}/history")
    assert response.status_code == 200
    body = response.json()
    async with clients(server.url) as [client]:
        ack = await client.call("session.history", {"key": key})
    assert body == ack
    assert [e["state"] for e in body["events"]] == ["created", "qr", "authenticated", "ready"]
    assert code not in response.text
    first_two = (await server.get(f"/api/sessions/{key}/history?at=2")).json()["events"]
    assert first_two == body["events"][:2]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/sessions/nobody-here", 404, "not_found"),
        ("/api/sessions/nobody-here/history", 404, "not_found"),
        ("/api/sessions/bad%20key", 400, "invalid_key"),
        ("/api/sessions/{key}?at=5", 400, "invalid_payload"),
        ("/api/sessions/{key}?at=0", 400, "invalid_payload"),
        ("/api/sessions/{key}/history?at=-1", 400, "invalid_payload"),
        ("/api/sessions/{key}/history?at=two", 400, "invalid_payload"),
    ],
)
async def test_bad_requests_get_clear_errors(
    server: Server, path: str, status: int, code: str
) -> None:
    key, _ = await seed_flow(server)
    response = await server.get(path.format(key=key))
    assert response.status_code == status
    assert response.json()["ok"] is False
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


async def test_a_key_ending_in_a_slash_is_not_redirected_to_another_key(server: Server) -> None:
    """Found by the HTTP fuzzer: `0%2F` decodes to `0/`, which Starlette answered with a
    307 to `/api/sessions/0`, another session's address."""
    for path in ("/api/sessions/0%2F", "/api/sessions/0/", "/api/sessions/0%2F/history"):
        response = await server.get(path)
        assert response.status_code == 404, (path, response.status_code, response.text)
        assert response.json()["error"]["code"] == "not_found"
