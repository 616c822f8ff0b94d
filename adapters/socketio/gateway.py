"""The Socket.IO gateway: validates client requests and hands them to the service.

Replies are acknowledgements (`{"ok": true, ...}` or `{"ok": false, "error": ...}`) plus,
for refusals, `session.error` to the requesting connection only. Session events reach
clients only through the projection of recorded events (adapters.socketio.projection).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio

from adapters import payloads
from adapters.console_payloads import WatchRequest
from adapters.identity import Identities
from adapters.limits.addresses import counted
from adapters.limits.history import HistoryAllowance
from adapters.limits.requests import RequestLimits
from adapters.payloads import describe
from adapters.socketio.projection import SocketIoNotifier
from domain.application.history import MAX_PAGE_SIZE
from domain.application.pairing import PairingService
from domain.application.ports import Clock
from domain.model.errors import DeviceSessionError, LimitReachedError
from domain.model.session import DeviceSession

log = logging.getLogger(__name__)

Reply = dict[str, Any]
Handler = Callable[[str, Any], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a connection is, as each kind of limit counts it.

    `identity` owns the sessions it creates. `holder` is whom the session cap, the
    per-identity rate limit and connect bans count against: the identity or, without
    tokens (when everyone is the one default identity), the client's address. `requester`
    (identity and address) is whom the per-connection allowance and strikes count
    against, so that reconnecting does not buy a fresh allowance.
    """

    identity: str
    holder: str
    requester: str


