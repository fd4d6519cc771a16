"""The retention purge: every node looks now and then for the parts of sealed case files
whose time is up (``recording.retention``), and deletes each once across nodes.

Each due item (a kind of one session: its recordings, its stills, its chat's text, or
the case file whole) is purged under a claim in the store (``retention:<case>:<session>``, an
ephemeral value only one node can create, as the recording-repair claim; one per
session, since its kinds share one tombstone file), and never
while its case is on legal hold (``signaling.legal_hold``): the hold is read again
under the claim, just before anything is deleted. The tombstone goes first into the
session directory (``purged.json``, naming every file with its SHA-256), then the files
go, then ``retention.purged`` is filed in the case timeline with the same list. A node
that dies in between leaves a tombstone without its event: the next pass files it.
Chat: its lines of ``timeline.jsonl`` and its rows in the record become stubs that keep
each event's hash (``recording.redaction``, ``signaling.history.redaction``), redone
before the event is filed, so a pass that finishes a dead node's purge finishes them too.
A version-1 case file's chat is not purged (kept: ``disk.OLD_SEAL``), and a chat the
live store's case log still holds waits for a later pass (the store cannot redact).

Times come from ``clock`` (the service's), so tests can jump.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from recording import retention as disk
from recording.redaction import stub_data

from .background import stopping
from .history.redaction import redact_chat, whole_chat
from .legal_hold import held_in_record, is_held
from .state import Outage, Store, StoreUnavailable

log = logging.getLogger(__name__)

EVENT = "retention.purged"
CLAIM_S = 600.0  # a purge takes seconds; a dead node's claim frees the item after this
DAY = 86400.0

# Files one event: (case, session, data) -> its seq.
FileEvent = Callable[[str, str, dict[str, Any]], Awaitable[int]]


@dataclass(frozen=True)
class Periods:
    """How long each kind is kept after its session ended, in days (0: for good)."""

    recordings_days: float = 0.0
    stills_days: float = 0.0
    casefile_days: float = 0.0
    chat_days: float = 0.0

    @classmethod
    def of(cls, config: Any) -> Periods:
        return cls(
            config.retention_recordings_days,
            config.retention_stills_days,
            config.retention_casefile_days,
            config.retention_chat_days,
        )

    def seconds(self) -> dict[str, float]:
        return {
            "recordings": self.recordings_days * DAY,
            "stills": self.stills_days * DAY,
            "casefile": self.casefile_days * DAY,
            "chat": self.chat_days * DAY,
        }

    @property
    def any(self) -> bool:
        return any(v > 0 for v in self.seconds().values())


def claim_key(case_id: str, session_id: str) -> str:
    return f"retention:{case_id}:{session_id}"


class Retention:
    def __init__(
        self,
        store: Store,
        archive: Path,
        periods: Periods,
        file_event: FileEvent,
        clock: Callable[[], float],
        node_id: str,
        every_s: float = 3600.0,
        record: Any = None,
    ) -> None:
        self.store = store
        self.archive = archive
        self.periods = periods
        self.file_event = file_event
        self.clock = clock
        self.node_id = node_id
        self.every_s = every_s
        self.record = record  # the History: holds are read there too (legal_hold)
        self._task: asyncio.Task[None] | None = None
        self._next_due: dict[Path, float] = {}  # per session read (disk.due)
        self._redacted: set[Path] = set()  # sessions whose purged chat the record lacks

    async def plan(self) -> list[dict[str, Any]]:
        """What is due now, each with ``held`` (its case is on legal hold: kept) and,
        for a version-1 case file's chat, ``kept`` (why it stays)."""
        items = await asyncio.to_thread(
            disk.due, self.archive, self.periods.seconds(), self.clock()
        )
        out = []
        for item in items:
            out.append(dict(item.as_dict(), held=await self._held(item.case_id)))
        return out

    async def _held(self, case_id: str) -> bool:
        """On hold in the live store, or by the record's last hold event."""
        if await is_held(self.store, case_id):
            return True
        return self.record is not None and await held_in_record(self.record, case_id)

    async def run_once(self) -> list[dict[str, Any]]:
        """One pass: purge what is due and not held; returns what this node purged."""
        done: list[dict[str, Any]] = []
        await self._file_pending()
        now = self.clock()
        items = await asyncio.to_thread(
            disk.due, self.archive, self.periods.seconds(), now, self._next_due
        )
        items = [i for i in items if not i.kept]
        sessions = sorted({(i.case_id, i.session_id) for i in items})
        for case_id, session_id in sessions:
            if stopping():
                break
            if await self._held(case_id):
                continue
            # One node at a time per session: its kinds share one tombstone file.
            key = claim_key(case_id, session_id)
            if not await self.store.create_ephemeral(key, {"node": self.node_id}, CLAIM_S):
                continue  # another node purges it
            try:
                done += await self._purge(case_id, session_id)
            finally:
                await self.store.delete_ephemeral(key)
        return done

    async def _purge(self, case_id: str, session_id: str) -> list[dict[str, Any]]:
        directory = self.archive / case_id / session_id
        done = []
        for kind in disk.KINDS:
            # Under the claim, each kind as it is now: purged meanwhile by another node,
            # or held since the plan? (A case file purged whole after its recordings
            # lists only what is left.)
            fresh = await asyncio.to_thread(
                disk.due_in, case_id, session_id, directory, self.periods.seconds(), self.clock()
            )
            item = next((d for d in fresh if d.kind == kind and not d.kept), None)
            if item is None or await self._held(case_id):
                continue
            if kind == "chat" and await self._still_live(case_id, item):
                continue
            entry = await asyncio.to_thread(disk.purge, directory, item, self.clock())
            seq = await self._file(case_id, session_id, directory, entry)
            log.info(
                "retention: purged the %s of %s/%s (%d files; seq %d)",
                kind,
                case_id,
                session_id,
                len(item.files),
                seq,
            )
            done.append(dict(item.as_dict(), seq=seq, purged_at=entry["purged_at"]))
        return done

    async def _still_live(self, case_id: str, item: disk.Due) -> bool:
        """The case's log in the live store still holds some of these chat events (the
        session not evicted yet, ``signaling.evict``): that copy cannot be redacted, so
        the purge waits for the next pass, once the record alone has them."""
        seqs = {int(e["seq"]) for e in item.events}
        log_ = await self.store.read_log(f"case:{case_id}:events")
        if not any(int(e.get("seq") or 0) in seqs for e in log_):
            return False
        log.info(
            "retention: the chat of %s/%s waits: still in the live store", case_id, item.session_id
        )
        return True

    async def _redact(
        self, case_id: str, session_id: str, directory: Path, entry: dict[str, Any]
    ) -> None:
        """A chat purge's stubs, in the timeline file and in the record (idempotent)."""
        await asyncio.to_thread(disk.redact, directory, entry)
        await self._redact_record(case_id, session_id, entry)

    async def _redact_record(self, case_id: str, session_id: str, entry: dict[str, Any]) -> None:
        if self.record is None:
            return
        at = float(entry.get("purged_at") or 0.0)
        events = entry.get("events") or []
        stubs = {int(e["seq"]): stub_data(str(e.get("sha256") or e.get("sm3")), at) for e in events}
        have = await redact_chat(self.record, case_id, stubs)
        if have < len(stubs):
            log.warning(
                "retention: the record lacks %d of the %d chat events purged in %s/%s",
                len(stubs) - have,
                len(stubs),
                case_id,
                session_id,
            )

    async def _file(
        self, case_id: str, session_id: str, directory: Path, entry: dict[str, Any]
    ) -> int:
        if entry.get("kind") == "chat":
            await self._redact(case_id, session_id, directory, entry)
        data = {k: entry.get(k) for k in ("kind", "purged_at", "due_at", "manifest_sha256")}
        data.update(files=entry.get("files") or [], node=self.node_id)
        if entry.get("kind") == "chat":
            data["events"] = entry.get("events") or []
        seq = await self.file_event(case_id, session_id, data)
        await asyncio.to_thread(disk.note_event, directory, str(entry["kind"]), seq)
        return seq

    async def _file_pending(self) -> None:
        """Tombstones written by a node that died before it filed their event; then
        chat purged but still whole in this node's record."""
        found = await asyncio.to_thread(disk.tombstones, self.archive)
        for case_id, session_id, directory, doc in found:
            if not disk.unfiled(doc):
                continue
            key = claim_key(case_id, session_id)
            if not await self.store.create_ephemeral(key, {"node": self.node_id}, CLAIM_S):
                continue  # its node is still at it
            try:
                fresh = await asyncio.to_thread(disk.load_tombstone, directory) or {}
                for entry in fresh.get("purges", []):
                    if entry.get("seq") is None:
                        await self._file(case_id, session_id, directory, entry)
            finally:
                await self.store.delete_ephemeral(key)
        await self._recheck(found)

    async def _recheck(self, found: list[tuple[str, str, Path, dict[str, Any]]]) -> None:
        """Once per session and process: chat that the tombstone says was purged, still
        whole in this node's record (a record restored from a backup made before the
        purge; a node's own SQLite record the purging node could not reach) is
        redacted there too. The timeline file is the purging node's (under its claim)."""
        if self.record is None:
            return
        for case_id, session_id, directory, doc in found:
            if directory in self._redacted:
                continue
            for entry in doc.get("purges", []):
                if entry.get("kind") == "chat" and entry.get("seq") is not None:
                    seqs = [int(e["seq"]) for e in entry.get("events") or []]
                    if await whole_chat(self.record, case_id, seqs):
                        await self._redact_record(case_id, session_id, entry)
            self._redacted.add(directory)

    # -- the node's loop -------------------------------------------------------------------
    def start(self) -> None:
        if self.periods.any:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        outage = Outage("retention", log)
        while not stopping():
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                outage.failed(exc)
            except Exception:
                log.exception("retention pass failed")
            else:
                outage.ok()
            await asyncio.sleep(self.every_s)


RETENTION = web.AppKey("retention", Retention)
