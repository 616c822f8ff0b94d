"""python-engineio's AsyncServer (Socket.IO's transport), without three ways a polling
client could hurt it:

- **A POST of a packet it does not take** from clients (a NOOP, a PING) made it
  disconnect the session and wait, inside that POST, for the client's next poll to
  fetch the close: a client that never polls held the request, its task and the session
  for good. A disconnect made while a POST is handled closes and forgets the session at
  once (`hang_up`), and the POST is answered 400.
- **A POST for a session its client had just closed** (a CLOSE packet) raised KeyError:
  a 500 and a traceback in the log. It is answered 400, as for any unknown session.
- **An undecodable POST** (bad base64, bad UTF-8, an empty packet) was logged with a
  traceback and answered 200. It is answered 400 and its session closed, as Engine.IO
  closes a transport whose payload does not decode.

- **A polling client that stops polling** but keeps its session alive (pongs posted
  blind) had every message for it kept in Engine.IO's queue, which only a poll empties.
  A polling session that has not polled for `read_timeout` seconds (none under way) is
  closed when a message for it comes, as a websocket that leaves the server's messages
  unread is cut (entrypoints/connections.py).

These are overrides of `handle_request`, `send_packet` and `disconnect`, each calling the
original.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import engineio
from engineio import payload

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]

# Seconds a polling session may go without polling while messages come for it.
READ_TIMEOUT = 10.0
# Whether the caller handles a polling POST (or runs on a task one started).
_posting: ContextVar[bool] = ContextVar("posting", default=False)


async def hang_up(eio: engineio.AsyncServer, eio_sid: str) -> None:
    """Close an Engine.IO session now. Engine.IO's own close only queues a CLOSE packet
    and waits for the client to act on it, which an attacker does not: the None after it
    ends a websocket's writer, which closes the websocket, and a polling session is
    forgotten at once (a pending poll still gets the packet)."""
    socket = eio.sockets.pop(eio_sid, None)
    if socket is not None:
        if not socket.closed:
            await socket.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
        await socket.queue.put(None)


class BoundedEngineIO(engineio.AsyncServer):  # type: ignore[misc]  # untyped library
    def __init__(self, *, read_timeout: float = READ_TIMEOUT, **options: Any) -> None:
        super().__init__(**options)
        self._read_timeout = read_timeout
        # Each polling session's last poll's end (None: one is under way), by its socket.
        self._polled: weakref.WeakKeyDictionary[Any, float | None] = weakref.WeakKeyDictionary()

    async def handle_request(self, scope: Any, receive: Receive, send: Any) -> Any:
        posting = scope.get("method") == "POST"
        if not posting and scope["type"] == "http":
            polled = self.sockets.get(_sid(scope))
            if polled is not None and not polled.upgraded:
                self._polled[polled] = None
                try:
                    return await super().handle_request(scope, receive, send)
                finally:
                    self._polled[polled] = time.monotonic()
        token = _posting.set(posting)
        try:
            if posting:
                body = await _body(receive, self.max_http_buffer_size)
                problem = _undecodable(body, self.max_http_buffer_size)
                if problem is not None:
                    sid = _sid(scope)
                    if sid is not None and sid in self.sockets:
                        log.warning("closing Engine.IO session %s: %s", sid, problem)
                        await hang_up(self, sid)
                    return await self._refuse(problem, scope, send)
                receive = _replay(body, receive)
            return await super().handle_request(scope, receive, send)
        except KeyError as gone:  # `_get_socket`: its session closed ("Session is ...")
            if not posting or not str(gone).startswith("'Session"):
                raise
            return await self._refuse(gone.args[0], scope, send)
        finally:
            _posting.reset(token)

    async def send_packet(self, sid: str, pkt: Any) -> None:
        socket = self.sockets.get(sid)
        if socket is not None and not socket.upgraded:
            polled = self._polled.setdefault(socket, time.monotonic())
            if polled is not None and time.monotonic() - polled > self._read_timeout:
                unread = socket.queue.qsize()
                log.warning(
                    "closing Engine.IO session %s: it has not polled for %g s (%d messages "
                    "waiting)",
                    sid,
                    self._read_timeout,
                    unread,
                )
                await hang_up(self, sid)
                return
        await super().send_packet(sid, pkt)

    async def disconnect(self, sid: str | None = None) -> None:
        if sid is not None and _posting.get():
            await hang_up(self, sid)  # never wait inside a POST for the client's next poll
        else:
            await super().disconnect(sid)

    async def _refuse(self, why: str, scope: Any, send: Any) -> None:
        refusal = self._bad_request(why)
        environ = {"asgi.scope": scope, "asgi.send": send}
        respond = self._async["make_response"]
        await respond(refusal["status"], refusal["headers"], refusal["response"], environ)


async def _body(receive: Receive, limit: int) -> bytes:
    """The request's body, or its first `limit` + 1 bytes if it is longer."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        event = await receive()
        if event["type"] != "http.request":
            break  # the client went away: Engine.IO's own reading finds nothing either
        chunk = event.get("body") or b""
        chunks.append(chunk)
        size += len(chunk)
        if not event.get("more_body"):
            break
    return b"".join(chunks)


def _undecodable(body: bytes, limit: int) -> str | None:
    if len(body) > limit:
        return f"a payload over {limit} bytes"
    try:
        payload.Payload(encoded_payload=body.decode())
    except (ValueError, TypeError, IndexError) as error:  # bad UTF-8 or base64 included
        return f"an undecodable payload ({type(error).__name__})"
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read given back first."""
    given = False

    async def replayed() -> dict[str, Any]:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _sid(scope: Any) -> str | None:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    sids = query.get("sid")
    return sids[0] if sids else None
