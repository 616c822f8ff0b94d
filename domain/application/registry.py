"""What this process runs: each running key's engine and standing, whom it counts against,
and the caps those counts are held to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from domain.application.ports import WhatsAppEngine
from domain.application.sessions import DeviceSessions
from domain.model.errors import LimitReachedError
from domain.model.session import PAIRING_STATES, DeviceSession, SessionState


@dataclass(frozen=True, slots=True)
class Standing:
    """Whose a session is and where it stands: what a request about a key checks first."""

    owner: str
    state: SessionState


@dataclass(frozen=True)
class Caps:
    """0: no cap. `sessions`: live sessions per quota holder; `unpaired`: pairings under
    way in this process; `unpaired_per_owner`: pairings under way per owner (keys are one
    namespace, so one identity must not hold so many at once that others are locked out
    of theirs)."""

    sessions: int = 0
    unpaired: int = 0
    unpaired_per_owner: int = 0


class Registry:
    """The keys whose engine runs here. This process alone records their events, so their
    standing is known without reading the store, and its session is held in memory
    (`DeviceSessions.hold`) while it runs here."""

    def __init__(self, sessions: DeviceSessions, caps: Caps | None = None) -> None:
        self._sessions = sessions
        self._caps = caps or Caps()
        self._engines: dict[str, WhatsAppEngine] = {}
        self._standings: dict[str, Standing] = {}  # each running key's, as last saved
        # Whom each running key counts against (see `Requests.create`), and how many each has.
        self._holders: dict[str, str] = {}
        self._live_by_holder: Counter[str] = Counter()
        # Running keys still showing codes, with their owners, and how many each owner has
        # (a create checks the per-owner cap: a count, not a walk over every pairing).
        self._unpaired: dict[str, str] = {}
        self._unpaired_by_owner: Counter[str] = Counter()
        self.closing = False  # shutting down: no new sessions are started

    def __contains__(self, key: str) -> bool:
        return key in self._engines

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._engines)

    @property
    def states(self) -> dict[str, SessionState]:
        """Each running key's state as last saved."""
        return {key: standing.state for key, standing in self._standings.items()}

    def engine(self, key: str) -> WhatsAppEngine | None:
        """The engine running the key here, if it runs here."""
        return self._engines.get(key)

    def standing(self, key: str) -> Standing | None:
        return self._standings.get(key)

    def run(
        self, key: str, engine: WhatsAppEngine, session: DeviceSession, holder: str | None = None
    ) -> None:
        """Run the key's engine here. It counts against `holder` (its owner if None) until
        it stops running here."""
        self.unrun(key)
        self._engines[key] = engine
        self._standings[key] = Standing(session.owner, session.state)
        holder = self._holders[key] = holder or session.owner
        self._live_by_holder[holder] += 1
        if session.state in PAIRING_STATES:
            self._unpaired[key] = session.owner
            self._unpaired_by_owner[session.owner] += 1
        self._sessions.hold(session)

    def unrun(self, key: str) -> WhatsAppEngine | None:
        """Forget the key's engine (returned, if any): it no longer runs here."""
        self._paired(key)
        self._sessions.release(key)
        self._standings.pop(key, None)
        holder = self._holders.pop(key, None)
        if holder is not None:
            self._live_by_holder[holder] -= 1
            if not self._live_by_holder[holder]:
                del self._live_by_holder[holder]
        return self._engines.pop(key, None)

    def saved(self, key: str, session: DeviceSession) -> None:
        """The key's session as just saved."""
        state = session.state
        if key in self._engines:
            self._standings[key] = Standing(session.owner, state)
        if state not in PAIRING_STATES:
            self._paired(key)
        # A running key's session stays held (about 0.6 KB): a stop, or any command,
        # reads none of 100,000 streams (1 to 3 ms each). It is released when the key
        # stops running here.

    def _paired(self, key: str) -> None:
        """The key shows no codes any more (paired, ended, or no longer run here)."""
        owner = self._unpaired.pop(key, None)
        if owner is not None:
            self._unpaired_by_owner[owner] -= 1
            if not self._unpaired_by_owner[owner]:
                del self._unpaired_by_owner[owner]

    def check_room(self, key: str, owner: str, holder: str) -> None:
        """LimitReachedError if one more pairing for `owner`, counted against `holder`,
        would break a cap."""
        caps = self._caps
        if caps.unpaired_per_owner and self._unpaired_by_owner[owner] >= caps.unpaired_per_owner:
            raise LimitReachedError(
                f"this identity is pairing {caps.unpaired_per_owner} devices, the most it "
                "may at once (PAIRGATE_MAX_UNPAIRED_PER_IDENTITY); finish or delete one, "
                "or let its codes expire, first",
                key=key,
                retry_after=20.0,
            )
        if caps.sessions and self._live_by_holder[holder] >= caps.sessions:
            raise LimitReachedError(
                f"this identity (without tokens: this address) already has "
                f"{caps.sessions} live sessions, the most allowed "
                "(PAIRGATE_MAX_SESSIONS); log out or delete one first",
                key=key,
            )
        if caps.unpaired and len(self._unpaired) >= caps.unpaired:
            raise LimitReachedError(
                f"the server is pairing {caps.unpaired} devices, the most it allows "
                "at once (PAIRGATE_MAX_UNPAIRED); try again in a minute",
                key=key,
                retry_after=20.0,
            )
