"""The one interface to shared state and cross-node messages.

Two implementations honour it (``memory.MemoryStore`` for one process, journaled to disk;
``redis_store.RedisStore`` for many processes and machines) and the same contract tests
run against both. The primitives are deliberately few; the domain lives above them in
``signaling.service``.

- documents: JSON objects under a key, created once, changed by atomic read-modify-write;
- logs: append-only lists of JSON objects whose position is their sequence number;
- indexes: members ordered by a score (time), for listings;
- ephemeral values: JSON objects that vanish after a TTL (resume tokens, presence);
- a bus: fire-and-forget messages to every subscriber of a topic on every node.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

Doc = dict[str, Any]
Handler = Callable[[Doc], None]
Updater = Callable[[Doc], Doc | None]


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

    # -- logs -------------------------------------------------------------------------
    @abc.abstractmethod
    async def append(self, key: str, doc: Doc) -> int:
        """Append and return the 1-based position, which is also stored as ``seq``."""

    @abc.abstractmethod
    async def read_log(self, key: str, start: int = 0, limit: int | None = None) -> list[Doc]: ...

    # -- indexes ----------------------------------------------------------------------
    @abc.abstractmethod
    async def index_add(self, key: str, member: str, score: float) -> None: ...

    @abc.abstractmethod
    async def index_remove(self, key: str, member: str) -> None: ...

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

    # -- ephemeral --------------------------------------------------------------------
    @abc.abstractmethod
    async def put_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> None: ...

    @abc.abstractmethod
    async def create_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        """Store ``doc`` for ``ttl_s`` if ``key`` is free (a lease); False if taken."""

    @abc.abstractmethod
    async def get_ephemeral(self, key: str) -> Doc | None: ...

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

    # -- lifecycle --------------------------------------------------------------------
    @abc.abstractmethod
    async def ping(self) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
