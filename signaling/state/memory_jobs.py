"""The memory store's job queues (``MemoryStore``'s part for them).

Journaled like everything durable (added, handed out, acknowledged); who holds a job is
not: after a restart no worker of the old process is alive, so every unfinished job can
be claimed again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

from .base import Doc, Job


class JobQueues:
    # The store's own, set up by ``MemoryStore``.
    _jobs: dict[str, dict[str, dict[str, Any]]]
    _job_serial: int
    _job_wake: dict[str, asyncio.Event]

    def _write(self, op: dict[str, Any]) -> None:
        raise NotImplementedError

    def _wake(self, queue: str) -> asyncio.Event:
        event = self._job_wake.get(queue)
        if event is None:
            event = self._job_wake[queue] = asyncio.Event()
        return event

    async def job_enqueue(self, queue: str, data: Doc) -> str:
        self._job_serial += 1
        job_id = f"{int(time.time() * 1000)}-{self._job_serial}"
        stored = copy.deepcopy(data)
        self._write({"op": "job", "k": queue, "id": job_id, "d": stored})
        self._jobs.setdefault(queue, {})[job_id] = {"data": stored, "n": 0, "by": None, "at": 0.0}
        self._wake(queue).set()
        return job_id

    def _take(self, queue: str, consumer: str, reclaim_idle_s: float) -> Job | None:
        jobs = self._jobs.get(queue, {})
        now = time.monotonic()
        # A silent holder's job first (as Redis' XAUTOCLAIM), then new ones in order.
        picked = next(
            (i for i, j in jobs.items() if j["by"] is not None and now - j["at"] >= reclaim_idle_s),
            None,
        )
        if picked is None:
            picked = next((i for i, j in jobs.items() if j["by"] is None), None)
        if picked is None:
            return None
        job = jobs[picked]
        self._write({"op": "jobtry", "k": queue, "id": picked})
        job.update(by=consumer, at=now, n=job["n"] + 1)
        return Job(picked, copy.deepcopy(job["data"]), job["n"])

    async def job_claim(
        self, queue: str, consumer: str, *, block_s: float = 0.0, reclaim_idle_s: float = 60.0
    ) -> Job | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_s
        while True:
            job = self._take(queue, consumer, reclaim_idle_s)
            left = deadline - loop.time()
            if job is not None or left <= 0:
                return job
            wake = self._wake(queue)
            wake.clear()
            # Woken by a new or released job; a silent holder's job needs time to pass.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(left, max(0.05, reclaim_idle_s / 2)))

    async def job_touch(self, queue: str, consumer: str, job_id: str) -> bool:
        job = self._jobs.get(queue, {}).get(job_id)
        if job is None or job["by"] != consumer:
            return False
        job["at"] = time.monotonic()
        return True

    async def job_release(self, queue: str, consumer: str, job_id: str) -> None:
        job = self._jobs.get(queue, {}).get(job_id)
        if job is not None and job["by"] == consumer:
            job["by"] = None
            self._wake(queue).set()

    async def job_ack(self, queue: str, job_id: str) -> None:
        if job_id in self._jobs.get(queue, {}):
            self._write({"op": "jobdone", "k": queue, "id": job_id})
            self._jobs[queue].pop(job_id, None)

    async def job_count(self, queue: str) -> int:
        return len(self._jobs.get(queue, {}))
