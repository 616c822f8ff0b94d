"""Engine reports saved in groups: one transaction for the reports of many keys.

A process that takes devices over starts their engines together, and they report back
together (a hundred `Ready` within a few milliseconds): saved one by one, each costs a
commit (a WAL flush, the log's table lock). Here a report that comes while others are
being saved waits for that save, then goes in one transaction with every other report
that came meanwhile (a group commit). Alone, a report is saved at once, as before; each
caller still holds its key's turn, so a key's reports keep their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from domain.application.sessions import Change
from domain.application.store_calls import StoreAccess
from domain.model.session import DeviceSession

Command = Callable[[DeviceSession], None]
_Waiting = tuple[str, Command, "asyncio.Future[Change]"]


class GroupedUpdates:
    def __init__(self, store: StoreAccess) -> None:
        self._store = store
        self._queue: list[_Waiting] = []
        self._saving: asyncio.Task[None] | None = None

    async def update(self, key: str, command: Command) -> Change:
        """`StoreAccess.update`, in a group with the others asked for meanwhile."""
        if not self._store.threaded:
            # Calls run on the loop, one after another: there is no "meanwhile".
            return await self._store.update(key, command)
        future: asyncio.Future[Change] = asyncio.get_running_loop().create_future()
        self._queue.append((key, command, future))
        if self._saving is None:
            self._saving = asyncio.create_task(self._save(), name="grouped-updates")
        return await future

    async def close(self) -> None:
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)

    async def _save(self) -> None:
        batch: list[_Waiting] = []
        try:
            while self._queue:
                batch = self._next_batch()
                if not batch:
                    continue
                commands = [(key, command) for key, command, _ in batch]
                try:
                    results = await self._store.read(self._store.sessions.update_each, commands)
                except Exception as failed:  # (the store's threads gone, say)
                    results = [failed] * len(batch)
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller gave up waiting (what was saved stays saved)
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            for _, _, future in [*batch, *self._queue]:  # cancelled: nobody is left waiting
                future.cancel()
            self._queue.clear()
            self._saving = None

    def _next_batch(self) -> list[_Waiting]:
        """The waiting updates of distinct keys (a key's next waits for the next batch),
        those whose callers still wait."""
        batch: list[_Waiting] = []
        later: list[_Waiting] = []
        keys: set[str] = set()
        for waiting in self._queue:
            key, _, future = waiting
            if future.done():
                continue
            (later if key in keys else batch).append(waiting)
            keys.add(key)
        self._queue = later
        return batch
