"""A session's lifecycle as data: its states, the reasons it ends, the transition table,
and everything derived from the table (the state sets the application asks about, the
destination each recorded event leads to, the diagram in docs/architecture.md)."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Any, Protocol

from transitions import Machine


class SessionState(enum.StrEnum):
    CREATED = "created"
    QR = "qr"
    AUTHENTICATED = "authenticated"
    READY = "ready"
    DISCONNECTED = "disconnected"


class DisconnectReason(enum.StrEnum):
    """The seed's four reasons, byte for byte; nothing else reaches clients."""

    USER_LOGGED_OUT = "user logged out"
    QR_EXPIRED = "qr expired"
    CONNECTION_LOST = "connection lost"
    SESSION_REVOKED = "session revoked"

    @property
    def deletes_credentials(self) -> bool:
        """Every reason but a lost connection ends the link for good."""
        return self is not DisconnectReason.CONNECTION_LOST


class DisconnectCause(enum.StrEnum):
    """Why a pairing ended when no seed reason says it truthfully. An extension: it is
    recorded beside the reason and told in an event of its own, never in its place."""

    PASSKEY_UNANSWERED = "passkey_unanswered"  # WhatsApp asked for a passkey; none came
    PASSKEY_REJECTED = "passkey_rejected"  # one came, and WhatsApp refused it


S = SessionState

# The transition table, as data. It has no model: aggregates ask it what is allowed and
# then record an event, so replaying events never re-runs machine callbacks. Conditions
# name booleans of the aggregate or, for `disconnect`, of the reason it is given.
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "issue_qr", "source": [S.CREATED, S.QR], "dest": S.QR},
    # Pairing by phone number: a code to type on the phone, beside (or instead of) the QR.
    {"trigger": "issue_pair_code", "source": [S.CREATED, S.QR], "dest": S.QR},
    # After the phone accepted the scan, WhatsApp may ask for the account's passkey.
    {"trigger": "request_passkey", "source": S.QR, "dest": S.QR},
    {"trigger": "authenticate", "source": [S.CREATED, S.QR], "dest": S.AUTHENTICATED},
    {"trigger": "mark_ready", "source": S.AUTHENTICATED, "dest": S.READY},
    # A paired device whose connection dropped reconnects with its stored credentials.
    {
        "trigger": "mark_ready",
        "source": S.DISCONNECTED,
        "dest": S.READY,
        "conditions": "holds_credentials",
    },
    {
        "trigger": "disconnect",
        "source": [S.CREATED, S.QR, S.AUTHENTICATED, S.READY],
        "dest": S.DISCONNECTED,
    },
    # The owner may end, for good, a paired device that is offline (e.g. reconnecting);
    # it cannot lose a connection it does not have.
    {
        "trigger": "disconnect",
        "source": S.DISCONNECTED,
        "dest": S.DISCONNECTED,
        "conditions": ["holds_credentials", "deletes_credentials"],
    },
    {"trigger": "restart", "source": S.DISCONNECTED, "dest": S.CREATED},
]
INITIAL_STATE = S.CREATED
TRANSITION_TABLE = Machine(
    model=None,
    states=SessionState,
    initial=INITIAL_STATE,
    transitions=TRANSITIONS,
    auto_transitions=False,
)

Conditions = tuple[tuple[str, bool], ...]


@functools.cache
def _transitions(trigger: str, state: SessionState) -> tuple[tuple[SessionState, Conditions], ...]:
    """The table's transitions for `trigger` from `state`, as (destination, conditions):
    read once per pair, since `get_transitions` builds its lists anew on every call."""
    return tuple(
        (SessionState[str(t.dest)], tuple((str(c.func), bool(c.target)) for c in t.conditions))
        for t in TRANSITION_TABLE.get_transitions(trigger, state)
    )


class HasState(Protocol):
    @property
    def state(self) -> SessionState: ...


def allowed_destination(
    session: HasState, trigger: str, facts: Mapping[str, bool] | None = None
) -> SessionState | None:
    """The state `trigger` leads to from the session's state, or None if forbidden.
    A condition is read from `facts` (about the request) or else off the session."""
    for destination, conditions in _transitions(trigger, session.state):
        if all(_fact(session, name, facts) == wanted for name, wanted in conditions):
            return destination
    return None


@functools.cache
def destination(trigger: str, source: SessionState) -> SessionState:
    """Where an event recorded by `trigger` from `source` leads: what its `@event` body
    assigns, live and on replay (the conditions were checked when it was recorded)."""
    found = {dest for dest, _ in _transitions(trigger, source)}
    if len(found) != 1:
        raise ValueError(f"the table leads {trigger} from {source} to {found or 'nowhere'}")
    return found.pop()


def sources(trigger: str, *, unconditional: bool = False) -> frozenset[SessionState]:
    """The states `trigger` may leave (only those where nothing else is asked, if told)."""
    return frozenset(
        state
        for state in SessionState
        for _, conditions in _transitions(trigger, state)
        if not (unconditional and conditions)
    )


def destinations(trigger: str) -> frozenset[SessionState]:
    return frozenset(dest for state in SessionState for dest, _ in _transitions(trigger, state))


TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t["trigger"] for t in TRANSITIONS))
# Live: an engine is at work on it, and any reason may end it.
LIVE_STATES = sources("disconnect", unconditional=True)
# Being paired: a QR code (or pairing code) may be shown, and may expire.
PAIRING_STATES = sources("issue_qr")
# Where a pairing comes to rest: linked and online, or over (or offline). Events are rare
# from here on.
SETTLED_STATES = destinations("mark_ready") | destinations("disconnect")


def state_diagram() -> str:
    """The table as a Mermaid `stateDiagram-v2`: one arrow per source and destination,
    labelled with its triggers and their conditions, in the table's order."""
    arrows: dict[tuple[SessionState, SessionState], list[str]] = {}
    for state in SessionState:
        for trigger in TRIGGERS:
            for dest, conditions in _transitions(trigger, state):
                asked = ", ".join(name if wanted else f"not {name}" for name, wanted in conditions)
                arrows.setdefault((state, dest), []).append(
                    f"{trigger} [{asked}]" if asked else trigger
                )
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL_STATE.value}"]
    lines += [f"    {s.value} --> {d.value}: {' / '.join(t)}" for (s, d), t in arrows.items()]
    return "\n".join(lines) + "\n"


def _fact(session: HasState, name: str, facts: Mapping[str, bool] | None) -> bool:
    if facts is not None and name in facts:
        return facts[name]
    return bool(getattr(session, name))
