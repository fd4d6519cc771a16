"""Single-process store: dictionaries in memory, durable through an append-only journal.

Every durable change (document write or delete, log append or trim, index change) is
one JSON line in
``<dir>/journal.jsonl``, written before memory changes and before the call returns, so a
crash of the process loses nothing the OS has; an fsync follows within
``fsync_interval`` for power loss. A write that fails (a full disk, an I/O error) is cut
back to the last whole line and raised as ``StoreUnavailable``, memory untouched: what
the node shows and what it replays after a restart stay the same.

At open, the journal is replayed (a torn last line cut off) and, when it has grown well
beyond the live data, compacted (written anew and renamed into place); while the store
serves, it is compacted again each time it has grown a few times past the live data,
without holding the loop for the writing (``journal``). Ephemeral values and the bus are
in memory only, as they are meant to be.

Job queues are journaled too (added, handed out, acknowledged); who holds a job is not:
after a restart no worker of the old process is alive, so every unfinished job can be
claimed again at once, which is how the node's worker resumes them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from . import journal
from .base import Doc, Handler, Store, StoreUnavailable, Subscription, Updater
from .local_bus import LocalBus
from .memory_jobs import JobQueues

JOURNAL = "journal.jsonl"
EPH_PURGE_MIN = 1024  # ephemeral values held before the expired ones are looked for

log = logging.getLogger(__name__)


class MemoryStore(JobQueues, Store):
    kind = "memory"

    def __init__(
        self,
        directory: Path | None,
        fsync_interval: float = 0.5,
        compact_min_bytes: int = journal.COMPACT_MIN_BYTES,
    ) -> None:
        self._docs: dict[str, Doc] = {}
        self._logs: dict[str, list[Doc]] = {}
        # log -> the highest seq trimmed from it: the numbering goes on from there.
        self._trimmed: dict[str, int] = {}
        # key -> sorted list of (score, member) plus member -> score
        self._indexes: dict[str, tuple[list[tuple[float, str]], dict[str, float]]] = {}
        self._ephemeral: dict[str, tuple[float, Doc]] = {}
        self._eph_purge_at = EPH_PURGE_MIN
        # queue -> job id -> {"data", "n" (deliveries), "by" (holder), "at" (last touch)}
        self._jobs: dict[str, dict[str, dict[str, Any]]] = {}
        self._job_serial = 0
        self._job_wake: dict[str, asyncio.Event] = {}
        self._bus = LocalBus()
        self._dir = directory
        # Raw, unbuffered appends: a buffered writer keeps a failed line in its buffer
        # and writes it later, after memory was left without it.
        self._journal: int | None = None
        self._size = 0  # bytes of whole lines in the journal: where a failed write is cut
        self._torn = False  # a failed write may have left part of a line past _size
        self._fault: str | None = None  # the last write's failure, until one succeeds
        self._dirty = False
        self._fsync_interval = fsync_interval
        self._fsync_task: asyncio.Task[None] | None = None
        self._syncing = False  # an fsync of the journal is under way in a thread
        self._retired: list[int] = []  # a replaced journal's descriptor, closed after it
        # Online compaction: when the journal passes _compact_at bytes; the lines
        # written while it runs, to carry over (None: not running).
        self._compact_min = compact_min_bytes
        self._compact_at = compact_min_bytes
        self._carry: list[bytes] | None = None
        self._compaction: asyncio.Task[None] | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._replay(directory / JOURNAL)

    # -- journal ----------------------------------------------------------------------
    def _replay(self, path: Path) -> None:
        # A compaction cut short by a kill: the journal is whole without it.
        path.with_suffix(".compact").unlink(missing_ok=True)
        ops = 0
        good = 0  # bytes of whole lines replayed
        torn = False
        if path.exists():
            with path.open("rb") as fh:
                for line in fh:
                    try:
                        if not line.endswith(b"\n"):
                            raise ValueError("no end of line")
                        op = json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError):
                        # A torn last line from a crash mid-write: everything before it
                        # is intact; nothing after it was acknowledged. Cut it off so the
                        # next line does not glue onto it (a line without its newline
                        # was never acknowledged either, even if it parses).
                        torn = True
                        break
                    self._apply(op)
                    ops += 1
                    good += len(line)
        live = len(self._docs) + sum(len(v) for v in self._logs.values()) + len(self._trimmed)
        live += sum(len(v[1]) for v in self._indexes.values())
        live += sum(len(q) for q in self._jobs.values())
        if not path.exists():
            self._compact(path)
        elif torn or ops > 2 * live + 1000:
            if torn:
                # Cutting needs no free space; compacting does, and may wait for it.
                os.truncate(path, good)
            try:
                self._compact(path)
            except OSError as exc:
                log.warning("journal not compacted (%s); it stays as it is", exc)
                path.with_suffix(".compact").unlink(missing_ok=True)
        self._journal = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._journal).st_size
        self._compact_at = max(journal.COMPACT_FACTOR * self._size, self._compact_min)

    def _snapshot(self) -> journal.Snapshot:
        return journal.snapshot(self._docs, self._trimmed, self._logs, self._indexes, self._jobs)

    def _compact(self, path: Path) -> None:
        tmp = path.with_suffix(".compact")
        journal.write(self._snapshot(), tmp)
        os.replace(tmp, path)

    async def _compact_online(self) -> None:
        """Write the journal anew while serving (see ``journal``); on failure the old
        one stays, and the next try waits until it has grown as much again."""
        assert self._dir is not None
        path = self._dir / JOURNAL
        tmp = path.with_suffix(".compact")
        began = time.monotonic()
        snap = self._snapshot()
        self._carry = []  # from now on, every line written is kept to be carried over
        log.debug("journal compaction: snapshot taken")
        fd: int | None = None
        try:
            size = await asyncio.to_thread(journal.write, snap, tmp)
            del snap
            log.debug("journal compaction: new journal written")
            fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
            # The lines written meanwhile: in the thread while there are many, the last
            # few on the loop, where nothing else is written before the rename.
            while sum(len(b) for b in self._carry) > journal.CHUNK:
                chunk, self._carry = b"".join(self._carry), []
                size += await asyncio.to_thread(journal.write_all, fd, chunk)
            size += journal.write_all(fd, b"".join(self._carry))
            log.debug("journal compaction: carried over, renaming")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("the state journal could not be compacted (%s); it stays", exc)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._compact_at = journal.COMPACT_FACTOR * self._size
            return
        finally:
            self._carry = None
        old, self._journal, self._size = self._journal, fd, size
        if old is not None:
            if self._syncing:
                self._retired.append(old)  # the fsync under way uses it
            else:
                os.close(old)
        self._compact_at = max(journal.COMPACT_FACTOR * size, self._compact_min)
        log.debug("journal compaction: renamed")
        self._dirty = True  # the lines carried on the loop: synced as any others
        self._sync_soon()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(journal.sync_dir, path)
        log.info("state journal compacted to %d bytes in %.2f s", size, time.monotonic() - began)

    def _apply(self, op: dict[str, Any]) -> None:
        kind, key = op["op"], op["k"]
        if kind == "put":
            self._docs[key] = op["d"]
        elif kind == "del":
            self._docs.pop(key, None)
        elif kind == "append":
            if "b" in op:  # a forgotten log numbered again from its floor
                self._trim(key, int(op["b"]))
            self._logs.setdefault(key, []).append(op["d"])
        elif kind == "index":
            self._index_set(key, op["m"], op["s"])
        elif kind == "del":
            self._docs.pop(key, None)
        elif kind == "trim":
            self._trim(key, int(op["n"]))
        elif kind == "unlog":
            self._logs.pop(key, None)
            self._trimmed.pop(key, None)
        elif kind == "unindexall":
            self._indexes.pop(key, None)
        elif kind == "job":
            self._jobs.setdefault(key, {})[op["id"]] = {
                "data": op["d"],
                "n": op.get("n", 0),
                "by": None,
                "at": 0.0,
            }
            self._job_serial = max(self._job_serial, int(str(op["id"]).split("-")[-1]))
        elif kind == "jobtry":
            job = self._jobs.get(key, {}).get(op["id"])
            if job is not None:
                job["n"] += 1
        elif kind == "jobdone":
            self._jobs.get(key, {}).pop(op["id"], None)
        elif kind == "unindex":
            ordered, scores = self._indexes.get(key, ([], {}))
            if op["m"] in scores:
                ordered.remove((scores.pop(op["m"]), op["m"]))
                if not scores:
                    self._indexes.pop(key, None)

    def _write(self, op: dict[str, Any]) -> None:
        """Append one line, whole, before memory changes; or raise and leave no trace."""
        if self._journal is None:
            return
        data = (json.dumps(op, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            if self._torn:
                os.ftruncate(self._journal, self._size)
                self._torn = False
            done = 0
            while done < len(data):  # a short write (the disk filled midway) goes on
                done += os.write(self._journal, data[done:])
        except OSError as exc:
            self._torn = True
            with contextlib.suppress(OSError):
                # Cut the half line now (needs no space); else before the next write.
                os.ftruncate(self._journal, self._size)
                self._torn = False
            self._fault = f"the state journal cannot be written: {exc.strerror or exc}"
            raise StoreUnavailable(self._fault) from None
        self._size += len(data)
        self._fault = None
        self._dirty = True
        if self._carry is not None:
            self._carry.append(data)
        elif self._size > self._compact_at and self._compaction is None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                self._compaction = loop.create_task(self._compact_online())
                self._compaction.add_done_callback(self._compacted)
        self._sync_soon()

    def _compacted(self, task: asyncio.Task[None]) -> None:
        self._compaction = None
        if not task.cancelled() and task.exception() is not None:
            log.error("compacting the state journal failed", exc_info=task.exception())

    def _sync_soon(self) -> None:
        if self._fsync_task is None or self._fsync_task.done():
            with contextlib.suppress(RuntimeError):
                self._fsync_task = asyncio.get_running_loop().create_task(self._fsync_later())

    async def _fsync_later(self) -> None:
        await asyncio.sleep(self._fsync_interval)
        if self._dirty and self._journal is not None:
            self._dirty = False
            self._syncing = True
            try:
                await asyncio.to_thread(os.fsync, self._journal)
            except OSError as exc:
                # The lines are with the OS; the disk refused them. Say so in healthz.
                self._fault = f"the state journal cannot be synced: {exc.strerror or exc}"
                log.error("%s", self._fault)
            finally:
                self._syncing = False
                for fd in self._retired:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._retired.clear()

    # -- documents --------------------------------------------------------------------
    async def get(self, key: str) -> Doc | None:
        doc = self._docs.get(key)
        return copy.deepcopy(doc) if doc is not None else None

    async def get_many(self, keys: list[str]) -> list[Doc | None]:
        return [await self.get(k) for k in keys]

    async def create(self, key: str, doc: Doc) -> bool:
        if key in self._docs:
            return False
        stored = copy.deepcopy(doc)
        self._write({"op": "put", "k": key, "d": stored})
        self._docs[key] = stored
        return True

    async def update(self, key: str, fn: Updater) -> tuple[Doc | None, bool]:
        current = self._docs.get(key)
        if current is None:
            return None, False
        new = fn(copy.deepcopy(current))
        if new is None or new == current:
            return copy.deepcopy(current), False
        stored = copy.deepcopy(new)
        self._write({"op": "put", "k": key, "d": stored})
        self._docs[key] = stored
        return copy.deepcopy(stored), True

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            if key in self._docs:
                self._write({"op": "del", "k": key})
                del self._docs[key]

    # -- logs -------------------------------------------------------------------------
    def _last_seq(self, key: str) -> int:
        return self._trimmed.get(key, 0) + len(self._logs.get(key, ()))

    async def append(self, key: str, doc: Doc, floor: int | None = 0) -> int:
        op: dict[str, Any] = {"op": "append", "k": key}
        if key not in self._logs and key not in self._trimmed:  # no numbering
            if floor is None:
                return 0
            if floor > 0:
                op["b"] = floor  # one line: the numbering's start and the entry
        base = int(op.get("b", 0)) or self._last_seq(key)
        op["d"] = stored = dict(copy.deepcopy(doc), seq=base + 1)
        self._write(op)
        if "b" in op:
            self._trim(key, int(op["b"]))
        self._logs.setdefault(key, []).append(stored)
        return int(stored["seq"])

    async def read_log(self, key: str, start: int = 0, limit: int | None = None) -> list[Doc]:
        entries = self._logs.get(key, [])
        first = max(0, start - self._trimmed.get(key, 0))
        end = None if limit is None else first + limit
        return copy.deepcopy(entries[first:end])

    def _trim(self, key: str, upto: int) -> int:
        """Entries up to ``upto`` dropped; the numbering goes on after ``upto`` (a
        compacted journal names it before the entries that are left)."""
        base = self._trimmed.get(key, 0)
        if upto <= base:
            return 0
        entries = self._logs.get(key, [])
        drop = min(upto - base, len(entries))
        del entries[:drop]
        if not entries:
            self._logs.pop(key, None)
        self._trimmed[key] = upto
        return drop

    async def trim_log(self, key: str, upto_seq: int) -> int:
        upto = min(upto_seq, self._last_seq(key))
        if upto <= self._trimmed.get(key, 0):
            return 0
        self._write({"op": "trim", "k": key, "n": upto})
        return self._trim(key, upto)

    async def log_trimmed(self, key: str) -> int:
        return self._trimmed.get(key, 0)

    async def forget_log(self, key: str, upto_seq: int) -> bool:
        if self._logs.get(key) or self._trimmed.get(key) != upto_seq:
            return False
        self._write({"op": "unlog", "k": key})
        self._trimmed.pop(key, None)
        return True

    async def delete_log(self, key: str) -> None:
        if key in self._logs or key in self._trimmed:
            self._write({"op": "unlog", "k": key})
            self._logs.pop(key, None)
            self._trimmed.pop(key, None)

    # -- indexes ----------------------------------------------------------------------
    def _index_set(self, key: str, member: str, score: float) -> None:
        ordered, scores = self._indexes.setdefault(key, ([], {}))
        old = scores.get(member)
        if old is not None:
            ordered.remove((old, member))
        scores[member] = score
        bisect.insort(ordered, (score, member))

    async def index_add(self, key: str, member: str, score: float) -> None:
        self._write({"op": "index", "k": key, "m": member, "s": score})
        self._index_set(key, member, score)

    async def index_remove(self, key: str, member: str) -> None:
        ordered, scores = self._indexes.get(key, ([], {}))
        if member in scores:
            self._write({"op": "unindex", "k": key, "m": member})
            ordered.remove((scores.pop(member), member))
            if not scores:
                self._indexes.pop(key, None)  # as Redis: an empty index takes no room

    async def index_delete(self, key: str) -> None:
        if key in self._indexes:
            self._write({"op": "unindexall", "k": key})
            del self._indexes[key]

    async def index_range(
        self,
        key: str,
        *,
        min_score: float | None = None,
        max_score: float | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[str]:
        ordered = self._indexes.get(key, ([], {}))[0]
        lo = -float("inf") if min_score is None else min_score
        hi = float("inf") if max_score is None else max_score
        picked = [m for s, m in ordered if lo <= s <= hi]
        if reverse:
            picked.reverse()
        return picked if limit is None else picked[:limit]

    # -- ephemeral --------------------------------------------------------------------
    async def put_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> None:
        now = time.monotonic()
        self._ephemeral[key] = (now + ttl_s, copy.deepcopy(doc))
        if len(self._ephemeral) >= self._eph_purge_at:
            # An expired value nobody reads again (a session's sealing claim) would stay
            # for good: dropped each time their number doubles (amortised O(1)).
            self._ephemeral = {k: v for k, v in self._ephemeral.items() if v[0] > now}
            self._eph_purge_at = max(EPH_PURGE_MIN, 2 * len(self._ephemeral))

    async def create_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        if await self.get_ephemeral(key) is not None:
            return False
        await self.put_ephemeral(key, doc, ttl_s)
        return True

    async def renew_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        held = await self.get_ephemeral(key) == doc  # no await yields in between: one step
        if held:
            await self.put_ephemeral(key, doc, ttl_s)
        return held

    async def get_ephemeral(self, key: str) -> Doc | None:
        item = self._ephemeral.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._ephemeral[key]
            return None
        return copy.deepcopy(item[1])

    async def delete_ephemeral(self, key: str) -> None:
        self._ephemeral.pop(key, None)

    # -- bus --------------------------------------------------------------------------
    async def publish(self, topic: str, message: Doc) -> None:
        # Same semantics as Redis: delivered after the publisher goes on, never inline.
        asyncio.get_running_loop().call_soon(self._bus.deliver, topic, copy.deepcopy(message))

    async def subscribe(self, topic: str, handler: Handler) -> Subscription:
        return await self._bus.add(topic, handler)

    # -- lifecycle --------------------------------------------------------------------
    async def ping(self) -> bool:
        if self._fault is not None and self._journal is not None:
            # The last write failed: try a line that changes nothing (replay ignores it)
            # so that the node says it is well again as soon as the disk has room.
            with contextlib.suppress(StoreUnavailable):
                self._write({"op": "noop", "k": ""})
        return self._fault is None

    async def health(self) -> Doc:
        ok = await self.ping()
        return (
            {"ok": ok, "kind": self.kind}
            if ok
            else {"ok": False, "kind": self.kind, "error": self._fault}
        )

    async def close(self) -> None:
        if self._compaction is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._compaction)  # the thread writes on anyway
        if self._fsync_task is not None:
            self._fsync_task.cancel()
        if self._journal is not None:
            try:
                os.fsync(self._journal)
            except OSError as exc:
                log.error("the state journal could not be synced at close: %s", exc)
            os.close(self._journal)
            self._journal = None
