"""A person's download of the composite export, watermarked (``export_watermark``, issue
#18): who downloaded it and when, burned into the picture (recording/watermark.py), made
by a background job, never inside the download request.

Asking for the composite starts a job for that person's copy, or joins the one they
already have (one per person and session): the answer comes at once with the job's id,
its status URL and its progress (api_archive.py). The copy is made on the node that got
the request, by a worker thread at a lower priority than the event loop (as the export
jobs, export_jobs.py), ``export_watermark_workers`` at a time; at most
``export_watermark_queue`` jobs wait or run on a node (beyond: 503
``export_queue_full``) and ``export_watermark_per_person`` of one person's (429
``too_many_exports``). The render reports the share of frames done; the job's state
(status, percent, node, error) is kept in the store under ``wm-export:<key>``, written
at most twice a second while it changes and renewed every ``TOUCH_S``, so every node
answers its status; the state of a job whose node died lapses after ``ACTIVE_TTL_S``
and asking again starts a new one.

The copy is kept for ``KEEP_S`` (the download audit's ten minutes) under
``<export_watermark_dir>`` (default ``<data_dir>/watermarked/<session>/``: outside the
archive, never part of a case file), so a download resumed or repeated meanwhile (Range
requests) gets the same bytes, then removed. With several nodes, a node serves only a
copy it can read: point ``export_watermark_dir`` at storage every node shares (as the
archive) or the download answers 409 ``copy_on_other_node`` naming the node that has it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from recording.compose import Cancelled
from recording.watermark import burn

from . import background
from .appkeys import CONFIG, NODE_ID, SERVICE, STORE
from .directory import Directory
from .errors import ServiceError
from .export_jobs import lower_priority
from .models import Actor
from .state import Outage, Store, StoreUnavailable

log = logging.getLogger(__name__)

KEEP_S = 600.0  # as the download audit's dedup window (api_replay.AUDIT_DEDUP_S)
FAILED_KEEP_S = 300.0  # a failure is shown this long (asking again starts anew at once)
ACTIVE_TTL_S = 60.0  # a queued or running job's state lapses this long after its node died
TOUCH_S = 10.0  # a waiting job's state is renewed this often
PUBLISH_S = 0.5  # progress written to the store at most this often
DIR = "watermarked"
PREFIX = "wm-export:"

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
ACTIVE = (QUEUED, RUNNING)


class Refused(ServiceError):
    """Too many copies asked for: 429 (this person's) or 503 (this node's), to retry."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(code, message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class CopyJob:
    """One person's watermarked copy of one session's composite, as the store holds it."""

    job_id: str
    key: str
    case_id: str
    session_id: str
    sub: str
    node: str  # where it is (being) made
    text: str  # the watermark: 导出 · name · department · time
    created_at: float
    status: str = QUEUED
    progress: int = 0  # percent of the frames rendered
    error: str | None = None
    size: int | None = None
    done_at: float | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> CopyJob | None:
        if not doc:
            return None
        try:
            return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})
        except TypeError:
            return None

    @property
    def expires_at(self) -> float | None:
        return self.done_at + KEEP_S if self.done_at is not None else None


def key_of(session_id: str, sub: str) -> str:
    return hashlib.sha256(f"{session_id}\0{sub}".encode()).hexdigest()[:24]


def text_for(viewer: Actor, directory: Directory, when: float) -> str:
    """导出 · name · department · local time."""
    dept = directory.department(viewer.dept) if viewer.dept else None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    parts = ["导出", viewer.name or viewer.sub, dept.name if dept else viewer.dept, stamp]
    return " · ".join(p for p in parts if p)


