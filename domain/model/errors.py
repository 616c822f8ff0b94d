"""Errors the domain raises. Each carries the protocol's error code."""

from __future__ import annotations


class DeviceSessionError(Exception):
    """Base class: a request the domain refuses. `code` is the `session.error` code."""

    code = "internal"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


class InvalidTransitionError(DeviceSessionError):
    """The transition table forbids this trigger in the session's current state."""

    code = "invalid_transition"

    def __init__(self, key: str, action: str, state: str) -> None:
        super().__init__(f"cannot {action} while the session is {state}", key=key)
        self.action = action
        self.state = state


class SessionNotFoundError(DeviceSessionError):
    """No such session, or (the same answer, so that nobody learns which keys exist)
    another identity's."""

    code = "not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"no session with key {key!r}", key=key)


class UnknownEngineError(DeviceSessionError):
    code = "unknown_engine"


class EngineUnavailableError(DeviceSessionError):
    code = "engine_unavailable"


class ProxyRefusedError(DeviceSessionError):
    """A pairing's proxy this server may not dial (at a private address, say)."""

    code = "invalid_payload"


class VersionOutOfRangeError(DeviceSessionError):
    code = "invalid_payload"

    def __init__(self, key: str, version: int, last: int, first: int = 1) -> None:
        super().__init__(
            f"session {key!r} has versions {first} to {last}; there is no version {version}",
            key=key,
        )


class InvalidPageError(DeviceSessionError):
    """A history page that cannot be read: a page size out of bounds."""

    code = "invalid_payload"


class LimitReachedError(DeviceSessionError):
    """A cap or rate limit refuses the request for now; `retry_after` seconds, if known."""

    code = "rate_limited"

    def __init__(
        self, message: str, *, key: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, key=key)
        self.retry_after = retry_after
