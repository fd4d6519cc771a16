"""Background loops end when cancelled, even when the cancellation is swallowed."""

from __future__ import annotations

import asyncio
import contextlib

from signaling.background import stopping


async def _careless_call() -> None:
    # What a client library may do: turn a cancellation into an error of its own.
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        raise TimeoutError("the call timed out") from None


async def test_a_loop_ends_though_a_call_inside_it_swallowed_the_cancel() -> None:
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while not stopping():
            rounds += 1
            with contextlib.suppress(TimeoutError):  # counted as an outage: go round again
                await _careless_call()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait_for(task, 5)  # without stopping() the loop would never end
    assert rounds == 1


async def test_a_running_task_is_not_stopping() -> None:
    async def ask() -> bool:
        await asyncio.sleep(0)
        return stopping()

    assert not stopping()
    assert not await asyncio.create_task(ask())
