"""Redis store: the same contract as ``MemoryStore``, shared by every node.

Keys live under a prefix (``jr:`` by default): documents are JSON strings changed with
WATCH/MULTI, logs are lists, indexes are sorted sets, ephemeral values are strings with
an expiry. How far each trimmed log was trimmed is a field of one hash (``jr:trimmed``):
a log's next sequence number is that plus its length. The bus is Redis pub/sub: one
connection per node subscribes to the topics that local handlers want, and one reader
task hands each message to the local fan-out. Subscriptions asked for at once (a burst of
sockets arriving) go upstream as one SUBSCRIBE.

Connections: at most ``redis_pool_size`` commands run at once (``guarded`` takes a slot;
a call that waits longer than ``redis_pool_timeout_s`` for one is refused as an outage,
503 ``store_unavailable``); the pool is built in ``redis_connect.py`` (plain or Sentinel).

Job queues are Redis Streams with one consumer group (``workers``): XREADGROUP hands a
new job to exactly one consumer, the group's pending list remembers who holds what,
XAUTOCLAIM takes over a job whose holder stopped touching it, and an acknowledged job is
deleted from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError, WatchError

from .base import Doc, Handler, Job, Outage, Store, Subscription, Updater
from .local_bus import LocalBus
from .redis_connect import RedisOptions, client_for
from .redis_guard import PINNED, durable, guarded, is_outage, unslotted

log = logging.getLogger(__name__)


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


# Logs: KEYS[1] the list, KEYS[2] the hash of trimmed counts, ARGV[1] the list's name.
# ARGV[3]: the floor a log with no numbering starts after ('' : append nothing, say 0).
_APPEND = """
local base = redis.call('HGET', KEYS[2], ARGV[1])
local len = redis.call('LLEN', KEYS[1])
if not base then
  base = 0
  if len == 0 then
    if ARGV[3] == '' then return 0 end
    base = tonumber(ARGV[3])
    if base > 0 then redis.call('HSET', KEYS[2], ARGV[1], base) end
  end
