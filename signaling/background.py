"""Background loops (sweepers, dispatchers) that run for the node's lifetime.

They end when their task is cancelled at shutdown. A library may swallow that
cancellation on the way (a Redis call cancelled inside its own timeout can come back
as a timeout, which the loops count as an outage and carry on): the task stays marked
as cancelling, so each loop also checks ``stopping()`` before going round again, and a
shutdown never waits forever for it (seen once in CI: a sweeper that outlived its
cancel and hung the app's cleanup).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


def stopping() -> bool:
    """Whether the running task has been asked to stop, even if the CancelledError was
    lost on the way."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait for each to end, whatever it ends with (a worker's own
    error was logged where it happened; shutdown goes on)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
