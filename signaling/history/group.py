"""Group commit: the events recorded meanwhile go to the database together.

Each ``submit`` waits until its item is committed (or failed). One writer task per
``GroupCommit`` takes every item queued so far and applies them in one call (one
transaction); items submitted while it writes make the next batch. Alone, an item costs
one transaction; under load, a transaction carries many (on SQLite a few tens of µs per
event instead of a few ms). Before each batch the writer lets the loop run once, so that
callers its last batch released, who often file their next event at once, join the next
batch: a wait of one turn of the loop, no timer. If a batch fails, its items are applied
one by one, so one bad item fails only its own caller. A caller that stops waiting
(cancelled) does not withdraw its item: it is still written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(self, apply: Callable[[list[T]], Awaitable[object]], most: int = 1000):
        self._apply = apply
        self._most = most
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        done = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="history-group-commit")
        await done

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while True:
            # One turn of the loop first: callers woken by the previous batch (and tasks
            # started with this one) file what they have next into this batch, instead
            # of each batch carrying only what arrived while the last one was written.
            await asyncio.sleep(0)
            if not self._queue:
                return
            batch, self._queue = self._queue[: self._most], self._queue[self._most :]
            try:
                await self._apply([item for item, _ in batch])
            except Exception:
                for item, done in batch:
                    await self._one(item, done)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _one(self, item: T, done: asyncio.Future[None]) -> None:
        try:
            await self._apply([item])
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
        else:
            if not done.done():
                done.set_result(None)
