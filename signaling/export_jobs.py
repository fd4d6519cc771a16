"""Composite exports as background jobs: queued when a session's case file is sealed,
made by whichever node's worker claims them, announced in the case timeline.

The queue is the store's (``Store.job_*``): a Redis Stream with a consumer group when
nodes share Redis, so several workers share the load and a job has one holder at a time;
the journaled in-memory queue on a single node, whose worker resumes what a restart
interrupted. A worker touches its job while it renders; one that stops touching (its
node died) loses the job to another after ``LEASE_S``. The render runs on a thread of its
own at a lower priority than the event loop, so a node that also carries live media
keeps forwarding on time. A job done twice (a holder that died after finishing but
before acknowledging) is harmless: the export is found done and its event not repeated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from recording.compose import Cancelled, Options
from recording.export import COMPOSITE, export_session

from . import background, datadir
from .config import Config
from .core import EventHook, Floor, append_event, run_event_hooks
from .models import Event
from .replay import casefile_url
from .state import Job, Outage, Store, StoreUnavailable

log = logging.getLogger(__name__)

QUEUE = "exports"
LEASE_S = 60.0  # a job untouched this long is taken over (its worker died)
TOUCH_EVERY_S = 10.0
MAX_DELIVERIES = 5  # handed out this often without finishing (crashes): give it up
NICE = 10
LOCK = datadir.LOCK


def hold_data_dir(config: Config) -> IO[str] | None:
    """Single node: the lock a server holds on ``<data_dir>/state`` (its in-memory store),
    so that ``jointreview export`` knows not to write that store behind the server's
    back (``datadir.hold_data_dir``). None when another process holds it."""
    return datadir.hold_data_dir(config.data_dir)


def data_dir_free(config: Config) -> bool:
    fh = hold_data_dir(config)
    if fh is None:
        return False
    fh.close()
    return True


def options_from(config: Config, dept_names: dict[str, str] | None = None) -> Options:
    return Options(
        width=config.export_width,
        height=config.export_height,
        fps=config.export_fps,
        preset=config.export_preset,
        video_kbps=config.export_video_kbps,
        threads=config.export_threads,
        font=str(config.export_font) if config.export_font else None,
        dept_names=dict(dept_names or {}),
    )


def has_media(manifest: dict[str, Any]) -> bool:
    """Did the sealed session record anything to export?"""
    tracks = (manifest.get("recording") or {}).get("tracks") or []
    return any(
        t.get("state") in ("closed", "recovered_after_crash") and t.get("duration_s")
        for t in tracks
    )


async def record_ready(
    store: Store, case_id: str, session_id: str, made: dict[str, Any], floor: Floor | None = None
) -> Event | None:
    """Append ``export.ready`` to the case timeline unless this very file is there already
    (same shape as ``ServiceCore.record``). The event if it was recorded now."""
    key = f"case:{case_id}:events"
    for event in await store.read_log(key):
        data = event.get("data") or {}
        if (
            event.get("type") == "export.ready"
            and event.get("session_id") == session_id
            and data.get("sha256") == made["sha256"]
        ):
            return None
    data = {k: made.get(k) for k in ("path", "sha256", "size", "duration_s", "width", "height")}
    data.update(fps=made.get("fps"), kbps=made.get("kbps"))
    # Where the approval system (or anyone who may replay) fetches it: api_archive.
    data["url"] = casefile_url(session_id, str(data["path"]))
    return await append_event(
        store,
        case_id,
        "export.ready",
        ts=time.time(),
        session_id=session_id,
        data=data,
        floor=floor,
    )


def lower_priority() -> None:
    """Nice this thread only (Linux: a thread's own nice value; the encoder's threads
    it starts inherit it). Elsewhere the whole process would be niced: skip."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


