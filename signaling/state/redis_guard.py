"""Guards around each call of the Redis store: one command slot of the node's bounded
pool, one error type (``StoreUnavailable``) for every outage, and, when asked for,
acknowledgement only once a write reached replicas (``WAIT``)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.exceptions import RedisError, ResponseError

from .base import StoreUnavailable

# Redis cannot serve now (down, unreachable, loading, out of memory, unable to persist):
# an outage, answered 503. Other Redis errors (a wrong type, a script error) are bugs.
_OUTAGE = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.OutOfMemoryError,
    rx.ReadOnlyError,
    rx.ClusterDownError,
    rx.TryAgainError,
    OSError,  # builtin TimeoutError (a subscription's confirmation) included
)
_OUTAGE_REPLIES = ("MISCONF", "LOADING", "MASTERDOWN", "NOREPLICAS", "BUSY ")


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _OUTAGE):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(_OUTAGE_REPLIES)


P = ParamSpec("P")
T = TypeVar("T")


# A write that must reach a replica before it is acknowledged runs on one connection of
# its own (WAIT counts what its connection wrote): the store's methods use this one.
PINNED: ContextVar[aioredis.Redis | None] = ContextVar("jr_redis_pinned", default=None)


def guarded(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """One store error type for every outage, whichever call met it; one command slot of
    the bounded pool per call, waited for at most ``pool_timeout_s``."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        store: Any = args[0]  # a RedisStore
        try:
            async with asyncio.timeout(store.opts.pool_timeout_s):
                await store._slots.acquire()
        except TimeoutError:
            raise StoreUnavailable(
                f"Redis is busy: all {store.opts.pool_size} connections of this node's pool "
                f"stayed in use for {store.opts.pool_timeout_s:g} s (redis_pool_size)"
            ) from None
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            if is_outage(exc):
                raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
            raise
        finally:
            store._slots.release()

    return call


def unslotted(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """An outage as ``StoreUnavailable``, without a command slot: for the bus, whose
    SUBSCRIBE goes on the node's one pub/sub connection (a burst of sockets waiting for
    their subscriptions must not hold the pool's connections meanwhile)."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            if is_outage(exc):
                raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
            raise

    return call


def durable(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """With ``redis_wait_replicas`` > 0: the write, then WAIT on its connection; fewer
    replicas than asked within ``redis_wait_ms`` is an outage (503), though the primary
    holds the write (it may or may not survive a failover: not acknowledged)."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        store: Any = args[0]  # a RedisStore
        if store.opts.wait_replicas <= 0:
            return await fn(*args, **kwargs)
        pinned = store._client.client()
        token = PINNED.set(pinned)
        try:
            result = await fn(*args, **kwargs)
            acks = int(
                await pinned.execute_command("WAIT", store.opts.wait_replicas, store.opts.wait_ms)
            )
        except (RedisError, OSError) as exc:
            if is_outage(exc):
                raise StoreUnavailable(f"Redis is unavailable: {exc}") from exc
            raise
        finally:
            PINNED.reset(token)
            await pinned.aclose()
        if acks < store.opts.wait_replicas:
            raise StoreUnavailable(
                f"Redis replicated the write to {acks} of {store.opts.wait_replicas} "
                f"replica(s) within {store.opts.wait_ms} ms (redis_wait_replicas)"
            )
        return result

    return call
