"""KeyTurns and EventBus: one key at a time, its deliveries after its lock, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from domain.application.dispatch import EventBus, KeyTurns

KEY = "device123"


class Said:
    """An event type for these tests: handlers note what they were handed."""

    def __init__(self, text: str) -> None:
        self.text = text


async def test_a_caller_cancelled_while_queued_still_has_its_events_delivered_in_order() -> None:
    heard: list[str] = []
    first_heard, proceed = asyncio.Event(), asyncio.Event()

    async def slow(key: str, event: Any) -> None:
        if event.text == "first":
            first_heard.set()
            await proceed.wait()
        heard.append(event.text)

    turns = KeyTurns(EventBus({Said: [slow]}))

    async def say(text: str) -> None:
        async with turns.turn(KEY) as outbox:
            outbox.publish([Said(text)])

    first = asyncio.ensure_future(say("first"))
    await asyncio.wait_for(first_heard.wait(), 5)
    second = asyncio.ensure_future(say("second"))
    await asyncio.sleep(0)  # queued behind the first
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert second.cancelled() and heard == []
    proceed.set()
    await first
    async with asyncio.timeout(5):
        while heard != ["first", "second"]:
            await asyncio.sleep(0.001)
    assert not turns.bus.pending(KEY)


async def test_only_the_keys_own_delivery_is_busy_on_it_once_its_lock_is_free() -> None:
    """What a handler awaits must not wait for the key's turn (the turn's delivery waits
    for the handler); another task, e.g. an engine reporting, may take the turn."""
    seen: dict[str, bool] = {}
    in_handler, checked = asyncio.Event(), asyncio.Event()
    turns = KeyTurns(EventBus())

    async def engine_task() -> None:
        await in_handler.wait()
        seen["another task"] = turns.busy(KEY)
        checked.set()

    async def handler(key: str, event: Any) -> None:
        seen["own key"] = turns.busy(KEY)
        seen["other key"] = turns.busy("other")
        in_handler.set()
        await checked.wait()

    turns.bus.register({Said: [handler]})
    reporting = asyncio.ensure_future(engine_task())
    async with turns.turn(KEY) as outbox:
        assert turns.busy(KEY)
        outbox.publish([Said("hello")])
    await reporting
    assert seen == {"own key": True, "other key": False, "another task": False}
    assert not turns.busy(KEY)


async def test_a_delivery_detached_behind_one_that_ends_before_it_starts_still_runs() -> None:
    """An engine's report queued (on a task of its own) behind a delivery that ends before
    that task first runs: the delivery ahead was waited for by no one when it ended, and
    the report's task must not wait for it for ever (the key would be stuck)."""
    bus = EventBus()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ran = asyncio.Event()

    async def ahead() -> None:
        await gate

    async def report() -> None:
        ran.set()

    first = asyncio.ensure_future(bus.run(KEY, [ahead]))
    await asyncio.sleep(0)  # the first delivery is under way, waiting on its gate
    gate.set_result(None)  # it ends at the loop's next turn...
    bus.detach(KEY, [report])  # ...before the task queued behind it first runs
    await first
    await asyncio.wait_for(ran.wait(), 5)
    assert not bus.pending(KEY)
