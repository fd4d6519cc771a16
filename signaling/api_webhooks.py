"""HTTP routes for the webhook deliveries: the supervisors' and admins' view of what was
sent to the approval system, each attempt, and a retry (registered on import)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from . import paging, policy
from .api import PAGE_DEFAULT, PAGE_MAX, Ctx, page, route
from .errors import BadRequest, Conflict, NotFound
from .webhooks import STATUSES, WEBHOOKS, Status, redact

DELIVERY_ID = re.compile(r"wd_[0-9a-f]{24}")


class WebhookAttempt(BaseModel):
    n: int
    at: float
    node: str
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    response: str | None = None  # the first bytes of the receiver's answer


class WebhookDelivery(BaseModel):
    delivery_id: str
    event_id: str
    event: str
    url: str  # without credentials or query string
    case_id: str
    session_id: str | None = None
    status: Status
    created_at: float
    next_attempt_at: float | None = None
    delivered_at: float | None = None
    failed_reason: str | None = None
    attempt_count: int
    last_attempt: WebhookAttempt | None = None


class WebhookRetry(BaseModel):
    at: float
    by: str


class WebhookDeliveryDetail(WebhookDelivery):
    attempts: list[WebhookAttempt]
    retries: list[WebhookRetry]
    payload: dict[str, Any]  # the body as sent


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDelivery]
    next_cursor: str | None = None  # the next page's; None at the end


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    attempts = doc.get("attempts", [])
    fields = {k: doc[k] for k in WebhookDelivery.model_fields if k in doc}
    return dict(
        fields,
        url=redact(doc["url"]),
        attempt_count=len(attempts),
        last_attempt=attempts[-1] if attempts else None,
    )


def _detail(doc: dict[str, Any]) -> WebhookDeliveryDetail:
    return WebhookDeliveryDetail.model_validate(
        dict(
            _summary(doc),
            attempts=doc.get("attempts", []),
            retries=doc.get("retries", []),
            payload=json.loads(doc["body"]),
        )
    )


def _unscoped(ctx: Ctx) -> None:
    policy.check_unscoped(ctx.identity, "the webhook log")


async def _doc(ctx: Ctx) -> dict[str, Any]:
    _unscoped(ctx)
    did = ctx.request.match_info["delivery_id"]
    doc = None
    if DELIVERY_ID.fullmatch(did):
        doc = await ctx.request.app[WEBHOOKS].delivery(did)
    if doc is None:
        raise NotFound("delivery_not_found", f"no webhook delivery {did[:80]!r}")
    return doc


@route(
    "GET",
    "/api/webhooks/deliveries",
    "List webhook deliveries, newest first",
    policy.WATCHERS,
    response=WebhookDeliveryList,
    tag="webhooks",
    query={"status": " | ".join(STATUSES), **paging.query_doc(PAGE_DEFAULT, PAGE_MAX)},
)
async def list_webhook_deliveries(ctx: Ctx) -> Any:
    _unscoped(ctx)
    q = ctx.request.query
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest("invalid_query", f"status is one of {', '.join(STATUSES)}")
    limit, cursor = page(ctx)
    at = paging.decode(paging.DELIVERIES, cursor, {"t": float, "i": str})
    before = None if at is None else (at["t"], at["i"])
    # One more than the page: whether a next page exists, without an empty last one.
    docs = await ctx.request.app[WEBHOOKS].deliveries(status, limit + 1, before)
    views = [WebhookDelivery.model_validate(_summary(d)) for d in docs[:limit]]
    next_cursor = None
    if len(docs) > limit:
        last = docs[limit - 1]
        next_cursor = paging.encode(
            paging.DELIVERIES, t=float(last["created_at"]), i=last["delivery_id"]
        )
    return WebhookDeliveryList(deliveries=views, next_cursor=next_cursor)


@route(
    "GET",
    "/api/webhooks/deliveries/{delivery_id}",
    "Read a webhook delivery with its attempts",
    policy.WATCHERS,
    response=WebhookDeliveryDetail,
    tag="webhooks",
)
async def get_webhook_delivery(ctx: Ctx) -> Any:
    return _detail(await _doc(ctx))


@route(
    "POST",
    "/api/webhooks/deliveries/{delivery_id}/retry",
    "Send a webhook delivery again now",
    policy.WEBHOOK_ADMINS,
    response=WebhookDeliveryDetail,
    tag="webhooks",
)
async def retry_webhook_delivery(ctx: Ctx) -> Any:
    found = await _doc(ctx)
    doc, changed = await ctx.request.app[WEBHOOKS].retry(found["delivery_id"], ctx.identity.sub)
    if doc is None:
        raise NotFound("delivery_not_found", "no such webhook delivery")
    if not changed:
        code = "already_delivered" if doc["status"] == "delivered" else "delivery_in_progress"
        raise Conflict(
            code, f"this delivery is {doc['status']}: only a pending or failed one is sent again"
        )
    return _detail(doc)
