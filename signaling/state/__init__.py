"""Shared state: pick the implementation once, at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Doc, Job, Outage, Store, StoreUnavailable, Subscription
from .memory import MemoryStore


async def open_store(redis_url: str, data_dir: Path, redis: Any = None) -> Store:
    """``redis``: a ``redis_connect.RedisOptions`` (pool size, timeouts), default ones
    when None."""
    if redis_url:
        from .redis_store import RedisStore

        return await RedisStore.connect(redis_url, opts=redis)
    return MemoryStore(data_dir / "state")


__all__ = [
    "Doc",
    "Job",
    "MemoryStore",
    "Outage",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "open_store",
]
