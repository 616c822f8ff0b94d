"""Commands on a session, as the callables `DeviceSessions.update` applies."""

from __future__ import annotations

from collections.abc import Callable

from domain.model.session import DeviceSession, DisconnectReason, SessionState

S = SessionState
Command = Callable[[DeviceSession], None]


def needs_an_engine(session: DeviceSession) -> bool:
    """Live, or a paired device offline with its credentials: some process should run it."""
    return session.is_live or (session.state is S.DISCONNECTED and session.holds_credentials)


def disconnect(reason: DisconnectReason) -> Command:
    return lambda session: session.disconnect(reason)


def disconnect_if(reason: DisconnectReason, states: set[SessionState] | None) -> Command:
    """Disconnect only from `states` (any live state if None); otherwise record nothing."""

    def command(session: DeviceSession) -> None:
        if session.is_live and (states is None or session.state in states):
            session.disconnect(reason)

    return command
