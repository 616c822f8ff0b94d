"""What a client may read about a key: its own sessions only, and nothing that tells
another identity's keys from missing ones."""

from __future__ import annotations

from domain.application.history import PAGE_SIZE, HistoryPage, history_page
from domain.application.registry import Registry, Standing
from domain.application.store_calls import StoreAccess
from domain.model.errors import SessionNotFoundError, VersionOutOfRangeError
from domain.model.session import DeviceSession


class Reads:
    def __init__(self, store: StoreAccess, registry: Registry) -> None:
        self._store = store
        self._sessions = store.sessions
        self._registry = registry

    async def find(self, key: str) -> DeviceSession | None:
        return await self._store.find(key)

    async def state(self, key: str, owner: str, at: int | None = None) -> DeviceSession:
        """The session now, or right after its event number `at` (of the owner's tenure)."""
        session = await self.owned(key, owner, at)
        if at is None:
            return session
        return await self._store.read(self._sessions.state_at, key, session.stored_version(at))

    async def history(
        self,
        key: str,
        owner: str,
        at: int | None = None,
        *,
        after: int = 0,
        limit: int = PAGE_SIZE,
    ) -> HistoryPage:
        """One page of the key's records since its owner took the key, numbered from
        there (see domain.application.history.history_page)."""
        session = await self.owned(key, owner, at)
        # Up to the version whose owner was checked: the key may change hands meanwhile.
        last = session.tenure_version if at is None else at
        sessions, tenure_from = self._sessions, session.tenure_from

        def history() -> HistoryPage:  # its name labels the store call in the metrics
            page = history_page
            return page(sessions, key, after=after, limit=limit, at=last, tenure_from=tenure_from)

        return await self._store.read(history)

    async def standing_for(self, key: str, owner: str) -> Standing | None:
        """The key's standing if it is `owner`'s; None, at the same cost, if the key is
        missing or another identity's."""
        running = self._registry.standing(key)
        if running is None:
            running = await self.standing(key)
        elif running.owner != owner:
            await self._as_costly_as_a_missing_key(key)
        return running if running is not None and running.owner == owner else None

    async def standing(self, key: str) -> Standing | None:
        """The key's owner and state (None: no such session). Known without reading the
        store for the devices this process runs, since it alone records their events."""
        if (running := self._registry.standing(key)) is not None:
            return running
        session = await self.find(key)
        return None if session is None else Standing(session.owner, session.state)

    async def owned(self, key: str, owner: str, at: int | None = None) -> DeviceSession:
        """The owner's session; `at`, if given, must be one of the owner's versions (which
        count from 1 at the event that gave them the key: DeviceSession.tenure_version)."""
        session = await self._store.call(self._sessions.get, key)
        await self.check_owner(session, owner)
        if at is not None and not 1 <= at <= session.tenure_version:
            raise VersionOutOfRangeError(key, at, session.tenure_version)
        return session

    async def check_owner(self, session: DeviceSession, owner: str, *, claim: bool = False) -> None:
        """Another identity's key reads exactly as a missing one, so nobody learns which
        keys exist. Creating (`claim`) may take over a key that ended holding nothing."""
        if session.owner == owner or (claim and session.claimable):
            return
        if self._sessions.holds(session.key):
            await self._as_costly_as_a_missing_key(session.key)
        raise SessionNotFoundError(session.key)

    async def _as_costly_as_a_missing_key(self, key: str) -> None:
        """A missing key is answered after a read of the store; a key known from memory
        would be refused sooner, and the time would tell that it exists."""
        await self._store.call(self._sessions.stored, key)
