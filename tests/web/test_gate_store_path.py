"""The gate's store path (`web.gate.StorePath`): past its queue, a request waits for a place, in
arrival order, and is refused (`Busy`) only after its wait; a refusal at once would invite the
next request at once (tests/integration/test_gate_flood.py shows what that does to the server)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from appwarden.web.gate import Busy, Pacer, StorePath


async def _fill(path: StorePath, release: threading.Event) -> list[asyncio.Task[str]]:
    """Occupy every place (one worker, eight places) with work that holds until `release`."""

    def held() -> str:
        release.wait(5)
        return "held"

    tasks = [asyncio.create_task(path.run(held)) for _ in range(8)]
    await asyncio.sleep(0.05)
    return tasks


def test_a_full_store_path_makes_the_next_request_wait_for_a_place() -> None:
    async def scenario() -> tuple[list[str], str, float]:
        path = StorePath(1, wait=5.0)
        release = threading.Event()
        held = await _fill(path, release)
        started = time.monotonic()
        waiting = asyncio.create_task(path.run(lambda: "answered"))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # neither answered nor refused while the places are taken
        release.set()
        answered = await waiting
        path.stop()
        return [await t for t in held], answered, time.monotonic() - started

    held, answered, waited = asyncio.run(scenario())
    assert held == ["held"] * 8
    assert answered == "answered"
    assert 0.2 <= waited < 5.0


def test_a_request_is_refused_only_after_its_wait_and_waiters_go_in_arrival_order() -> None:
    async def scenario() -> tuple[float, list[str]]:
        path = StorePath(1, wait=0.4)
        release = threading.Event()
        held = await _fill(path, release)
        started = time.monotonic()
        with pytest.raises(Busy):
            await path.run(lambda: "never")
        refused_after = time.monotonic() - started
        order: list[str] = []
        first = asyncio.create_task(path.run(order.append, "first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(path.run(order.append, "second"))
        release.set()
        await asyncio.gather(first, second, *held)
        path.stop()
        return refused_after, order

    refused_after, order = asyncio.run(scenario())
    assert 0.4 * 0.5 <= refused_after <= 0.4 * 1.5 + 0.2  # the wait, with its spread
    assert order == ["first", "second"]


def test_the_pacer_takes_turns_and_refuses_a_turn_too_far_away() -> None:
    """Answers for unknown callers come one per interval; a caller whose turn is further away
    than the wait is refused after waiting, and takes no turn from those behind it."""

    async def scenario() -> list[str]:
        pacer = Pacer(per_second=20, wait=0.12)  # a turn every 50 ms, at most ~120 ms away

        async def ask() -> str:
            try:
                await pacer.turn()
            except Busy:
                return "busy"
            return "served"

        first = await asyncio.gather(*(ask() for _ in range(5)))
        return [*first, await ask()]

    outcomes = asyncio.run(scenario())
    # turns at 0, 50 and 100 ms are within the wait; the next two are not; once those turns have
    # passed, a new caller is served again
    assert outcomes == ["served", "served", "served", "busy", "busy", "served"]
