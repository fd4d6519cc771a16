"""Requests sent one way and answered the other, matched by id: the control process to its
media workers (``media_hosts.WorkerHost``, over the worker channel) and one node to
another (``media_rpc.NodeRpc``, over the bus).

Each request gets an id unique to this ``PendingCalls`` (a prefix of its own, so that a
late answer meant for an earlier incarnation matches nothing) and a future. An answer
``{"id", "result"}`` settles it; ``{"id", "error": {"code", "message"}}`` raises a
``ServiceError`` (``store_unavailable``: a ``StoreUnavailable``, a 503 here too). No
answer within the timeout, or the channel closing (``fail_all``), fails it with 503
``media_unavailable``: the client is told, never left waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from signaling.errors import ServiceError, Unavailable
from signaling.state import StoreUnavailable

Send = Callable[[str], Awaitable[None]]  # sends the request that carries this id


class PendingCalls:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._prefix = secrets.token_hex(4) + "-"
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    async def call(self, send: Send, unanswered: str) -> dict[str, Any]:
        """Send one request and wait for its result; ``unanswered`` is what the client
        is told when no answer comes in time."""
        rid = f"{self._prefix}{next(self._ids)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            await send(rid)
            reply = await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            raise Unavailable("media_unavailable", unanswered) from None
        finally:
            self._waiting.pop(rid, None)
        return result_of(reply)

    def answer(self, msg: dict[str, Any]) -> bool:
        """Settle the request ``msg`` answers; False if none waits for it (timed out, or
        not ours)."""
        fut = self._waiting.get(str(msg.get("id")))
        if fut is None or fut.done():
            return False
        fut.set_result(msg)
        return True

    def fail_all(self, exc: Exception) -> None:
        """The channel closed: every request still waiting fails with ``exc``."""
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(exc)


def result_of(reply: dict[str, Any]) -> dict[str, Any]:
    """An answer's result, or its error raised."""
    error = reply.get("error")
    if error is not None:
        if error.get("code") == StoreUnavailable.code:
            raise StoreUnavailable(str(error.get("message")))
        raise ServiceError(str(error.get("code")), str(error.get("message")))
    return dict(reply["result"])
