"""Shared state: pick the implementation once, at start."""

from __future__ import annotations

from pathlib import Path

from .base import Doc, Job, Outage, Store, StoreUnavailable, Subscription
from .memory import MemoryStore


async def open_store(redis_url: str, data_dir: Path) -> Store:
    if redis_url:
        from .redis_store import RedisStore

        return await RedisStore.connect(redis_url)
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