class PairingNamespace(socketio.AsyncNamespace):  # type: ignore[misc]  # untyped library
    def __init__(
        self,
        service: PairingService,
        notifier: SocketIoNotifier,
        clock: Clock,
        identities: Identities,
        limits: RequestLimits,
        namespace: str = "/",
        history_allowance: HistoryAllowance | None = None,
    ) -> None:
        super().__init__(namespace)
        self._service = service
        self._notifier = notifier
        self._clock = clock
        self._known = identities
        self._limits = limits
        self._history_allowance = history_allowance or HistoryAllowance("", MAX_PAGE_SIZE)
        self._callers: dict[str, Caller] = {}
        self._handlers: dict[str, Handler] = {
            "session.create": self._create,
            "session.join": self._join,
            "session.logout": self._logout,
            "session.delete": self._delete,
            "session.history": self._history,
            "session.passkey_response": self._passkey_response,
            "console.watch": self._watch,
        }

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        sid, data = args[0], (args[1] if len(args) > 1 else None)
        handler = self._handlers.get(event)
        ours = isinstance(event, str) and event.startswith(("session.", "console."))
        if handler is None and ours:
            handler = self._unknown_request(event)
        # Other events are not pairgate's (handler None): ignored, as Socket.IO servers
        # do, but counted like any request, or flooding with them would cost nothing.
        return await self._reply(sid, handler, data)

    def _unknown_request(self, event: str) -> Handler:
        async def refuse(sid: str, data: Any) -> Reply:
            known = ", ".join(sorted(self._handlers))
            message = f"unknown request {event[:64]!r}; use one of: {known}"
            raise payloads.RequestRefused("invalid_payload", message, payloads.echo_key(data))

        return refuse

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        identity = self._known.identify(token)
        if identity is None:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        caller = _caller(environ, identity, self._known)
        if (wait := await self._limits.banned_for(caller.holder)) is not None:
            raise socketio.exceptions.ConnectionRefusedError(
                "rate_limited", {"retry_after": round(wait, 3)}
            )
        self._callers[sid] = caller

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        # The caller's counters stay: they expire with their windows, not with a connection.
        self._callers.pop(sid, None)

    # -- requests ---------------------------------------------------------------------

    async def _create(self, sid: str, data: Any) -> Reply:
        request = payloads.parse(payloads.CreateRequest, data)
        caller = self._callers[sid]
        outcome = await request.start(self._service, caller.identity, sid, caller.holder)
        if outcome.joined:
            await self._send_current(sid, outcome.session)
        return {**describe(outcome.session), "joined": outcome.joined}

    async def _join(self, sid: str, data: Any) -> Reply:
        request = payloads.parse(payloads.KeyRequest, data)
        session = await self._service.join(request.key, self._callers[sid].identity, sid)
        await self._send_current(sid, session)
        return describe(session)

    async def _watch(self, sid: str, data: Any) -> Reply:
        payloads.parse(WatchRequest, {} if data is None else data)
        await self._notifier.watch(self._callers[sid].identity, sid)
        return {}

    async def _passkey_response(self, sid: str, data: Any) -> Reply:
        request = payloads.parse(payloads.PasskeyResponseRequest, data)
        identity = self._callers[sid].identity
        return describe(await self._service.answer_passkey(request.key, identity, request.response))

    async def _logout(self, sid: str, data: Any) -> Reply:
        request = payloads.parse(payloads.KeyRequest, data)
        return describe(await self._service.logout(request.key, self._callers[sid].identity))

    async def _delete(self, sid: str, data: Any) -> Reply:
        request = payloads.parse(payloads.KeyRequest, data)
        return describe(await self._service.delete(request.key, self._callers[sid].identity))

    async def _history(self, sid: str, data: Any) -> Reply:
        request = payloads.parse(payloads.HistoryRequest, data)
        caller = self._callers[sid]
        # Records per identity (per address without tokens), as the HTTP API counts them.
        await self._history_allowance.take(caller.holder, request.limit, request.key)
        page = await self._service.history(
            request.key, caller.identity, request.at, after=request.after, limit=request.limit
        )
        return payloads.history_reply(request.key, page)

    # -- replies ----------------------------------------------------------------------

    async def _send_current(self, sid: str, session: DeviceSession) -> None:
        await self._notifier.send_current(session, self._clock.now(), to=sid)

    async def _reply(self, sid: str, handler: Handler | None, data: Any) -> Reply | None:
        caller = self._callers.get(sid)
        if caller is None:
            return None  # sent just before its connection closed
        try:
            await self._limits.admit(caller.requester, caller.holder, payloads.echo_key(data))
        except LimitReachedError as refused:
            if await self._limits.strike(caller.requester):
                log.warning("hanging up on %s: it ignores rate_limited replies", sid)
                await self._limits.ban(caller.holder)
                await self.disconnect(sid)
                return None
            return await self._refuse(
                sid, data, "rate_limited", refused.message, refused.retry_after
            )
        if handler is None:
            return None
        retry_after: float | None = None
        try:
            return {"ok": True, **await handler(sid, data)}
        except payloads.RequestRefused as refused:
            code, message = refused.code, refused.message
        except LimitReachedError as refused:
            code, message, retry_after = "rate_limited", refused.message, refused.retry_after
        except DeviceSessionError as refused:
            code, message = refused.code, refused.message  # type: ignore[assignment]
        except Exception:
            log.exception("request from %s failed", sid, extra={"key": payloads.echo_key(data)})
            code, message = "internal", "internal error; the server log has the details"
        return await self._refuse(sid, data, code, message, retry_after)

    async def _refuse(
        self, sid: str, data: Any, code: payloads.ErrorCode, message: str, retry_after: float | None
    ) -> Reply:
        error = payloads.SessionError(key=payloads.echo_key(data), code=code, message=message)
        await self.emit("session.error", error.model_dump(), to=sid)
        refusal: dict[str, Any] = {"code": error.code, "message": error.message}
        if retry_after is not None:
            refusal["retry_after"] = retry_after  # seconds: when a retry can succeed
        return {"ok": False, "error": refusal}


def _caller(environ: dict[str, Any], identity: str, identities: Identities) -> Caller:
    address = client_address(environ)
    holder = identities.holder(identity, address)
    return Caller(identity, holder, requester=f"{identity}@{address}")


def client_address(environ: dict[str, Any]) -> str:
    """The client's address as limits count it (an IPv6 client by its /64: see
    adapters/limits/addresses.py), from the ASGI scope's peer (which uvicorn rewrites from
    X-Forwarded-For only for trusted proxies). python-engineio's environ says 127.0.0.1
    for every client, so its REMOTE_ADDR must never be used."""
    client = environ.get("asgi.scope", {}).get("client")
    return counted(str(client[0])) if client else "unknown"
