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


def stopping() -> bool:
    """Whether the running task has been asked to stop, even if the CancelledError was
    lost on the way."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