class ExportWorker:
    """``workers`` export jobs at a time on this node, from the store's queue."""

    def __init__(
        self,
        store: Store,
        archive: Path,
        node_id: str,
        options: Options,
        *,
        workers: int = 1,
        delay_s: float = 10.0,
        lease_s: float = LEASE_S,
        touch_every_s: float = TOUCH_EVERY_S,
    ) -> None:
        self.store = store
        self.archive = archive
        self.node_id = node_id
        self.event_hooks: list[EventHook] = []
        # Where a case's log the live store forgot goes on numbering (the record's).
        self.floor: Floor | None = None
        self.options = options
        self.workers = workers
        # Why wait after sealing: the node has just closed a session and its neighbours
        # may be starting theirs; nobody waits for the export in those seconds.
        self.delay_s = delay_s
        self.lease_s = lease_s
        self.touch_every_s = touch_every_s
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max(1, workers), thread_name_prefix="export", initializer=lower_priority
        )
        self.done: list[dict[str, Any]] = []  # what this worker made (tests, stats)
        # (outcome, seconds) of each job run here: the node's metrics set it
        self.observe: Callable[[str, float], None] | None = None

    async def start(self) -> None:
        if self.workers and self.options.threads > 1:
            from recording.parallel import prepare

            await asyncio.to_thread(prepare)  # the forkserver: parts fork at once
        for n in range(self.workers):
            consumer = f"{self.node_id}/{n}"
            self._tasks.append(asyncio.create_task(self._run(consumer), name=f"export-{n}"))

    async def close(self) -> None:
        """Stop: a render in progress is cancelled and its job given back (unfinished:
        another worker, or this node after its restart, takes it up)."""
        self._closing = True
        await background.cancel_all(self._tasks)
        self._tasks.clear()
        self._pool.shutdown(wait=True)

    async def enqueue(self, case_id: str, session_id: str, delay_s: float | None = None) -> str:
        delay = self.delay_s if delay_s is None else delay_s
        return await self.store.job_enqueue(
            QUEUE,
            {
                "case_id": case_id,
                "session_id": session_id,
                "queued_at": time.time(),
                "not_before": time.time() + delay,
            },
        )

    async def sealed(self, case_id: str, session_id: str, manifest: dict[str, Any]) -> None:
        """The sealing hook (``RecordingControl.seal``): queue the session's export."""
        if has_media(manifest):
            await self.enqueue(case_id, session_id)

    # -- the worker loop ---------------------------------------------------------------
    async def _run(self, consumer: str) -> None:
        outage = Outage(f"export worker {consumer}", log)
        while not self._closing:
            try:
                job = await self.store.job_claim(
                    QUEUE, consumer, block_s=2.0, reclaim_idle_s=self.lease_s
                )
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                outage.failed(exc)
                await asyncio.sleep(2.0)
                continue
            except Exception:
                log.exception("claiming an export job failed")
                await asyncio.sleep(2.0)
                continue
            outage.ok()
            if job is not None:
                await self._do(consumer, job)

    async def _do(self, consumer: str, job: Job) -> None:
        case_id, session_id = str(job.data.get("case_id")), str(job.data.get("session_id"))
        stop = threading.Event()  # set: the render thread stops at its next frame
        lost = False

        async def keep() -> None:
            nonlocal lost
            while True:
                await asyncio.sleep(self.touch_every_s)
                try:
                    mine = await self.store.job_touch(QUEUE, consumer, job.id)
                except StoreUnavailable as exc:  # away for a moment: try again next time
                    log.warning("touching export job %s failed: %s", job.id, exc)
                    continue
                except Exception:
                    log.warning("touching export job %s failed", job.id, exc_info=True)
                    continue
                if not mine:
                    lost = True  # reclaimed by another worker: stop, it is theirs now
                    stop.set()
                    return

        keeper = asyncio.create_task(keep())
        began, outcome = 0.0, "failed"  # (set when the render starts)
        try:
            if job.deliveries > MAX_DELIVERIES:
                await self._failed(case_id, session_id, f"gave up after {job.deliveries - 1} tries")
                await self.store.job_ack(QUEUE, job.id)
                return
            wait = float(job.data.get("not_before") or 0) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            loop = asyncio.get_running_loop()
            began, outcome = time.monotonic(), "failed"
            made = await loop.run_in_executor(
                self._pool,
                lambda: export_session(
                    self.archive, case_id, session_id, self.options, cancelled=stop.is_set
                ),
            )
            event = await record_ready(self.store, case_id, session_id, made, self.floor)
            if event is not None:
                # The same hooks as every recorded event (the export.ready webhook).
                await run_event_hooks(self.event_hooks, event)
            await self.store.job_ack(QUEUE, job.id)
            self.done.append(made)
            outcome = "ready"
            log.info("exported %s/%s: %s", case_id, session_id, made.get("absolute"))
        except asyncio.CancelledError:
            outcome = "released"
            stop.set()  # closing: the thread stops at its next frame; give the job back
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.job_release(QUEUE, consumer, job.id))
            raise
        except Cancelled:
            outcome = "released"
            if not lost:
                await self.store.job_release(QUEUE, consumer, job.id)
        except Exception as exc:
            log.exception("exporting %s/%s failed", case_id, session_id)
            await self._failed(case_id, session_id, str(exc) or type(exc).__name__)
            await self.store.job_ack(QUEUE, job.id)
        finally:
            keeper.cancel()
            stop.set()
            if began and self.observe is not None:
                self.observe(outcome, time.monotonic() - began)

    async def _failed(self, case_id: str, session_id: str, message: str) -> None:
        # Through the hooks like export.ready: into the record (else the case's log is
        # never trimmed) and to the webhooks.
        event = await append_event(
            self.store,
            case_id,
            "export.failed",
            ts=time.time(),
            session_id=session_id,
            data={"path": COMPOSITE, "message": message},
            floor=self.floor,
        )
        await run_event_hooks(self.event_hooks, event)


EXPORTS = web.AppKey("exports", ExportWorker)
