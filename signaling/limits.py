"""Rate limits as plain objects with time passed in (sans-IO; tests feed them numbers).

- ``TokenBucket``: ``capacity`` tokens, refilled at ``rate`` per second; ``take(now)``
  spends one or says how long until one is there.
- ``KeyedBuckets``: one bucket per key (a client address, an identity) in bounded memory.
- ``window_take``: a fixed-window counter kept in a store document, so that every node
  sharing the store counts against the same cap (a session's chat).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .errors import ServiceError


class RateLimited(ServiceError):
    """Over a limit: nothing was done; try again after ``retry_after_s``."""

    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__("rate_limited", message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_ms(self) -> int:
        return retry_ms(self.retry_after_s)


def retry_ms(seconds: float) -> int:
    """Whole milliseconds, rounded up and at least 1: "retry now" would be a lie."""
    return max(1, int(-(-seconds * 1000 // 1)))


@dataclass
class TokenBucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.rate <= 0:
            raise ValueError("a bucket needs capacity >= 1 and rate > 0")
        if self.tokens < 0:
            self.tokens = float(self.capacity)  # a new bucket starts full

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        # A clock that steps back refills nothing (and never drains).
        self.stamp = max(self.stamp, now)

    def take(self, now: float, cost: float = 1.0) -> float | None:
        """Spend ``cost`` tokens: None if done, else the seconds until they would be there
        (nothing is spent then)."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return None
        return (cost - self.tokens) / self.rate

    def full_at(self) -> float:
        """When the bucket is full again if nothing is taken: from then on it is the same
        as a new bucket, so forgetting it changes nothing."""
        return self.stamp + (self.capacity - self.tokens) / self.rate


class KeyedBuckets:
    """One ``TokenBucket`` per key, at most ``max_keys`` of them.

    Buckets are kept in least-recently-used order. A bucket that has refilled to full is
    dropped (a new one would be identical). When ``max_keys`` is reached by a flood of
    distinct keys, the least recently used bucket is dropped even if not full: memory is
    bounded first, and that key starts again with a full bucket (the price of the bound).
    """

    def __init__(self, capacity: float, rate: float, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float, cost: float = 1.0) -> float | None:
        self._evict(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.capacity, self.rate, stamp=now)
            while len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def _evict(self, now: float) -> None:
        # The least recently used bucket is the one most likely full: stop at the first
        # that is not (amortised O(1) per call).
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if bucket.full_at() > now:
                return
            del self._buckets[key]


def window_take(
    doc: dict[str, Any] | None, now: float, cap: int, window_s: float
) -> dict[str, Any] | None:
    """A fixed-window counter as a store document ``{"w": window, "n": count}``: the
    document after one more use, or None when this window's ``cap`` is spent (for
    ``Store.update``: None leaves the document as it was, so a refusal writes nothing)."""
    w = int(now // window_s)
    if doc is None or doc.get("w") != w:
        return {"w": w, "n": 1}
    if int(doc.get("n", 0)) >= cap:
        return None
    return {"w": w, "n": int(doc["n"]) + 1}


def window_retry(now: float, window_s: float) -> float:
    """Seconds until the current fixed window ends."""
    return (int(now // window_s) + 1) * window_s - now
