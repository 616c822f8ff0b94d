"""The Socket.IO protocol's payloads as pydantic models.

The gateway validates with these and emits through them, and the AsyncAPI document is
generated from them, so the three cannot drift apart. Field names are the seed's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from domain.application.history import MAX_PAGE_SIZE, PAGE_SIZE, HistoryPage
from domain.model.proxy import MAX_PROXY_LENGTH, PROXY_PATTERN, PROXY_SCHEMES, check_proxy
from domain.model.session import DeviceSession, DisconnectCause, DisconnectReason, SessionState

# The protocol's states and reasons are the domain's enums' values, as Literals: the schema
# lists them, and validation refuses anything else. (A Literal built at run time: to a type
# checker they are strings.)
if TYPE_CHECKING:
    from domain.application.pairing import Outcome, PairingService

    StateValue = str
    ReasonValue = str
    CauseValue = str
else:
    StateValue = Literal[tuple(state.value for state in SessionState)]
    ReasonValue = Literal[tuple(reason.value for reason in DisconnectReason)]
    CauseValue = Literal[tuple(cause.value for cause in DisconnectCause)]

# The protocol's name of each recorded event (the Socket.IO emission, the webhook type).
EVENT_NAMES: dict[type, str] = {
    DeviceSession.SessionCreated: "session.created",
    DeviceSession.Restarted: "session.created",
    DeviceSession.QrIssued: "session.qr",
    DeviceSession.PairCodeIssued: "session.pair_code",
    DeviceSession.Authenticated: "session.authenticated",
    DeviceSession.Ready: "session.ready",
    DeviceSession.Disconnected: "session.disconnected",
}

# Not dots alone: `.` and `..` name a directory, not a device, in paths and URLs.
KEY_PATTERN = r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$"
# Compiled: Python's engine for this pattern alone (its lookahead is beyond pydantic's Rust
# engine), after the length checks, so it only ever reads 64 characters.
Key = Annotated[
    str, StringConstraints(pattern=re.compile(KEY_PATTERN), min_length=1, max_length=64)
]
# 1-128 printable characters: no control characters, no line breaks.
Name = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f-\x9f]{1,128}$")]
KEY_FORMAT_ERRORS = {"string_pattern_mismatch", "string_too_short", "string_too_long"}
EngineName = Annotated[str, StringConstraints(min_length=1, max_length=32)]
# A phone number in international format: country code and number, 8-15 digits, no "+".
Phone = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{7,14}$")]
# A proxy URL: scheme, host and port, optional credentials (domain.model.proxy checks it).
# The schema gives the rule as a pattern; validation gives a clear message per mistake.
Proxy = Annotated[
    str,
    StringConstraints(max_length=MAX_PROXY_LENGTH),
    AfterValidator(check_proxy),
    WithJsonSchema({"type": "string", "maxLength": MAX_PROXY_LENGTH, "pattern": PROXY_PATTERN}),
]

# Versions are counted from 1; past this many (18 digits) a number is refused before
# `int()` reads its digits (it raises on more than 4,300).
MAX_VERSION = 10**18 - 1

ErrorCode = Literal[
    "invalid_payload",
    "invalid_key",
    "unknown_engine",
    "engine_unavailable",
    "forbidden",
    "not_found",
    "rate_limited",
    "invalid_transition",
    "internal",
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
CreatedMessage = Literal["Session created"]
CREATED_MESSAGE: CreatedMessage = get_args(CreatedMessage)[0]


class Request(BaseModel):
    # Strict: a number is not a key. Unknown fields are ignored for forward compatibility.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class CreateRequest(Request):
    """`session.create`: the seed's payload."""

    key: Key
    name: Name
    engine: EngineName
    phone: Phone | None = Field(
        None, description="Pair by phone number too: the server emits session.pair_code"
    )
    proxy: Proxy | None = Field(
        None,
        description=(
            f"Dial WhatsApp through this proxy ({', '.join(PROXY_SCHEMES)}), e.g. "
            "socks5://user:password@host:1080; default: the server's PAIRGATE_PROXY. Kept "
            "with the pairing (a resumed device dials through it again), encrypted at rest "
            "with PAIRGATE_CIPHER_KEY; its credentials are never shown: history shows "
            "scheme://host:port."
        ),
    )
    relink: bool = Field(
        False,
        description=(
            "Start a new pairing even though the key still holds a linked device's "
            "credentials (an offline device): they are discarded, unlinking it. Without it "
            "such a request is refused with invalid_transition."
        ),
    )

    async def start(
        self, service: PairingService, owner: str, subscriber: str | None, holder: str | None
    ) -> Outcome:
        """The one use case it asks for, whichever transport brought it (Socket.IO's
        `session.create`, REST's POST /api/sessions)."""
        return await service.create(
            self.key,
            self.name,
            self.engine,
            owner,
            subscriber,
            phone=self.phone,
            relink=self.relink,
            holder=holder,
            proxy=self.proxy,
        )


