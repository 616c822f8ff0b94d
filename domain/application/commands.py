"""Commands on a session, as the callables `DeviceSessions.update` applies."""

from __future__ import annotations

from collections.abc import Callable

from domain.model.session import DeviceSession, DisconnectCause, DisconnectReason, SessionState

Command = Callable[[DeviceSession], None]


def disconnect(reason: DisconnectReason, cause: DisconnectCause | None = None) -> Command:
    return lambda session: session.disconnect(reason, cause)


def disconnect_if(reason: DisconnectReason, states: frozenset[SessionState] | None) -> Command:
    """Disconnect only from `states` (any live state if None); otherwise record nothing."""

    def command(session: DeviceSession) -> None:
        if session.is_live and (states is None or session.state in states):
            session.disconnect(reason)

    return command
