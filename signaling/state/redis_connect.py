"""How a node connects to Redis: one bounded pool per node, plain or through Sentinel.

URLs:

- ``redis://[user:password@]host:port/db``, ``rediss://...``, ``unix:///path?db=0``:
  one Redis (redis-py's own URL syntax);
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``:
  the primary of ``service_name`` as the sentinels at those addresses name it, followed
  through failovers. The user and password are the data nodes' (primary and replicas);
  sentinels that require a password of their own take ``?sentinel_password=...``. The
  spelling is the one Celery/Kombu and Bitnami's charts use for sentinels (a list of
  ``host:port`` in the authority, the master's name as the first path segment).

The pool is bounded deliberately: ``redis_pool_size`` connections for commands (the
store lets at most that many commands run at once, others wait up to
``redis_pool_timeout_s`` and are then refused with ``store_unavailable``), plus one for
the node's single pub/sub connection and a few for health checks. Nothing a socket does
holds a connection of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
SPARE_CONNECTIONS = 4  # pub/sub (one) and health checks, outside the command slots


@dataclass(frozen=True)
class RedisOptions:
    """The node's Redis settings (``redis_*`` in signaling/config.py)."""

    pool_size: int = 32
    pool_timeout_s: float = 5.0
    timeout_s: float = 5.0
    wait_replicas: int = 0  # >0: a filed write is acknowledged once on this many replicas
    wait_ms: int = 1000


def redis_options(config: Any) -> RedisOptions:
    """The ``redis_*`` settings of a ``signaling.config.Config``."""
    return RedisOptions(
        pool_size=config.redis_pool_size,
        pool_timeout_s=config.redis_pool_timeout_s,
        timeout_s=config.redis_timeout_s,
        wait_replicas=config.redis_wait_replicas,
        wait_ms=config.redis_wait_ms,
    )


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse_sentinel_url(url: str) -> SentinelTarget:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r}: expected host:port")
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("the path must be /service_name or /service_name/db")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return SentinelTarget(
        hosts,
        unquote(path[0]),
        int(db),
        username,
        password,
        query.pop("sentinel_password", None),
        query,
    )


def client_for(url: str, opts: RedisOptions) -> aioredis.Redis:
    """A client whose pool holds at most ``pool_size`` + spare connections. Timeouts: a
    Redis that stops answering becomes an error on that call, never a call that waits
    for ever (the longest BLOCK the store sends stays under ``timeout_s``)."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "health_check_interval": 30,
        "socket_connect_timeout": min(5.0, opts.timeout_s),
        "socket_timeout": opts.timeout_s,
        "max_connections": opts.pool_size + SPARE_CONNECTIONS,
    }
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return aioredis.from_url(url, **common)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        target.sentinels,
        # Asking a sentinel is quick or that sentinel is away: the next one is asked.
        sentinel_kwargs={
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
            "password": target.sentinel_password,
        },
    )
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        **common,
    )
