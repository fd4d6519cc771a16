"""The one interface to shared state and cross-node messages.

Two implementations honour it (``memory.MemoryStore`` for one process, journaled to disk;
``redis_store.RedisStore`` for many processes and machines) and the same contract tests
run against both. The primitives are deliberately few; the domain lives above them in
``signaling.service``.

- documents: JSON objects under a key, created once, changed by atomic read-modify-write;
- logs: append-only lists of JSON objects, each stamped with its sequence number; the
  oldest entries can be dropped (``trim_log``) and the numbering goes on where it was;
- indexes: members ordered by a score (time), for listings;
- ephemeral values: JSON objects that vanish after a TTL (resume tokens, presence);
- a bus: fire-and-forget messages to every subscriber of a topic on every node;
- job queues: durable work items, each handed to one worker at a time, kept until
  acknowledged, handed out again when the worker holding one falls silent (it died).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]
Handler = Callable[[Doc], None]
Updater = Callable[[Doc], Doc | None]


class StoreUnavailable(Exception):
    """The store cannot do this now: Redis unreachable, the journal's disk full or failing.

    Every implementation raises this one type for an outage (never its driver's own
    errors), so that the edges answer 503 ``store_unavailable`` and background loops wait
    for the store to come back. Deliberately not a ``ServiceError``: code that turns a
    ``ServiceError`` into "not found" or "nothing to do" must not mistake an outage for an
    answer. The operation did not happen (a store never half-applies one call).
    """

    code = "store_unavailable"
    status = 503
    raised = 0  # in this process, for the node's metrics (jointreview_store_errors_total)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        StoreUnavailable.raised += 1
        self.message = message


class Outage:
    """Logs a background loop's store outage once when it starts and once when it ends,
    instead of a traceback per attempt while the store is away."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.log = logger
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self.log.warning("%s: the store is unavailable (%s); retrying", self.what, exc)

    def ok(self) -> None:
        if self.down:
            self.down = False
            self.log.warning("%s: the store is back", self.what)


@dataclass
class Job:
    id: str
    data: Doc
    deliveries: int = 1  # times it was handed out, this time included


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering to this subscription's handler (idempotent)."""


