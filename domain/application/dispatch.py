"""One key at a time: its lock, and the recorded events handed to their handlers after it.

A use case takes the key's turn (`KeyTurns.turn`), records what it decides and notes in
the turn (its outbox) what the key's followers must hear. When the lock is released the
outbox goes to the `EventBus`, which runs it after anything the key had queued before:
a slow consumer never holds the key's lock, yet each consumer sees a key's events in the
order they were recorded. This runs for every recorded event, so it is kept lean: the
usual delivery, with nothing ahead of it, makes no task and no future.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol

log = logging.getLogger(__name__)

Event = DomainEventProtocol[UUID]
# A handler is a coroutine function, or a plain function when it has nothing to await
# (it then costs no coroutine per event: this runs for every event recorded).
Handler = Callable[[str, Event], Awaitable[None] | None]
Handlers = Mapping[type, Sequence[Handler]]  # an event type → what handles it, in order
Step = Callable[[], Awaitable[None]]
_delivering: ContextVar[str | None] = ContextVar("delivering", default=None)


class _Delivery:
    """A key's delivery under way; `done` is made only when another waits for it. A
    waiter may come after the end: a task queued behind it first runs at a later turn of
    the loop, by which time the delivery may have ended with no one waiting."""

    __slots__ = ("done", "finished")

    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None
        self.finished = False

    def wait(self) -> Awaitable[None]:
        if self.done is None:
            self.done = asyncio.get_running_loop().create_future()
            if self.finished:
                self.done.set_result(None)
        return asyncio.shield(self.done)  # a cancelled waiter leaves it for the others

    def finish(self) -> None:
        self.finished = True
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


class EventBus:
    """Runs each recorded event's handlers (those of its type and its base types), and
    keeps each key's deliveries in the order they were queued."""

    def __init__(self, handlers: Handlers | None = None) -> None:
        self._handlers: dict[type, list[Handler]] = {}
        self._by_type: dict[type, tuple[Handler, ...]] = {}
        self._tails: dict[str, _Delivery] = {}  # each key's last delivery
        self._detached: set[asyncio.Task[None]] = set()
        self.register(handlers or {})

    def register(self, handlers: Handlers) -> None:
        """Add handlers, after those already registered for the same type."""
        for kind, more in handlers.items():
            self._handlers.setdefault(kind, []).extend(more)
        self._by_type.clear()

    def handlers_of(self, kind: type) -> tuple[Handler, ...]:
        found = self._by_type.get(kind)
        if found is None:
            found = tuple(h for base in kind.__mro__ for h in self._handlers.get(base, ()))
            self._by_type[kind] = found
        return found

    async def deliver(self, key: str, events: Sequence[Event]) -> None:
        """Hand each event to its handlers. A handler's failure is logged: the events are
        saved whatever a consumer makes of them."""
        for event in events:
            for handler in self._by_type.get(type(event)) or self.handlers_of(type(event)):
                try:
                    pending = handler(key, event)
                    if pending is not None:
                        await pending
                except Exception:
                    log.exception(
                        "a handler of %s's %s failed", key, type(event).__name__, extra={"key": key}
                    )

    def pending(self, key: str) -> bool:
        """Whether some of the key's deliveries are queued or under way."""
        return key in self._tails

    def delivering(self, key: str) -> bool:
        """Whether the caller is one of the key's deliveries (a handler, or what it awaits):
        it must not wait for the key's turn, whose deliveries wait for it."""
        return _delivering.get() == key

    async def run(self, key: str, steps: Sequence[Step]) -> None:
        """Run `steps` in the caller's task once the key's earlier deliveries are done."""
        ahead = self._tails.get(key)
        this = self._tails[key] = _Delivery()
        if ahead is not None:
            try:
                await ahead.wait()
            except asyncio.CancelledError:
                # The caller gave up waiting; what was recorded still goes out, in order.
                self._detach(self._after(ahead, key, steps, this))
                raise
        await self._steps(key, steps, this)

    def detach(self, key: str, steps: Sequence[Step]) -> None:
        """Queue `steps` after the key's earlier deliveries, on a task of their own."""
        ahead = self._tails.get(key)
        this = self._tails[key] = _Delivery()
        if ahead is None:
            self._detach(self._steps(key, steps, this))
        else:
            self._detach(self._after(ahead, key, steps, this))

    def _detach(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(work)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    async def _after(
        self, ahead: _Delivery, key: str, steps: Sequence[Step], this: _Delivery
    ) -> None:
        try:
            await ahead.wait()
        finally:
            await self._steps(key, steps, this)

    async def _steps(self, key: str, steps: Sequence[Step], this: _Delivery) -> None:
        token = _delivering.set(key)
        try:
            for step in steps:
                await step()
        finally:
            _delivering.reset(token)
            this.finish()
            if self._tails.get(key) is this:
                del self._tails[key]


class KeyTurns:
    """Per-key locks (gone with their last user) whose outboxes reach the bus on release."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def turn(self, key: str, *, await_delivery: bool = True) -> Turn:
        """The key's turn. `await_delivery=False`: the caller (an engine reporting) does not
        wait for its events' delivery when other deliveries are ahead of it (one of which
        may be waiting for that caller, e.g. an engine's teardown)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return Turn(self.bus, key, lock, await_delivery)

    def busy(self, key: str) -> bool:
        """Whether the caller would wait for the key's turn: some use case holds its lock,
        or the caller is one of the key's deliveries (which the turn's own would wait for)."""
        lock = self._locks.get(key)
        return (lock is not None and lock.locked()) or self.bus.delivering(key)


class Turn:
    """`async with turns.turn(key) as outbox:` the key's lock, and what its followers are
    to hear once it is released, in order: delivered even when the block raises (what it
    saved stays saved)."""

    __slots__ = ("_bus", "_key", "_lock", "_await_delivery", "steps")

    def __init__(self, bus: EventBus, key: str, lock: asyncio.Lock, await_delivery: bool) -> None:
        self._bus = bus
        self._key = key
        self._lock = lock
        self._await_delivery = await_delivery
        self.steps: list[Step] = []

    def publish(self, events: Sequence[Event]) -> None:
        if events:
            self.steps.append(functools.partial(self._bus.deliver, self._key, events))

    def then(self, step: Step) -> None:
        self.steps.append(step)

    async def __aenter__(self) -> Turn:
        await self._lock.acquire()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
        if not self.steps:
            return
        if self._await_delivery or not self._bus.pending(self._key):
            await self._bus.run(self._key, self.steps)
        else:
            self._bus.detach(self._key, self.steps)


Outbox = Turn  # what a use case is handed inside its turn