class KeyRequest(Request):
    """`session.join`, `session.logout`, `session.delete`."""

    key: Key


class PasskeyResponseRequest(KeyRequest):
    """`session.passkey_response`: the answer to `session.passkey_required`."""

    response: dict[str, Any] = Field(
        description=(
            "The assertion the account's passkey made for the request's options: the "
            "PublicKeyCredential of navigator.credentials.get({publicKey: options}) as JSON "
            "(id, rawId, type, response: {clientDataJSON, authenticatorData, signature, "
            "userHandle}, base64url)"
        )
    )


class HistoryRequest(KeyRequest):
    """`session.history`: a page of the key's records, oldest first."""

    after: int = Field(
        0,
        ge=0,
        le=MAX_VERSION,
        description="Records after this version: 0, or the previous page's `next`",
    )
    limit: int = Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Records per page")
    at: int | None = Field(
        None, ge=1, le=MAX_VERSION, description="Stop at this version (the session as it was)"
    )


class Emission(BaseModel):
    model_config = ConfigDict(frozen=True)


class SessionCreated(Emission):
    key: str
    message: CreatedMessage = CREATED_MESSAGE


class SessionQr(Emission):
    key: str
    qr: str = Field(description="PNG image as a data URI: data:image/png;base64,...")
    timeout: int = Field(description="Seconds until this code expires")


class SessionPairCode(Emission):
    key: str
    code: str = Field(description="Pairing code as WhatsApp shows it, e.g. ABCD-EFGH")
    timeout: int = Field(description="Seconds until this code expires")


class SessionPasskeyRequired(Emission):
    key: str
    options: dict[str, Any] = Field(
        description="WebAuthn PublicKeyCredentialRequestOptions as WhatsApp gives them "
        "(challenge and credential ids base64url): pass them to navigator.credentials.get"
    )
    timeout: int = Field(description="Seconds left to answer with session.passkey_response")


class SessionPasskeyFailed(Emission):
    """Sent just before `session.disconnected` when a pairing ends at the passkey step:
    the seed's reason (`session revoked`) says that it ended, this says why."""

    key: str
    cause: CauseValue = Field(
        description="passkey_unanswered: no answer in time; passkey_rejected: WhatsApp "
        "refused the answer"
    )


class SessionKey(Emission):
    """`session.authenticated` and `session.ready`."""

    key: str


class SessionDisconnected(Emission):
    key: str
    reason: ReasonValue


class SessionError(Emission):
    key: str | None
    code: ErrorCode
    message: str


def describe(session: DeviceSession) -> dict[str, Any]:
    """A session as acknowledgements and the HTTP API show it."""
    view: dict[str, Any] = {
        "key": session.key,
        "state": session.state.value,
        "name": session.name,
        "engine": session.engine,
    }
    if session.state is SessionState.DISCONNECTED and session.reason is not None:
        view["reason"] = session.reason.value
    return view


def history_reply(key: str, page: HistoryPage) -> dict[str, Any]:
    """A page of history as `session.history` and the HTTP API answer it."""
    return {"key": key, "events": page.events, "next": page.next}


class RequestRefused(Exception):
    """A payload that failed validation, with the protocol's error code."""

    def __init__(self, code: ErrorCode, message: str, key: str | None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.key = key


R = TypeVar("R", bound=Request)


def parse(model: type[R], data: Any) -> R:
    """Validate a client payload; RequestRefused(invalid_payload | invalid_key) if bad."""
    if not isinstance(data, dict):
        raise RequestRefused(
            "invalid_payload", f"payload must be a JSON object, not {_json_type(data)}", None
        )
    echo = echo_key(data)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        if all(p["loc"] == ("key",) and p["type"] in KEY_FORMAT_ERRORS for p in problems):
            raise RequestRefused("invalid_key", f"key must match {KEY_PATTERN}", echo) from None
        described = "; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in problems)
        raise RequestRefused("invalid_payload", described, echo) from None


def echo_key(data: Any) -> str | None:
    """The request's key as an error may quote it: a string, cut to the longest valid key."""
    key = data.get("key") if isinstance(data, dict) else None
    return key[:64] if isinstance(key, str) else None


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "payload"


def _json_type(data: Any) -> str:
    if data is None:
        return "null"
    return {str: "a string", list: "an array", bool: "a boolean"}.get(type(data), "a number")