end
local n = tonumber(base) + len + 1
local sep = ','
if ARGV[2] == '}' then sep = '' end
redis.call('RPUSH', KEYS[1], '{"seq":' .. n .. sep .. ARGV[2])
return n
"""
_READ = """
local first = tonumber(ARGV[2]) - tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if first < 0 then first = 0 end
local last = -1
if tonumber(ARGV[3]) >= 0 then last = first + tonumber(ARGV[3]) - 1 end
if last ~= -1 and last < first then return {} end
return redis.call('LRANGE', KEYS[1], first, last)
"""
_TRIM = """
local base = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local drop = math.min(tonumber(ARGV[2]) - base, redis.call('LLEN', KEYS[1]))
if drop <= 0 then return 0 end
redis.call('LTRIM', KEYS[1], drop, -1)
redis.call('HSET', KEYS[2], ARGV[1], base + drop)
return drop
"""
_FORGET = """
if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
# Renew a value for ARGV[2] ms only while it holds ARGV[1] (flat JSON, fields in any order).
_RENEW = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cur ~= ARGV[1] then
  local a, b = cjson.decode(cur), cjson.decode(ARGV[1])
  for k, v in pairs(b) do if a[k] ~= v then return 0 end end
  for k, _ in pairs(a) do if b[k] == nil then return 0 end end
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
GROUP = "workers"
# Touch only a job this consumer still holds (XCLAIM alone would take it from another).
_TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
# Released: still pending (so it is not lost) but idle "forever", so the next
# XAUTOCLAIM of any consumer takes it at once.
_RELEASE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', '1000000000000', 'JUSTID')
return 1
"""


class RedisStore(Store):
    kind = "redis"

    def __init__(
        self, client: aioredis.Redis, prefix: str = "jr:", opts: RedisOptions | None = None
    ) -> None:
        self._client = client
        self.opts = opts or RedisOptions()
        self._slots = asyncio.Semaphore(self.opts.pool_size)
        self._p = prefix
        self._pubsub = client.pubsub()
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._to_subscribe: list[str] = []
        self._bus = LocalBus(on_first=self._sub_upstream, on_last=self._unsub_upstream)
        self._reader: asyncio.Task[None] | None = None
        self._sub_lock = asyncio.Lock()
        self._groups: set[str] = set()
        # Set while the pub/sub connection is down: messages published meanwhile are
        # lost to this node, so it is not healthy until it has subscribed again.
        self._bus_error: str | None = None

    @classmethod
    async def connect(
        cls, url: str, prefix: str = "jr:", opts: RedisOptions | None = None
    ) -> RedisStore:
        opts = opts or RedisOptions()
        client = client_for(url, opts)
        await client.ping()
        return cls(client, prefix, opts)

    @property
    def _r(self) -> aioredis.Redis:
        return PINNED.get() or self._client

    def _k(self, kind: str, key: str) -> str:
        return f"{self._p}{kind}:{key}"

    # -- documents --------------------------------------------------------------------
    @guarded
    async def get(self, key: str) -> Doc | None:
        raw = await self._r.get(self._k("doc", key))
        return json.loads(raw) if raw is not None else None

    @guarded
    async def get_many(self, keys: list[str]) -> list[Doc | None]:
        if not keys:
            return []
        raws = await self._r.mget([self._k("doc", k) for k in keys])
        return [json.loads(r) if r is not None else None for r in raws]

    @guarded
    @durable
    async def create(self, key: str, doc: Doc) -> bool:
        return bool(await self._r.set(self._k("doc", key), _dumps(doc), nx=True))

    @guarded
    async def update(self, key: str, fn: Updater) -> tuple[Doc | None, bool]:
        rkey = self._k("doc", key)
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(rkey)
                    raw = await pipe.get(rkey)
                    if raw is None:
                        await pipe.reset()
                        return None, False
                    current = json.loads(raw)
                    new = fn(json.loads(raw))
                    if new is None or new == current:
                        await pipe.reset()
                        return current, False
                    pipe.multi()
                    pipe.set(rkey, _dumps(new))
                    await pipe.execute()
                    return new, True
                except WatchError:
                    # Another node changed it between our read and write: read again.
                    continue

    # -- logs -------------------------------------------------------------------------
    @guarded
    async def delete(self, keys: list[str]) -> None:
        if keys:
            await self._r.delete(*(self._k("doc", k) for k in keys))

    # -- logs -------------------------------------------------------------------------
    def _trimmed(self) -> str:
        return f"{self._p}trimmed"

    @guarded
    @durable
    async def append(self, key: str, doc: Doc, floor: int | None = 0) -> int:
        # The sequence number must be inside the stored entry, and only Redis knows it
        # atomically: a tiny script pushes and stamps in one step.
        # Splice the sequence number into the JSON text: decoding and re-encoding in
        # Lua (cjson) would round floats such as timestamps.
        body = _dumps({k: v for k, v in doc.items() if k != "seq"})[1:]
        start = "" if floor is None else str(floor)
        log = self._k("log", key)
        seq = await self._r.eval(_APPEND, 2, log, self._trimmed(), key, body, start)
        return int(seq)

    @guarded
    async def read_log(self, key: str, start: int = 0, limit: int | None = None) -> list[Doc]:
        if limit is not None and limit <= 0:
            return []
        # One script: a trim between reading the count and the entries would shift them.
        raws = await self._r.eval(
            _READ, 2, self._k("log", key), self._trimmed(), key, max(0, start), limit or -1
        )
        return [json.loads(r) for r in raws]

    @guarded
    async def trim_log(self, key: str, upto_seq: int) -> int:
        dropped = await self._r.eval(_TRIM, 2, self._k("log", key), self._trimmed(), key, upto_seq)
        return int(dropped)

    @guarded
    async def log_trimmed(self, key: str) -> int:
        return int(await self._r.hget(self._trimmed(), key) or 0)

    @guarded
    async def forget_log(self, key: str, upto_seq: int) -> bool:
        log = self._k("log", key)
        return bool(await self._r.eval(_FORGET, 2, log, self._trimmed(), key, str(upto_seq)))

    @guarded
    async def delete_log(self, key: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._k("log", key))
            pipe.hdel(self._trimmed(), key)
            await pipe.execute()

    # -- indexes ----------------------------------------------------------------------
    @guarded
    async def index_add(self, key: str, member: str, score: float) -> None:
        await self._r.zadd(self._k("idx", key), {member: score})

    @guarded
    async def index_remove(self, key: str, member: str) -> None:
        await self._r.zrem(self._k("idx", key), member)

    @guarded
    async def index_delete(self, key: str) -> None:
        await self._r.delete(self._k("idx", key))

    @guarded
    async def index_range(
        self,
        key: str,
        *,
        min_score: float | None = None,
        max_score: float | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[str]:
        lo = "-inf" if min_score is None else repr(float(min_score))
        hi = "+inf" if max_score is None else repr(float(max_score))
        kw: dict[str, Any] = {}
        if limit is not None:
            kw = {"start": 0, "num": limit}
        rkey = self._k("idx", key)
        if reverse:
            return [str(m) for m in await self._r.zrevrangebyscore(rkey, hi, lo, **kw)]
        return [str(m) for m in await self._r.zrangebyscore(rkey, lo, hi, **kw)]

    @guarded
    async def index_ranges(self, keys: list[str]) -> list[list[str]]:
        async with self._r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrangebyscore(self._k("idx", key), "-inf", "+inf")
            got = await pipe.execute()
        return [[str(m) for m in members] for members in got]

    # -- ephemeral --------------------------------------------------------------------
    @guarded
    async def put_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> None:
        await self._r.set(self._k("eph", key), _dumps(doc), px=max(1, int(ttl_s * 1000)))

    @guarded
    async def create_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        ok = await self._r.set(
            self._k("eph", key), _dumps(doc), px=max(1, int(ttl_s * 1000)), nx=True
        )
        return bool(ok)

    @guarded
    async def renew_ephemeral(self, key: str, doc: Doc, ttl_s: float) -> bool:
        ms = str(max(1, int(ttl_s * 1000)))
        return bool(await self._r.eval(_RENEW, 1, self._k("eph", key), _dumps(doc), ms))

    @guarded
    async def get_ephemeral(self, key: str) -> Doc | None:
        raw = await self._r.get(self._k("eph", key))
        return json.loads(raw) if raw is not None else None

    @guarded
    async def get_ephemeral_many(self, keys: list[str]) -> list[Doc | None]:
        if not keys:
            return []
        raws = await self._r.mget([self._k("eph", k) for k in keys])
        return [json.loads(r) if r is not None else None for r in raws]

    @guarded
    async def delete_ephemeral(self, key: str) -> None:
        await self._r.delete(self._k("eph", key))

    # -- job queues -------------------------------------------------------------------
    async def _stream(self, queue: str, again: bool = False) -> str:
        key = self._k("jobs", queue)
        if again:
            self._groups.discard(key)  # a Redis restarted without its data lost the group
        if key not in self._groups:
            try:
                # From id 0: jobs enqueued before any worker existed are handed out too.
                await self._r.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(key)
        return key

    @guarded
    async def job_enqueue(self, queue: str, data: Doc) -> str:
        key = await self._stream(queue)
        return str(await self._r.xadd(key, {"d": _dumps(data)}))

    async def _deliveries(self, key: str, job_id: str) -> int:
        info = await self._r.xpending_range(key, GROUP, min=job_id, max=job_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    @guarded
    async def job_claim(
        self, queue: str, consumer: str, *, block_s: float = 0.0, reclaim_idle_s: float = 60.0
    ) -> Job | None:
        key = await self._stream(queue)
        try:
            claimed = await self._r.xautoclaim(
                key, GROUP, consumer, int(reclaim_idle_s * 1000), start_id="0-0", count=1
            )
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            key = await self._stream(queue, again=True)
            return None  # a new, empty stream: the next claim waits on it
        for job_id, fields in claimed[1] if len(claimed) > 1 else []:
            if fields:  # None: deleted meanwhile
                deliveries = await self._deliveries(key, job_id)
                return Job(str(job_id), json.loads(fields["d"]), deliveries)
        block = int(min(block_s, self.opts.timeout_s / 2) * 1000) if block_s > 0 else None
        got: Any = await self._r.xreadgroup(GROUP, consumer, {key: ">"}, count=1, block=block)
        for _, entries in got or []:
            for job_id, fields in entries:
                return Job(str(job_id), json.loads(fields["d"]), 1)
        return None

    @guarded
    async def job_touch(self, queue: str, consumer: str, job_id: str) -> bool:
        key = await self._stream(queue)
        return bool(await self._r.eval(_TOUCH, 1, key, GROUP, consumer, job_id))

    @guarded
    async def job_release(self, queue: str, consumer: str, job_id: str) -> None:
        key = await self._stream(queue)
        await self._r.eval(_RELEASE, 1, key, GROUP, consumer, job_id)

    @guarded
    async def job_ack(self, queue: str, job_id: str) -> None:
        key = await self._stream(queue)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xack(key, GROUP, job_id)
            pipe.xdel(key, job_id)
            await pipe.execute()

    @guarded
    async def job_count(self, queue: str) -> int:
        return int(await self._r.xlen(self._k("jobs", queue)))

    # -- bus --------------------------------------------------------------------------
    def _channel(self, topic: str) -> str:
        return f"{self._p}bus:{topic}"

    @guarded
    async def publish(self, topic: str, message: Doc) -> None:
        await self._r.publish(self._channel(topic), _dumps(message))

    @unslotted
    async def subscribe(self, topic: str, handler: Handler) -> Subscription:
        return await self._bus.add(topic, handler)

    async def _sub_upstream(self, topic: str) -> None:
        channel = self._channel(topic)
        # redis-py sends SUBSCRIBE and returns at once; the confirmation arrives through
        # the reader. Waiting for it makes the contract hold: once we return, a message
        # published anywhere reaches us. Channels asked for while a SUBSCRIBE is on its
        # way go together in the next one (a burst of sockets: a few round trips).
        confirmed = self._confirm.get(channel)
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirm[channel] = confirmed
            self._to_subscribe.append(channel)
        try:
            async with self._sub_lock:
                batch, self._to_subscribe = self._to_subscribe, []
                if batch:
                    try:
                        await self._pubsub.subscribe(*batch)
                    except BaseException as exc:
                        for other in batch:
                            fut = self._confirm.get(other)
                            if fut is not None and other != channel and not fut.done():
                                fut.set_exception(exc)
                                fut.exception()
                        raise
                    if self._reader is None or self._reader.done():
                        self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=self.opts.timeout_s)
        finally:
            if self._confirm.get(channel) is confirmed:
                del self._confirm[channel]

    async def _unsub_upstream(self, topic: str) -> None:
        async with self._sub_lock:
            # Redis away: a channel nobody here listens to costs nothing; never fail
            # a socket's cleanup over it.
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(self._channel(topic))

    async def _read(self) -> None:
        prefix = len(self._p) + len("bus:")
        outage = Outage("redis pub/sub", log)
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Connection lost: redis-py reconnects and re-subscribes on the next
                # call; wait a little instead of spinning, and say so once.
                if is_outage(exc):
                    outage.failed(exc)
                    self._bus_error = f"the bus is reconnecting to Redis: {exc}"
                else:
                    log.warning("redis pub/sub read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            if msg is None:
                continue
            # After a reconnect: the confirmations of the re-subscription.
            outage.ok()
            self._bus_error = None
            if msg.get("type") == "subscribe":
                fut = self._confirm.get(str(msg["channel"]))
                if fut is not None and not fut.done():
                    fut.set_result(None)
                continue
            if msg.get("type") != "message":
                continue
            try:
                payload = json.loads(msg["data"])
            except (TypeError, json.JSONDecodeError):
                log.warning("dropping malformed bus message on %s", msg.get("channel"))
                continue
            self._bus.deliver(str(msg["channel"])[prefix:], payload)

    # -- lifecycle --------------------------------------------------------------------
    async def ping(self) -> bool:
        return bool((await self.health())["ok"])

    async def health(self) -> Doc:
        try:
            ok = bool(await self._client.ping())
            if ok and self._bus_error is not None:
                return {"ok": False, "kind": self.kind, "error": self._bus_error}
            return {"ok": ok, "kind": self.kind}
        except (RedisError, OSError) as exc:
            # redis-py's ConnectionError is not the builtin one: both are caught here.
            return {"ok": False, "kind": self.kind, "error": f"Redis is unavailable: {exc}"}

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        await self._client.aclose()
