"""Webhooks to the approval system: timeline events POSTed as signed JSON, retried, once.

When the service records one of the events in ``TRIGGERS`` (``ServiceCore.record`` calls
``Webhooks.on_event``), one **delivery** per configured URL is written to the store
before the request that caused it is answered, so deliveries outlive the process. The
event was announced in the outbox before it was filed (``signaling.outbox``): if the
node dies before its deliveries are written, any node's ``catch_up`` writes them. A
delivery's id comes from its event and URL and its document is created once, so either
way there is one delivery per event and URL.

- ``webhook:<delivery_id>``: the delivery (exact body text, status, attempts, lease);
- ``webhooks:due``: deliveries waiting to be sent, scored by their next attempt time;
- ``webhooks:all`` and ``webhooks:status:<status>``: listings for the admin view, by
  creation time (the document is the truth; a listing re-checks the status).

Every node with ``webhook_urls`` runs a dispatcher that reads the due index and
**claims** a delivery with the store's compare-and-set ``update`` (status
``delivering`` plus a lease naming the node) before sending it, so one node sends each
attempt. A node that dies mid-attempt leaves its lease to expire; another node (or the
same one after a restart) then sends again. Delivery is therefore at least once and, in
practice, once: receivers deduplicate by the body's ``id``.

Each request carries ``Authorization: <JWT>`` (HS256 with ``webhook_secret``; claims
``iss``, ``iat``, ``exp`` and ``sha256`` = base64 of the SHA-256 of the body bytes, as
LiveKit signs its webhooks) and ``X-JointReview-Signature: sha256=<hex HMAC-SHA256>``.
2xx is delivered; connection errors, timeouts, 429 and 5xx are retried with
exponential backoff (``Retry-After`` is honoured); any other status stops. The signature
headers are made in ``signaling.webhook_signing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web

from . import __version__, outbox
from .background import stopping
from .config import Config
from .models import Event
from .outbox import TRIGGERS
from .replay import casefile_url
from .state import Outage, Store, StoreUnavailable
from .webhook_signing import parse_retry_after, redact, sign

log = logging.getLogger(__name__)

Status = Literal["pending", "delivering", "delivered", "failed"]
STATUSES: tuple[Status, ...] = ("pending", "delivering", "delivered", "failed")
DUE = "webhooks:due"
ALL = "webhooks:all"
RESPONSE_EXCERPT = 300  # bytes of the receiver's answer kept with each attempt


def _key(delivery_id: str) -> str:
    return f"webhook:{delivery_id}"


def _by_status(status: str) -> str:
    return f"webhooks:status:{status}"


# -- the queue and the dispatcher -------------------------------------------------------


class Webhooks:
    def __init__(
        self,
        store: Store,
        config: Config,
        node_id: str,
        *,
        archive_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.node_id = node_id
        self.archive_dir = archive_dir
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        # delivery id -> (its sending task, our claim token)
        self._inflight: dict[str, tuple[asyncio.Task[None], str]] = {}
        self.outcomes: dict[str, int] = {}  # attempts by the status they left (metrics)

    @property
    def enabled(self) -> bool:
        return bool(self.config.webhook_urls)

    # -- queueing ---------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        """The service's event hook: queue the event if it is one we send."""
        kind = TRIGGERS.get(event.type)
        if kind is None:
            return
        if kind in self.config.webhook_events and self.enabled:
            await self.enqueue(event)
        # Queued, or not this node's to send (as before the outbox): nothing to catch up.
        await outbox.settle(self.store, event)

    async def _queue_again(self, event: Event) -> None:
        """The outbox's catch-up: the event's node died before queueing it."""
        if TRIGGERS[event.type] in self.config.webhook_events:
            await self.enqueue(event)

    async def enqueue(self, event: Event, urls: Sequence[str] | None = None) -> list[str]:
        """Write one delivery per URL; returns their ids. ``urls`` overrides the config.
        Idempotent: an event already queued for a URL keeps its one delivery."""
        kind = TRIGGERS[event.type]
        urls = list(self.config.webhook_urls if urls is None else urls)
        # From the event itself, so that whoever queues it (its own node, or a node
        # catching up after a crash) makes the same ids.
        event_id = "ev_" + _digest(event.case_id, str(event.seq), repr(event.ts))
        payload = {
            # One id for the event, whatever the endpoint: what receivers deduplicate by.
            "id": event_id,
            "event": kind,
            "created_at": event.ts,
            "case_id": event.case_id,
            "session_id": event.session_id,
            "data": await self._data(event, kind),
        }
        # Stored as text and sent as its UTF-8 bytes, so every retry signs the same bytes.
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        now = self.clock()
        ids = []
        for url in urls:
            did = "wd_" + _digest(event_id, url)
            doc: dict[str, Any] = {
                "delivery_id": did,
                "event_id": payload["id"],
                "event": kind,
                "url": url,
                "case_id": event.case_id,
                "session_id": event.session_id,
                "status": "pending",
                "created_at": now,
                "next_attempt_at": now,
                "attempts": [],
                "retries": [],
                "lease": None,
                # The retry budget counts from here; an admin's retry starts a new one.
                "budget_from": 0,
                "budget_since": now,
                "body": body,
            }
            # The document first: an index member must always have its document.
            if not await self.store.create(_key(did), doc):
                # Queued already; its indexes may be missing if that node died between
                # these writes: put them back (a listing re-checks the status anyway).
                found = await self.store.get(_key(did))
                doc = found if found is not None else doc
            created = float(doc["created_at"])
            await self.store.index_add(ALL, did, created)
            if doc["status"] == "pending":
                await self.store.index_add(_by_status("pending"), did, created)
                await self.store.index_add(DUE, did, float(doc["next_attempt_at"]))
            ids.append(did)
        self._wake.set()
        return ids

    async def _data(self, event: Event, kind: str) -> dict[str, Any]:
        data = dict(event.data)
        data["actor"] = event.actor.model_dump() if event.actor else None
        data["seq"] = event.seq  # the event's place in the case timeline: an order
        if kind == "recording.ready" and event.session_id:
            data["manifest"] = f"{event.case_id}/{event.session_id}/manifest.json"
            # Where to fetch it all (api_archive): the index lists every file and its url.
            data["casefile_url"] = casefile_url(event.session_id)
            data["tracks"] = await asyncio.to_thread(self._tracks, event)
            # A session nobody joined (or without media) is sealed and announced too:
            # its case file holds the timeline, chat, opinions and stills, no recording.
            data["recorded"] = bool(data["tracks"])
        return data

    def _tracks(self, event: Event) -> list[dict[str, Any]]:
        """The recorded tracks, from the manifest just sealed (empty if unreadable)."""
        if self.archive_dir is None or event.session_id is None:
            return []
        path = self.archive_dir / event.case_id / event.session_id / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        tracks = (manifest.get("recording") or {}).get("tracks") or []
        keep = ("file", "kind", "source", "codec", "state", "duration_s")
        return [{k: t.get(k) for k in keep} for t in tracks]

    # -- the admin view (api_webhooks.py shapes it) -------------------------------------
    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        return await self.store.get(_key(delivery_id))

    async def deliveries(
        self, status: str | None, limit: int, before: tuple[float, str] | None = None
    ) -> list[dict[str, Any]]:
        """Newest first, optionally of one status, older than ``before`` (the
        ``(created_at, delivery_id)`` of the previous page's last one: a cursor)."""
        index = ALL if status is None else _by_status(status)
        # A status index may hold a few stale members (a crash between two writes), and
        # deliveries made at the cursor's very time come again: read a little more than
        # asked and keep those whose document agrees.
        want = limit if status is None and before is None else 2 * limit + 20
        while True:
            top = None if before is None else before[0]
            ids = await self.store.index_range(index, max_score=top, reverse=True, limit=want)
            docs = await self.store.get_many([_key(i) for i in ids])
            found = [
                d
                for d in docs
                if d is not None
                and status in (None, d["status"])
                and (before is None or (float(d["created_at"]), d["delivery_id"]) < before)
            ]
            if len(ids) < want or len(found) >= limit:
                return found[:limit]
            want *= 2

    async def retry(self, delivery_id: str, by: str) -> tuple[dict[str, Any] | None, bool]:
        """Send again now, with a fresh budget. Returns the delivery and whether it was
        queued again (a delivery being sent or already delivered is left as it is)."""
        now = self.clock()

        def again(doc: dict[str, Any]) -> dict[str, Any] | None:
            if doc["status"] not in ("pending", "failed"):
                return None
            retries = [*doc.get("retries", []), {"at": now, "by": by}]
            return dict(
                doc,
                status="pending",
                next_attempt_at=now,
                failed_reason=None,
                budget_from=len(doc["attempts"]),
                budget_since=now,
                retries=retries,
            )

        doc, changed = await self.store.update(_key(delivery_id), again)
        if doc is not None and changed:
            await self.store.index_add(_by_status("pending"), delivery_id, doc["created_at"])
            await self.store.index_remove(_by_status("failed"), delivery_id)
            await self.store.index_add(DUE, delivery_id, now)
            self._wake.set()
        return doc, changed

    # -- dispatching ------------------------------------------------------------------
    async def start(self) -> None:
        if not self.enabled:
            return  # webhooks off on this node: deliveries wait for a node that sends
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout_s),
            headers={"User-Agent": f"jointreview-webhooks/{__version__}"},
            connector=aiohttp.TCPConnector(limit=self.config.webhook_concurrency),
        )
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        held = dict(self._inflight)
        for task, _ in held.values():
            task.cancel()
        await asyncio.gather(*(t for t, _ in held.values()), return_exceptions=True)
        # Give our claims back so that the next node (or our restart) sends at once
        # instead of waiting for the lease to run out.
        for did, (_, claim) in held.items():
            with contextlib.suppress(Exception):
                await self._finish(did, claim, self._interrupted(), "release", None)
        if self._http is not None:
            await self._http.close()

    def _interrupted(self) -> dict[str, Any]:
        return {
            "at": self.clock(),
            "node": self.node_id,
            "duration_ms": 0.0,
            "error": "interrupted: the node stopped during the attempt; outcome unknown",
        }

    async def _run(self) -> None:
        catch_up_at = 0.0
        outage = Outage("webhooks", log)
        while not stopping():
            self._wake.clear()
            try:
                if time.monotonic() >= catch_up_at:
                    # At start (a restart after a crash), then every few seconds.
                    catch_up_at = time.monotonic() + outbox.SETTLE_S
                    await outbox.catch_up(self.store, self._queue_again, self.clock())
                await self._dispatch_due()
                outage.ok()
            except StoreUnavailable as exc:
                # The store is unreachable: try again at the next tick; say so once.
                outage.failed(exc)
            except Exception:
                log.exception("webhook dispatch failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.webhook_poll_s)

    async def _dispatch_due(self) -> None:
        free = self.config.webhook_concurrency - len(self._inflight)
        if free <= 0:
            return
        now = self.clock()
        # A few more than the free slots: some may turn out to be taken by another node.
        ids = await self.store.index_range(DUE, max_score=now, limit=free + 8)
        for did in ids:
            if did in self._inflight:
                continue
            if len(self._inflight) >= self.config.webhook_concurrency:
                break
            claim = secrets.token_hex(8)
            doc = await self._claim(did, claim, now)
            if doc is None:
                continue
            task = asyncio.create_task(self._attempt(doc, claim), name=f"webhook-{did}")
            self._inflight[did] = (task, claim)
            task.add_done_callback(functools.partial(self._done, did))

    def _done(self, did: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(did, None)
        self._wake.set()  # a slot is free: look for the next due delivery now

    async def _claim(self, did: str, claim: str, now: float) -> dict[str, Any] | None:
        """Take the delivery for one attempt, or None if it is not ours to send."""
        lease_s = self.config.webhook_lease_s
        node = self.node_id

        def take(doc: dict[str, Any]) -> dict[str, Any] | None:
            lease = doc.get("lease")
            if doc["status"] == "pending":
                if doc["next_attempt_at"] > now:
                    return None
            elif doc["status"] != "delivering" or (lease and lease["until"] > now):
                return None
            attempts = list(doc["attempts"])
            if doc["status"] == "delivering" and lease:
                # A node took it and stopped answering: its attempt's fate is unknown.
                attempts.append(
                    {
                        "n": len(attempts) + 1,
                        "at": lease["since"],
                        "node": lease["node"],
                        "duration_ms": 0.0,
                        "error": "no result: the node sending it stopped (its lease ran out)",
                    }
                )
            lease = {"node": node, "claim": claim, "since": now, "until": now + lease_s}
            return dict(doc, status="delivering", lease=lease, attempts=attempts)

        doc, changed = await self.store.update(_key(did), take)
        if doc is None:
            await self.store.index_remove(DUE, did)  # cannot happen: documents stay
            return None
        if not changed:
            # Not ours now. If its place in the due index is stale (a node stopped
            # between two writes), put it where it belongs so it stops taking a slot.
            if doc["status"] in ("delivered", "failed"):
                await self.store.index_remove(DUE, did)
            elif doc["status"] == "pending" and doc["next_attempt_at"] > now:
                await self.store.index_add(DUE, did, doc["next_attempt_at"])
            elif doc.get("lease") and doc["lease"]["until"] > now:
                await self.store.index_add(DUE, did, doc["lease"]["until"])
            return None
        # Out of the due range until the lease ends: others stop trying to claim it,
        # and if we die it comes back by itself.
        await self.store.index_add(DUE, did, doc["lease"]["until"])
        await self.store.index_add(_by_status("delivering"), did, doc["created_at"])
        await self.store.index_remove(_by_status("pending"), did)
        return doc

    async def _attempt(self, doc: dict[str, Any], claim: str) -> None:
        assert self._http is not None
        did = doc["delivery_id"]
        body = doc["body"].encode("utf-8")
        at = self.clock()
        headers = {
            **sign(body, self.config.webhook_secret, at),
            "Content-Type": "application/json",
            "X-JointReview-Delivery": did,
            "X-JointReview-Event": doc["event"],
            "X-JointReview-Attempt": str(len(doc["attempts"]) + 1),
        }
        attempt: dict[str, Any] = {"at": at, "node": self.node_id}
        started = time.monotonic()
        outcome = "retry"
        retry_after = None
        try:
            # No redirects: a POST must not turn into a GET to somewhere else.
            async with self._http.post(
                doc["url"], data=body, headers=headers, allow_redirects=False
            ) as resp:
                attempt["status_code"] = resp.status
                excerpt = await resp.content.read(RESPONSE_EXCERPT)
                attempt["response"] = excerpt.decode("utf-8", "replace") or None
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock())
                attempt["retry_after_s"] = retry_after
            if 200 <= resp.status < 300:
                outcome = "delivered"
            elif resp.status != 429 and resp.status < 500:
                outcome = "failed"  # the receiver refuses this request: resending won't help
        except TimeoutError:
            attempt["error"] = f"timeout after {self.config.webhook_timeout_s:g} s"
        except aiohttp.ClientError as exc:
            attempt["error"] = f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # a bad URL or the like: recorded, retried, not fatal
            log.exception("webhook %s: unexpected error", did)
            attempt["error"] = f"{type(exc).__name__}: {exc}"[:500]
        attempt["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        try:
            await self._finish(did, claim, attempt, outcome, retry_after)
        except StoreUnavailable as exc:
            # Its lease runs out and it is sent again: at least once, as documented.
            log.warning("webhook %s: the attempt could not be recorded: %s", did, exc)
        except Exception:
            log.exception("webhook %s: recording the attempt failed", did)

    def _delay(self, used: int, retry_after: float | None) -> float:
        """1 s, 2 s, 4 s … (by default) after the 1st, 2nd, 3rd … failed attempt."""
        cfg = self.config
        delay = min(cfg.webhook_backoff_s * 2 ** max(0, used - 1), cfg.webhook_backoff_max_s)
        return max(delay, retry_after) if retry_after is not None else delay

    async def _finish(
        self,
        did: str,
        claim: str,
        attempt: dict[str, Any],
        outcome: str,
        retry_after: float | None,
    ) -> None:
        now = self.clock()
        cfg = self.config

        def settle(doc: dict[str, Any]) -> dict[str, Any] | None:
            attempts = [*doc["attempts"], dict(attempt, n=len(doc["attempts"]) + 1)]
            if (doc.get("lease") or {}).get("claim") != claim:
                if outcome == "release":
                    return None  # already settled before we were stopped
                # Our lease ran out and another node took over: keep the record only.
                return dict(doc, attempts=attempts)
            new = dict(doc, attempts=attempts, lease=None)
            code = attempt.get("status_code")
            if outcome == "release":
                return dict(new, status="pending", next_attempt_at=now)
            if outcome == "delivered":
                return dict(new, status="delivered", delivered_at=now, next_attempt_at=None)
            if outcome == "failed":
                refused = f"HTTP {code}: refused by the receiver, not retried"
                return dict(new, status="failed", failed_reason=refused, next_attempt_at=None)
            used = len(attempts) - int(doc.get("budget_from", 0))
            next_at = now + self._delay(used, retry_after)
            since = float(doc.get("budget_since", doc["created_at"]))
            reason: str | None = None
            if used >= cfg.webhook_max_attempts:
                reason = f"gave up after {used} attempts"
            elif next_at - since > cfg.webhook_max_age_s:
                reason = f"gave up: the next attempt would be after {cfg.webhook_max_age_s:g} s"
            if reason is not None:
                return dict(new, status="failed", failed_reason=reason, next_attempt_at=None)
            return dict(new, status="pending", next_attempt_at=next_at)

        doc, changed = await self.store.update(_key(did), settle)
        if doc is None or not changed or doc.get("lease") is not None:
            return
        status = doc["status"]
        self.outcomes[status] = self.outcomes.get(status, 0) + 1  # pending: to be retried
        await self.store.index_add(_by_status(status), did, doc["created_at"])
        await self.store.index_remove(_by_status("delivering"), did)
        if status == "pending":
            await self.store.index_add(DUE, did, doc["next_attempt_at"])
            # Wake exactly when it is due rather than at the next poll.
            delay = max(0.0, doc["next_attempt_at"] - self.clock())
            asyncio.get_running_loop().call_later(delay, self._wake.set)
        else:
            await self.store.index_remove(DUE, did)
        if status == "failed":
            url, reason = redact(doc["url"]), doc["failed_reason"]
            log.warning("webhook %s to %s failed: %s", did, url, reason)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:24]


WEBHOOKS = web.AppKey("webhooks", Webhooks)