class WatermarkCopies:
    """This node's queue of watermarked copies, its workers and its copies on disk."""

    def __init__(
        self,
        store: Store,
        root: Path,
        node_id: str,
        *,
        workers: int = 1,
        per_node: int = 8,
        per_person: int = 2,
        font: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.root = root
        self.node_id = node_id
        self.workers = max(1, workers)
        self.per_node = per_node
        self.per_person = per_person
        self.font = font
        self.clock = clock
        self._active: dict[str, CopyJob] = {}  # queued or running here, by key
        self._sources: dict[str, Path] = {}
        self._written: dict[str, tuple[int, str, float]] = {}  # key: (progress, status, at)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix="watermark", initializer=lower_priority
        )
        self.made: list[CopyJob] = []  # copies made here (tests, stats)
        # (jointreview.metrics) a job's end here: its outcome and seconds from its start
        self.observe: Callable[[str, float], None] | None = None

    def pending(self) -> int:
        """Copies queued or being made here."""
        return len(self._active)

    async def start(self) -> None:
        await asyncio.to_thread(_sweep, self.root, time.time())
        for n in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"watermark-{n}"))
        self._tasks.append(asyncio.create_task(self._publish_loop(), name="watermark-state"))

    async def close(self) -> None:
        """Stop: a render in progress stops at its next frame; the jobs' states lapse."""
        self._stopping = True
        await background.cancel_all(self._tasks)
        self._tasks.clear()
        self._pool.shutdown(wait=True)

    # -- asking ------------------------------------------------------------------------
    async def find(self, session_id: str, sub: str) -> CopyJob | None:
        """The person's job for the session (any node's), as the store holds it."""
        key = key_of(session_id, sub)
        return self._active.get(key) or CopyJob.from_doc(
            await self.store.get_ephemeral(PREFIX + key)
        )

    async def job(self, job_id: str) -> CopyJob | None:
        key = job_id.split(".", 1)[0]
        if len(key) != 24 or not all(c in "0123456789abcdef" for c in key):
            return None
        found = self._active.get(key) or CopyJob.from_doc(
            await self.store.get_ephemeral(PREFIX + key)
        )
        return found if found is not None and found.job_id == job_id else None

    def path_of(self, job: CopyJob) -> Path:
        return self.root / job.session_id / f"{job.key}.mp4"

    def ready_path(self, job: CopyJob) -> Path | None:
        """The job's copy if it is done and whole where this node can read it. Blocking."""
        if job.status != DONE:
            return None
        path = self.path_of(job)
        try:
            facts = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            if facts.get("job_id") == job.job_id and path.stat().st_size == facts.get("size"):
                return path
        except (OSError, ValueError, AttributeError):
            pass
        return None

    async def shown(self, session_id: str, sub: str) -> CopyJob | None:
        """The person's job as a page shows it: queued, running or failed; done only
        where this node can serve the copy (else asking again says why)."""
        job = await self.find(session_id, sub)
        if job is not None and job.status == DONE:
            return job if await asyncio.to_thread(self.ready_path, job) is not None else None
        return job

    async def request(
        self, case_id: str, session_id: str, source: Path, viewer: Actor, text: str
    ) -> CopyJob:
        """Start the person's copy, or give the job they have (queued, running, done and
        still kept; a failed one is started again)."""
        key = key_of(session_id, viewer.sub)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = await self.find(session_id, viewer.sub)
            if found is not None and found.status in ACTIVE:
                return found
            if found is not None and found.status == DONE:
                here = await asyncio.to_thread(self.ready_path, found)
                if here is not None or found.node != self.node_id:
                    return found  # (another node's: its download says where)
            self._check_room(viewer.sub)
            job = CopyJob(
                job_id=f"{key}.{secrets.token_hex(6)}",
                key=key,
                case_id=case_id,
                session_id=session_id,
                sub=viewer.sub,
                node=self.node_id,
                text=text,
                created_at=self.clock(),
            )
            if found is None and not await self.store.create_ephemeral(
                PREFIX + key, asdict(job), ACTIVE_TTL_S
            ):
                other = CopyJob.from_doc(await self.store.get_ephemeral(PREFIX + key))
                if other is not None:
                    return other  # another node started it a moment ago
            await self._write(job)
            self._active[key] = job
            self._sources[key] = source
            self._queue.put_nowait(key)
        if not lock.locked():
            self._locks.pop(key, None)
        return job

    def _check_room(self, sub: str) -> None:
        if sum(1 for j in self._active.values() if j.sub == sub) >= self.per_person:
            raise Refused(
                429,
                "too_many_exports",
                f"at most {self.per_person} watermarked exports of one person are made at "
                "once; wait for one to finish",
                30,
            )
        if len(self._active) >= self.per_node:
            raise Refused(
                503,
                "export_queue_full",
                f"this node is making {len(self._active)} watermarked exports already; "
                "ask again in a minute",
                60,
            )

    # -- the work ----------------------------------------------------------------------
    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = await self._queue.get()
            job, source = self._active.get(key), self._sources.get(key)
            if job is None or source is None:
                continue
            job.status = RUNNING
            began = time.monotonic()
            try:
                size = await loop.run_in_executor(self._pool, self._make, job, source)
                job.status, job.progress, job.size, job.done_at = DONE, 100, size, self.clock()
                self.made.append(job)
            except asyncio.CancelledError:
                raise
            except Cancelled:
                return  # closing
            except Exception as exc:
                log.exception("watermarked export %s failed", job.job_id)
                job.status, job.error = FAILED, str(exc) or type(exc).__name__
            if self.observe is not None:
                self.observe(job.status, time.monotonic() - began)
            self._active.pop(key, None)
            self._sources.pop(key, None)
            try:
                await self._write(job)
            except StoreUnavailable as exc:  # its state lapses; asked again, made again
                log.warning("watermarked export %s: its end not recorded: %s", job.job_id, exc)

    def _make(self, job: CopyJob, source: Path) -> int:
        """Render the copy (on the pool's thread); its size."""
        _sweep(self.root, time.time())
        path = self.path_of(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")

        def progress(share: float) -> None:
            job.progress = int(share * 100)  # read by the state loop: an int, no lock

        try:
            made = burn(source, part, job.text, self.font, progress=progress, cancelled=self._halt)
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        facts = {"job_id": job.job_id, "text": job.text, "size": made["size"]}
        facts.update(frames=made["frames"], wall_s=made["wall_s"])
        path.with_suffix(".json").write_text(json.dumps(facts, ensure_ascii=False), "utf-8")
        return int(made["size"])

    def _halt(self) -> bool:
        return self._stopping

    async def _write(self, job: CopyJob) -> None:
        if job.status == DONE:
            ttl = KEEP_S
        else:
            ttl = FAILED_KEEP_S if job.status == FAILED else ACTIVE_TTL_S
        await self.store.put_ephemeral(PREFIX + job.key, asdict(job), ttl)
        if job.status in ACTIVE:
            self._written[job.key] = (job.progress, job.status, time.monotonic())
        else:
            self._written.pop(job.key, None)

    async def _publish_loop(self) -> None:
        """The active jobs' progress into the store when it changed, and their state
        renewed (it lapses when this node dies)."""
        outage = Outage("watermarked exports' state", log)
        while True:
            await asyncio.sleep(PUBLISH_S)
            for job in list(self._active.values()):
                progress, status, at = self._written.get(job.key, (-1, "", 0.0))
                fresh = time.monotonic() - at < TOUCH_S
                if fresh and (progress, status) == (job.progress, job.status):
                    continue
                try:
                    await self._write(job)
                    outage.ok()
                except StoreUnavailable as exc:
                    outage.failed(exc)
                    break


def _sweep(root: Path, now: float) -> None:
    """Copies (and parts) older than KEEP_S go, by file time."""
    if not root.is_dir():
        return
    for old in root.glob("*/*"):
        try:
            if now - old.stat().st_mtime > KEEP_S + 60:
                old.unlink()
        except OSError:
            continue
    for folder in root.iterdir():
        with contextlib.suppress(OSError):
            folder.rmdir()  # only an empty one


WATERMARKS = web.AppKey("watermarks", WatermarkCopies)


async def watermark_ctx(app: web.Application) -> AsyncIterator[None]:
    """The node's watermarked copies (whether or not ``export_watermark`` is on: it may
    be turned on for a test; nothing runs until a copy is asked for)."""
    config = app[CONFIG]
    root = config.export_watermark_dir or config.data_dir / DIR
    copies = WatermarkCopies(
        app[STORE],
        Path(root),
        app[NODE_ID],
        workers=config.export_watermark_workers,
        per_node=config.export_watermark_queue,
        per_person=config.export_watermark_per_person,
        font=str(config.export_font) if config.export_font else None,
        clock=app[SERVICE].clock,
    )
    await copies.start()
    app[WATERMARKS] = copies
    yield
    await copies.close()
