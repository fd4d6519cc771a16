"""The audit trail: every security-relevant act, hash-chained, one append-only file a
UTC day under ``<data_dir>/audit/<chain>/`` (dir 0700, files 0600).

An entry is one canonical JSON line (``recording.archive.canonical``: sorted keys, no
spaces, UTF-8) with ``seq`` (1, 2, … across days), ``ts`` (ISO-8601 UTC) and ``t``
(epoch seconds), ``node``, ``actor`` (``{sub, name, role, dept}`` or null), ``address``,
``action``, ``object``, ``result`` (``ok``/``refused``/``failed``), ``code``, ``detail``,
``prev`` and ``hash``. As the case timeline (``recording.archive.chain``)::

    hash = SHA-256(prev + canonical(entry without prev and hash))
    prev of seq 1 = SHA-256("jointreview-audit:<chain>")

and a day file's first ``prev`` is the previous day's last ``hash``. ``jointreview
verify --audit`` (``audit_verify``) recomputes it all.

Writing never blocks a request: ``record`` puts the entry on a bounded queue, and one
writer task hashes and appends in batches (``write`` + ``fsync`` per batch, in a
thread). A full queue drops the entry and counts it; the next batch carries an
``audit.dropped`` entry with the count, so a flood costs entries visibly, never the
chain. A kill -9 loses what was still queued (at most the last batch's worth, in
practice milliseconds of entries); a written batch survives it, and an fsynced one
survives a power cut.

The chain's directory is named after ``node_id`` (or the host name), so it continues
across restarts; a lock file keeps a second live process out (it gets ``<name>-<pid>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recording.archive import canonical

from .audit_limit import Coalescer
from .auth import Identity
from .models import Event

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000  # entries waiting for the writer; beyond: dropped and counted
BATCH_MAX = 500  # entries one write carries
TOKENS_SEEN_MAX = 10_000  # tokens remembered for "first use" (auth.signin.token)
TEXT_MAX = 200  # characters of any one string taken from a request
FILE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
NAME_RE = re.compile(r"[^A-Za-z0-9._-]")
# Those that are the very act of the request that caused them: no second, generic entry.
# (An admin's POST .../end that stops a recording keeps its admin.request.)
ACTS = frozenset({"replay.viewed", "replay.downloaded", "casefile.downloaded", "exception.handled"})
# Case-timeline events that are security-relevant acts: mirrored into the trail.
MIRRORED = ACTS | {"applicant_link.created", "recording.started", "recording.stopped"}


def genesis(chain: str) -> str:
    return hashlib.sha256(f"jointreview-audit:{chain}".encode()).hexdigest()


def entry_hash(prev: str, body: dict[str, Any]) -> str:
    """``body``: the entry without ``prev`` and ``hash``."""
    return hashlib.sha256((prev + canonical(body)).encode("utf-8")).hexdigest()


def day_of(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d")


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def clip(value: Any) -> Any:
    """Request-supplied text, bounded (JSON escapes control characters)."""
    if isinstance(value, str):
        return value if len(value) <= TEXT_MAX else value[:TEXT_MAX] + "…"
    if isinstance(value, dict):
        return {clip(str(k)): clip(v) for k, v in list(value.items())[:32]}
    if isinstance(value, list | tuple):
        return [clip(v) for v in list(value)[:32]]
    return value


def actor_dict(who: Identity | Any | None) -> dict[str, Any] | None:
    if who is None:
        return None
    return {k: clip(getattr(who, k, None)) for k in ("sub", "name", "role", "dept")}


# The request being handled (set by the audit middleware): its client address, and
# whether a specific entry was written for it already.
CURRENT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "audit_request", default=None
)


# -- the chain (sans-IO) -------------------------------------------------------------------


@dataclass
class Chain:
    """The head of one chain: the next entry's ``seq`` and ``prev``."""

    name: str
    seq: int = 0
    head: str = ""
    day: str = ""  # the newest day file written: never go back to an older one

    def __post_init__(self) -> None:
        self.head = self.head or genesis(self.name)

    def link(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` (without seq/prev/hash) made the next entry."""
        self.seq += 1
        body = dict(body, seq=self.seq)
        entry = dict(body, prev=self.head, hash=entry_hash(self.head, body))
        self.head = entry["hash"]
        return entry


def scan_tail(path: Path, window: int = 1 << 20) -> tuple[dict[str, Any] | None, bytes]:
    """The last whole entry of a day file, and the torn bytes after it (a write a crash
    cut short), if any. Reads the last ``window`` bytes, or all if needed. Blocking I/O."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - window))
        data = fh.read()
    torn = b""
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        data, torn = data[:cut], data[cut:]
    for line in reversed(data.splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # mangled: verify says where; the chain goes on from the last whole one
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and entry.get("hash"):
            return entry, torn
    if size > window:
        return scan_tail(path, size + 1)
    return None, torn


def day_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if FILE_RE.match(p.name))


# -- the writer ----------------------------------------------------------------------------


@dataclass
class _Item:
    body: dict[str, Any]
    done: asyncio.Future[None] | None = None


class AuditTrail:
    """One node's chain: a bounded queue, a writer task, and the retention job."""

    def __init__(
        self,
        root: Path,
        node: str,
        chain_name: str,
        *,
        retention_days: int = 180,
        queue_max: int = QUEUE_MAX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root  # <data_dir>/audit
        self.node = node  # app[NODE_ID], written into every entry
        self.chain_name = chain_name  # the directory: stable across restarts
        self.retention_days = retention_days
        self.queue_max = queue_max
        self.clock = clock
        self.dropped = 0  # entries refused by a full queue, not yet reported
        self.chain = Chain(chain_name)
        self.directory = root / chain_name
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._closing = False
        self._seen: dict[str, None] = {}  # token digests, oldest first
        self.coalescer = Coalescer()
        self._retention_lock = asyncio.Lock()  # the hourly job and a direct call: one at a time

    # -- lifetime ---------------------------------------------------------------------------
    async def open(self) -> None:
        await asyncio.to_thread(self._open_files)
        self._writer = asyncio.create_task(self._write_loop(), name="audit-writer")
        self._janitor = asyncio.create_task(self._retention_loop(), name="audit-retention")

    def _open_files(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        name = NAME_RE.sub("_", self.chain_name) or "node"
        pid = os.getpid()  # (several apps of one process, in tests: -pid-2, -pid-3, …)
        for candidate in [name, f"{name}-{pid}", *(f"{name}-{pid}-{i}" for i in range(2, 64))]:
            directory = self.root / candidate
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                log.warning("audit: chain %s is held by another process", candidate)
                continue
            self._lock_fd, self.directory = fd, directory
            self.chain_name = candidate
            break
        else:
            raise RuntimeError(f"audit: no chain directory free under {self.root}")
        self.chain = Chain(self.chain_name)
        files = day_files(self.directory)
        if not files:
            return
        last, torn = scan_tail(files[-1])
        if last is not None:
            self.chain.seq, self.chain.head = int(last["seq"]), str(last["hash"])
        else:  # a file without one whole entry: take the newest earlier one
            for path in reversed(files[:-1]):
                last, _ = scan_tail(path)
                if last is not None:
                    self.chain.seq, self.chain.head = int(last["seq"]), str(last["hash"])
                    break
        self.chain.day = FILE_RE.match(files[-1].name).group(1)  # type: ignore[union-attr]
        if torn:
            # Leave the torn bytes where they are (they are evidence), end their line,
            # and say so in the chain: verify accepts a torn line named here.
            with files[-1].open("ab") as fh:
                fh.write(b"\n")
            lines = files[-1].read_bytes().count(b"\n")
            self._queue.append(
                _Item(
                    self._body(
                        "audit.torn",
                        obj=files[-1].name,
                        result="ok",
                        detail={
                            "line": lines,
                            "bytes": len(torn),
                            "sha256": hashlib.sha256(torn).hexdigest(),
                        },
                    )
                )
            )

    async def close(self) -> None:
        self.summarize()
        self._closing = True
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        self._wake.set()
        if self._writer is not None:
            await self._writer
        self.log_head()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def log_head(self) -> None:
        log.info("audit: chain %s head seq %d %s", self.chain_name, self.chain.seq, self.chain.head)

    # -- recording --------------------------------------------------------------------------
    def _body(
        self,
        action: str,
        *,
        actor: dict[str, Any] | None = None,
        address: str | None = None,
        obj: str | None = None,
        result: str = "ok",
        code: str | None = None,
        detail: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> dict[str, Any]:
        """``raw``: a detail the server made (the settings), not clipped."""
        t = self.clock()
        return {
            "ts": iso(t),
            "t": round(t, 3),
            "node": self.node,
            "actor": actor,
            "address": address,
            "action": action,
            "object": clip(obj),
            "result": result,
            "code": code,
            "detail": (detail if raw else clip(detail)) if detail else None,
        }

    def put(self, action: str, **kw: Any) -> bool:
        """Queue an entry (never waits). False: the queue was full (the entry is counted
        in the next ``audit.dropped``) or it is a refusal beyond the per-address burst
        (counted in an ``audit.suppressed``)."""
        body = self._body(action, **kw)
        if body["result"] == "refused":
            key = (action, body["address"], body["code"])
            write, due = self.coalescer.admit(key, body["t"])
            self._summaries(due)
            if not write:
                return False
        if self._closing or len(self._queue) >= self.queue_max:
            self.dropped += 1
            return False
        self._queue.append(_Item(body))
        self._wake.set()
        return True

    def _summaries(self, due: list[dict[str, Any]]) -> None:
        # Past the queue's limit: one per kind of refusal and window, so bounded.
        for s in due:
            self._queue.append(_Item(self._body("audit.suppressed", result="refused", **s)))
        if due:
            self._wake.set()

    def summarize(self) -> None:
        """Write the refusals counted so far now (at close; tests)."""
        self._summaries(self.coalescer.due(self.clock(), everything=True))

    async def record(
        self,
        action: str,
        *,
        actor: dict[str, Any] | None,
        address: str | None,
        obj: str | None,
        result: str,
        code: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.put(
            action, actor=actor, address=address, obj=obj, result=result, code=code, detail=detail
        )

    async def record_now(self, action: str, **kw: Any) -> None:
        """Queue past the limit and wait until the entry is written (retention)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(self._body(action, **kw), done))
        self._wake.set()
        await done

    def first_use(self, token: str) -> bool:
        """True the first time this node sees a token (bounded memory)."""
        key = hashlib.sha256(token.encode()).hexdigest()[:32]
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > TOKENS_SEEN_MAX:
            del self._seen[next(iter(self._seen))]
        return True

    async def on_event(self, event: Event) -> None:
        """A case-timeline event that is an audited act, mirrored (an event hook)."""
        if event.type not in MIRRORED:
            return
        scope = CURRENT.get()
        if scope is not None and event.type in ACTS:
            scope["audited"] = True  # this entry stands for the request
        self.put(
            event.type,
            actor=event.actor.model_dump(exclude={"level"}) if event.actor else None,
            address=scope["address"] if scope else None,
            obj=f"case/{event.case_id}/session/{event.session_id}",
            result="ok",
            detail={"case_seq": event.seq, **event.data},
        )

    # -- the writer task --------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 5.0)
                self._summaries(self.coalescer.due(self.clock()))
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH_MAX, len(self._queue)))]
            bodies = [item.body for item in batch]
            if self.dropped:
                count, self.dropped = self.dropped, 0
                bodies.append(self._body("audit.dropped", result="failed", detail={"count": count}))
            failed: OSError | None = None
            try:
                await asyncio.to_thread(self._append, bodies)
            except OSError as exc:
                # The entries are lost, but linked: verify shows the gap; the log says why.
                log.error("audit: cannot write %d entries: %s", len(bodies), exc)
                failed = exc
            for item in batch:
                if item.done is not None and not item.done.done():
                    if failed is None:
                        item.done.set_result(None)
                    else:  # (the retention deletes nothing then)
                        item.done.set_exception(failed)

    def _append(self, bodies: list[dict[str, Any]]) -> None:
        """Link and write a batch (in a thread: hashing and encoding stay off the event
        loop; the chain's head is the writer's alone)."""
        by_day: dict[str, list[bytes]] = {}
        for e in map(self.chain.link, bodies):
            # Never back to an older file (a clock stepped back): the chain stays in order.
            day = max(day_of(e["t"]), self.chain.day)
            self.chain.day = day
            by_day.setdefault(day, []).append(canonical(e).encode("utf-8") + b"\n")
        for day, lines in by_day.items():
            path = self.directory / f"{day}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- retention --------------------------------------------------------------------------
    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.apply_retention()
            except Exception:
                log.exception("audit: retention failed")
            self.log_head()  # an anchor outside the files, if the logs are shipped
            await asyncio.sleep(3600)

    async def apply_retention(self) -> list[str]:
        """Delete day files older than the retention, after an ``audit.retention`` entry
        (written and synced first) that names each with its entries and last hash."""
        async with self._retention_lock:
            return await self._apply_retention()

    async def _apply_retention(self) -> list[str]:
        cutoff = day_of(self.clock() - self.retention_days * 86400)
        old = [p for p in day_files(self.directory) if p.name[:10] < cutoff]
        old = [p for p in old if p.name[:10] < self.chain.day]  # never the file being written
        if not old:
            return []
        facts = await asyncio.to_thread(lambda: [file_facts(p) for p in old])
        await self.record_now(
            "audit.retention",
            result="ok",
            obj=self.chain_name,
            detail={"retention_days": self.retention_days, "deleted": facts},
            raw=True,  # every file, however many (verify looks for the last)
        )
        for p in old:
            p.unlink(missing_ok=True)
        return [p.name for p in old]


def file_facts(path: Path) -> dict[str, Any]:
    first = last = None
    count = 0
    for line in path.read_bytes().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and "seq" in e:
            first = first or e
            last = e
            count += 1
    return {
        "file": path.name,
        "entries": count,
        "first_seq": first and first.get("seq"),
        "last_seq": last and last.get("seq"),
        "last_hash": last and last.get("hash"),
    }
