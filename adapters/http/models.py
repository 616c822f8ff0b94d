"""The HTTP API's bodies as pydantic models: requests are validated with them, and the
OpenAPI document (adapters.http.openapi) describes every body with them.

Requests reuse the Socket.IO payloads (adapters.payloads), so a key, a name or a phone
number is checked by one rule on both faces.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adapters import payloads
from domain.application.ports import (
    CURSOR_ALPHABET,
    LIST_PAGE_SIZE,
    MAX_CURSOR_LENGTH,
    MAX_LIST_PAGE_SIZE,
    MAX_SEARCH_LENGTH,
)

# Codes only HTTP answers with: no or a bad token, a Host not served, and "there is no
# code on show" (a session that exists, but not pairing).
HttpOnlyCode = Literal["unauthorized", "invalid_host", "no_code"]
if TYPE_CHECKING:
    HttpErrorCode = str
else:
    HttpErrorCode = Literal[(*payloads.ERROR_CODES, *get_args(HttpOnlyCode))]

# Cursors are made by the sessions index: URL-safe, bounded.
Cursor = Annotated[
    str,
    StringConstraints(
        pattern=f"^[{CURSOR_ALPHABET}]+$", min_length=1, max_length=MAX_CURSOR_LENGTH
    ),
]

# A prefix of a key or a name: printable characters, as a name has.
Search = Annotated[
    str,
    StringConstraints(
        pattern=r"^[^\x00-\x1f\x7f-\x9f]+$", min_length=1, max_length=MAX_SEARCH_LENGTH
    ),
]


class Refusal(BaseModel):
    code: HttpErrorCode
    message: str
    retry_after: float | None = Field(
        None, description="Seconds until a retry can succeed (429 only; also Retry-After)"
    )


class ErrorReply(BaseModel):
    """Every refusal: the same shape as a Socket.IO acknowledgement's."""

    ok: Literal[False]
    error: Refusal


class PairCodeRequest(payloads.Request):
    """Ask for a pairing code: the user types it on the phone (Link with phone number)."""

    phone: payloads.Phone


class SessionQuery(payloads.Request):
    at: int | None = Field(
        None, ge=1, le=payloads.MAX_VERSION, description="The session right after this version"
    )


class ListQuery(payloads.Request):
    state: payloads.StateValue | None = Field(None, description="Only sessions in this state")
    engine: payloads.EngineName | None = Field(None, description="Only sessions of this engine")
    after: Cursor | None = Field(None, description="The previous page's `next`")
    limit: int = Field(LIST_PAGE_SIZE, ge=1, le=MAX_LIST_PAGE_SIZE, description="Rows per page")
    q: Search | None = Field(
        None,
        description="Only sessions whose key or name starts with this (case-sensitive); "
        "with PAIRGATE_CIPHER_KEY (keys and names encrypted at rest) only the key equal to it",
    )


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: Literal[True]


class SessionView(Reply):
    """A session as a request left it (or as it was at version `at`)."""

    key: str
    state: payloads.StateValue
    name: str
    engine: str
    reason: payloads.ReasonValue | None = Field(None, description="Only when disconnected")
    version: int = Field(
        description="The session's version: its number of recorded events since the event "
        "that gave the key to its owner (1)"
    )


class CreatedView(SessionView):
    joined: bool = Field(description="True (status 200): the request joined a live session")


class SessionRowView(BaseModel):
    """A session in a list, as of its last recorded event."""

    model_config = ConfigDict(extra="forbid")

    key: str
    name: str
    engine: str
    state: payloads.StateValue
    reason: payloads.ReasonValue | None
    version: int
    updated_at: datetime


class SessionListView(Reply):
    """The caller's sessions, most recently changed first."""

    sessions: list[SessionRowView]
    next: str | None = Field(description="`after` for the next page; null: the last page")


class QrView(Reply):
    """The QR code on show (`session.qr`'s payload, with its deadline)."""

    key: str
    qr: str = Field(description="PNG image as a data URI: data:image/png;base64,...")
    timeout: int = Field(description="Seconds until this code expires")
    expires_at: datetime


class PairCodeView(Reply):
    """The pairing code on show (`session.pair_code`'s payload, with its deadline)."""

    key: str
    code: str = Field(description="As WhatsApp shows it, e.g. ABCD-EFGH")
    timeout: int = Field(description="Seconds until this code expires")
    expires_at: datetime


class HistoryView(Reply):
    """A page of the key's recorded events, oldest first (as session.history answers)."""

    key: str
    events: list[dict[str, Any]] = Field(
        description="{version, type, timestamp, state, ...the event's fields}; QR texts "
        "appear as a 12-hex-digit fingerprint"
    )
    next: int | None = Field(
        description="`after` for the next page; null: this page reaches the last version (or `at`)"
    )
