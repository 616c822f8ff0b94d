"""The lifecycle table is the only source of states and moves: event bodies, the state
sets the application asks about and the diagram in docs/architecture.md all follow it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from eventsourcing.persistence import StoredEvent

from domain.application.sessions import DeviceSessions
from domain.model.lifecycle import (
    LIVE_STATES,
    PAIRING_STATES,
    SETTLED_STATES,
    TRANSITIONS,
    DisconnectReason,
    SessionState,
    allowed_destination,
    state_diagram,
)
from domain.model.session import DeviceSession, session_id
from tests.docs import doc_block
from tests.unit.test_session import session_after

R = DisconnectReason
S = SessionState
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
Step = Callable[[DeviceSession], None]

COMMANDS: dict[str, Callable[[DeviceSession, DisconnectReason], None]] = {
    "issue_qr": lambda s, _: s.issue_qr("code", 60.0, NOW),
    "issue_pair_code": lambda s, _: s.issue_pair_code("ABCD-EFGH", 160.0, NOW),
    "authenticate": lambda s, _: s.authenticate(),
    "mark_ready": lambda s, _: s.mark_ready(),
    "disconnect": lambda s, reason: s.disconnect(reason),
    "restart": lambda s, _: s.restart("Phone 2", "simulator"),
}
PAIRED: list[Step] = [lambda s: s.authenticate(), lambda s: s.mark_ready()]
# Ways into each state, with and without credentials.
PATHS: dict[SessionState, list[list[Step]]] = {
    S.CREATED: [[]],
    S.QR: [[lambda s: s.issue_qr("code", 60.0, NOW)]],
    S.AUTHENTICATED: [PAIRED[:1]],
    S.READY: [PAIRED],
    S.DISCONNECTED: [
        [lambda s: s.disconnect(R.QR_EXPIRED)],
        [*PAIRED, lambda s: s.disconnect(R.CONNECTION_LOST)],
    ],
}


def rows() -> list[tuple[str, SessionState, SessionState]]:
    return [
        (t["trigger"], source, t["dest"])
        for t in TRANSITIONS
        for source in (t["source"] if isinstance(t["source"], list) else [t["source"]])
    ]


@pytest.mark.parametrize(("trigger", "source", "dest"), rows())
def test_every_event_body_enters_the_state_the_table_names(
    trigger: str, source: SessionState, dest: SessionState
) -> None:
    moved = 0
    for path in PATHS[source]:
        for reason in DisconnectReason:
            session = session_after(path)
            facts = {"deletes_credentials": reason.deletes_credentials}
            if allowed_destination(session, trigger, facts) is None:
                continue
            COMMANDS[trigger](session, reason)
            assert session.state is dest
            moved += 1
    assert moved, f"no path into {source} lets {trigger} through: the test misses a path"


def test_the_table_has_one_destination_per_trigger_and_source() -> None:
    destinations: dict[tuple[str, SessionState], set[SessionState]] = {}
    for trigger, source, dest in rows():
        destinations.setdefault((trigger, source), set()).add(dest)
    assert all(len(found) == 1 for found in destinations.values()), destinations


def test_the_state_sets_are_read_off_the_table() -> None:
    assert LIVE_STATES == {S.CREATED, S.QR, S.AUTHENTICATED, S.READY}
    assert PAIRING_STATES == {S.CREATED, S.QR}
    assert SETTLED_STATES == {S.READY, S.DISCONNECTED}


def test_an_offline_device_cannot_lose_its_connection_again_but_can_be_ended() -> None:
    offline = session_after(PATHS[S.DISCONNECTED][1])
    assert offline.offline_linked and offline.needs_an_engine
    for reason in DisconnectReason:
        wanted = reason.deletes_credentials
        facts = {"deletes_credentials": wanted}
        assert (allowed_destination(offline, "disconnect", facts) is not None) is wanted
    ended = session_after(PATHS[S.DISCONNECTED][0])
    assert not (ended.offline_linked or ended.needs_an_engine)


# Events as the store holds them, fields and all, written down when they were recorded:
# streams stored before destinations came from the table replay to the same sessions.
STORED = [
    ("SessionCreated", b'"originator_topic":"domain.model.session:DeviceSession","key":"device123","name":"My Device","engine":"baileys","owner":"alice"'),  # noqa: E501
    ("QrIssued", b'"code":"code-1","timeout":60.0,"expires_at":{"_type_":"datetime_iso","_data_":"2024-05-01T12:01:00+00:00"}'),  # noqa: E501
    ("PairCodeIssued", b'"code":"ABCD-EFGH","timeout":160.0,"expires_at":{"_type_":"datetime_iso","_data_":"2024-05-01T12:02:40+00:00"}'),  # noqa: E501
    ("Authenticated", b""),
    ("Ready", b""),
    ("Disconnected", b'"reason":"connection lost"'),
    ("Ready", b""),
    ("Disconnected", b'"reason":"session revoked"'),
    ("Restarted", b'"name":"Phone 2","engine":"simulator"'),  # before keys changed hands
    ("QrIssued", b'"code":"code-2","timeout":20.0,"expires_at":{"_type_":"datetime_iso","_data_":"2024-05-01T12:03:00+00:00"}'),  # noqa: E501
    ("Disconnected", b'"reason":"qr expired"'),
]  # fmt: skip
STATES_AFTER = [S.CREATED, S.QR, S.QR, S.AUTHENTICATED, S.READY, S.DISCONNECTED, S.READY]
STATES_AFTER += [S.DISCONNECTED, S.CREATED, S.QR, S.DISCONNECTED]


def test_events_stored_before_the_table_gave_destinations_still_replay() -> None:
    sessions = DeviceSessions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    stamp = b'"timestamp":{"_type_":"datetime_iso","_data_":"2024-05-01T12:00:00+00:00"}'
    sessions.recorder.insert_events(
        [
            StoredEvent(
                originator_id=session_id("device123"),
                originator_version=version,
                topic=f"domain.model.session:DeviceSession.{name}",
                state=b"{" + b",".join(part for part in (stamp, fields) if part) + b"}",
            )
            for version, (name, fields) in enumerate(STORED, start=1)
        ]
    )
    for version, state in enumerate(STATES_AFTER, start=1):
        session = sessions.repository.get(session_id("device123"), version=version)
        assert session.state is state, version
    final = sessions.repository.get(session_id("device123"))
    assert (final.reason, final.holds_credentials, final.owner) == (R.QR_EXPIRED, False, "alice")
    assert (final.name, final.engine, final.qr_code) == ("Phone 2", "simulator", None)


def test_the_architecture_document_draws_the_table() -> None:
    drawn = doc_block("lifecycle-diagram")  # docs/architecture.md's mermaid block
    assert drawn == state_diagram(), "regenerate it: pairgate lifecycle"