class Store(abc.ABC):
    kind: str

    # -- documents --------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, key: str) -> Doc | None: ...

    @abc.abstractmethod
    async def get_many(self, keys: list[str]) -> list[Doc | None]: ...

    @abc.abstractmethod
    async def create(self, key: str, doc: Doc) -> bool:
        """Store ``doc`` if ``key`` is free; False if it already exists."""

    @abc.abstractmethod
    async def update(self, key: str, fn: Updater) -> tuple[Doc | None, bool]:
        """Atomically replace the document with ``fn(copy_of_doc)``.

        ``fn`` may run more than once (optimistic retries) and must not have side effects.
        Returns ``(doc, changed)``: the stored document after the call (None if the key
        does not exist) and whether it changed; ``fn`` returning None leaves it unchanged.
        """

    @abc.abstractmethod
    async def delete(self, keys: list[str]) -> None:
        """Remove these documents (missing ones are ignored)."""

    # -- logs -------------------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, key: str, doc: Doc, floor: int | None = 0) -> int:
        """Append and return its sequence number, also stored as ``seq``: one more than
        the last entry's, even when that entry was trimmed (a number is never given
        twice). A log with no numbering (new, or forgotten: ``forget_log``) starts after
        ``floor`` (1 by default); with ``floor`` None nothing is appended there and 0 is
        returned, for the caller to find the floor (the record's last number) and append
        again with it. Which call starts the numbering is decided atomically: a
        second caller's floor is ignored."""

    @abc.abstractmethod
    async def read_log(self, key: str, start: int = 0, limit: int | None = None) -> list[Doc]:
        """Up to ``limit`` entries whose ``seq`` is above ``start``, in order.

        ``start`` is a sequence number already seen (0: from the beginning), not a
        position: before any trim the two are the same; after ``trim_log(key, n)``,
        entries up to ``n`` are gone and a read from any ``start`` < ``n`` begins with
        ``n + 1``."""

    @abc.abstractmethod
    async def trim_log(self, key: str, upto_seq: int) -> int:
        """Drop the entries with ``seq`` ≤ ``upto_seq`` (at most up to the last one);
        later appends go on numbering from where the log was. Returns how many were
        dropped. Atomic, durable, idempotent."""

    @abc.abstractmethod
    async def log_trimmed(self, key: str) -> int:
        """The highest sequence number trimmed from the log so far (0: none)."""

    @abc.abstractmethod
    async def forget_log(self, key: str, upto_seq: int) -> bool:
        """If the log holds no entry and its last number is ``upto_seq``, remove its
        numbering too: nothing of it stays, and its next append starts after the floor
        its caller passes. False (nothing changed) if anything was appended meanwhile.
        Atomic, durable."""

    @abc.abstractmethod
    async def delete_log(self, key: str) -> None:
        """Remove the log and its numbering (a log that will never be appended again:
        a new one under this key would start at 1)."""

    # -- indexes ----------------------------------------------------------------------
    @abc.abstractmethod
    async def index_add(self, key: str, member: str, score: float) -> None: ...

    @abc.abstractmethod
    async def index_remove(self, key: str, member: str) -> None: ...

    @abc.abstractmethod
    async def index_delete(self, key: str) -> None:
        """Remove the whole index."""

    @abc.abstractmethod
    async def index_range(
        self,
        key: str,
        *,
        min_score: float | None = None,
        max_score: float | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[str]: ...

    async def index_ranges(self, keys: list[str]) -> list[list[str]]:
        """Several whole indexes, each ascending: one round trip where the store can (a
        socket's greeting reads two)."""
        return [await self.index_range(k) for k in keys]

    # -- ephemeral --------------------------------------------------------------------
    @abc.abstractmethod
    async def put_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def create_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        """Store ``doc`` for ``ttl_s`` if ``key`` is free (a lease); False if taken."""

    @abc.abstractmethod
    async def renew_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        """Hold ``doc`` for ``ttl_s`` more if ``key`` still holds ``doc`` (a lease renewed
        by its holder only, in one step); False if it is gone or holds another value,
        which is then left as it is (a renewal after a move never overwrites the new
        holder)."""

    @abc.abstractmethod
    async def get_ephemeral(self, key: str) -> Doc | None: ...

    async def get_ephemeral_many(self, keys: list[str]) -> list[Doc | None]:
        """Several ephemeral values, in order, None where absent or expired: one round
        trip where the store has them (the failover sweep reads thousands of leases a
        beat)."""
        return [await self.get_ephemeral(k) for k in keys]

    @abc.abstractmethod
    async def delete_ephemeral(self, key: str) -> None: ...

    # -- bus --------------------------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, topic: str, message: Doc) -> None: ...

    @abc.abstractmethod
    async def subscribe(self, topic: str, handler: Handler) -> Subscription:
        """Deliver every later message on ``topic`` to ``handler`` (called on the loop).

        When this returns, the subscription is active on every node: a message published
        afterwards anywhere reaches it.
        """

    # -- job queues -------------------------------------------------------------------
    @abc.abstractmethod
    async def job_enqueue(self, queue: str, data: Doc) -> str:
        """Add a job; returns its id. It stays until ``job_ack``."""

    @abc.abstractmethod
    async def job_claim(
        self, queue: str, consumer: str, *, block_s: float = 0.0, reclaim_idle_s: float = 60.0
    ) -> Job | None:
        """Hand ``consumer`` one job: first one whose holder has not touched it for
        ``reclaim_idle_s`` (a dead worker's), else the oldest never handed out. Waits up
        to ``block_s`` for one; None if there is none. A job has one holder at a time."""

    @abc.abstractmethod
    async def job_touch(self, queue: str, consumer: str, job_id: str) -> bool:
        """``consumer`` is still working on it: its idle time starts again. False: the
        job is no longer this consumer's (acknowledged, or reclaimed by another)."""

    @abc.abstractmethod
    async def job_release(self, queue: str, consumer: str, job_id: str) -> None:
        """Give an unfinished job back: any consumer may claim it at once."""

    @abc.abstractmethod
    async def job_ack(self, queue: str, job_id: str) -> None:
        """The job is done: it is removed and never handed out again."""

    @abc.abstractmethod
    async def job_count(self, queue: str) -> int:
        """Jobs not yet acknowledged (waiting or held)."""

    # -- lifecycle --------------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the store can serve now (never raises)."""

    async def health(self) -> Doc:
        """For ``/healthz``: ``{"ok": bool, ...}`` with what failed when not ok."""
        return {"ok": await self.ping()}

    @abc.abstractmethod
    async def close(self) -> None: ...
