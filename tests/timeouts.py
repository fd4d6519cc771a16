"""A hung test fails alone, with the stack of what it awaits, instead of hanging CI.

pytest-timeout's signal method never fires inside a uvloop test (uvloop runs Python
signal handlers only for the signals given to it), and its thread method ends the whole
run on the first hang with the threads' stacks, which for a test on an event loop only
show the loop waiting. Here, when a test overruns, every task of its event loop prints
its stack and is cancelled, so the test fails with the place it was stuck and the run
goes on; a loop that is blocked (or a test without one) falls back to the thread method.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
import pytest_timeout
import uvloop

# After the tasks are cancelled, how long the test has to unwind before the run is ended.
GRACE_S = 20.0

_loops: list[asyncio.AbstractEventLoop] = []


def _tracked(factory: Any) -> Any:
    def new_loop() -> asyncio.AbstractEventLoop:
        loop = factory()
        _loops[:] = [loop]
        return loop

    return new_loop


new_uvloop = _tracked(uvloop.new_event_loop)
new_asyncio_loop = _tracked(asyncio.new_event_loop)


def _cancel_everything(item: pytest.Item, timeout: float) -> None:
    """Runs on the test's loop: print where each task waits, then cancel it."""
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    print(
        f"\n+++ {item.nodeid}: over {timeout:g} s, cancelling {len(tasks)} tasks +++",
        file=sys.stderr,
    )
    for task in tasks:
        task.print_stack(limit=12, file=sys.stderr)
    for task in tasks:
        task.cancel(f"test timed out after {timeout:g} s")


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool:
    timers: list[threading.Timer] = []

    def last_resort() -> None:
        pytest_timeout.timeout_timer(item, settings)

    def overrun() -> None:
        loop = _loops[0] if _loops else None
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(_cancel_everything, item, settings.timeout)
            grace = threading.Timer(GRACE_S, last_resort)
            grace.daemon = True
            timers.append(grace)
            grace.start()
        else:
            last_resort()

    first = threading.Timer(settings.timeout, overrun)
    first.daemon = True
    first.name = f"timeout {item.nodeid}"
    timers.append(first)

    def cancel() -> None:
        for timer in list(timers):
            timer.cancel()

    item.cancel_timeout = cancel  # type: ignore[attr-defined]
    first.start()
    return True
