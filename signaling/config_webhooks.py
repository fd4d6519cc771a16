"""The webhooks' settings (signaling/webhooks.py, docs/webhooks.md): a base of
``signaling.config.Config``, kept apart so config.py stays within its size; each is
documented in docs/configuration.md, with ``JR_*`` variables as every setting.
"""

from __future__ import annotations

from typing import Literal, Self, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

WebhookEvent = Literal[
    "session.started",
    "session.ended",
    "recording.ready",
    "export.ready",
    "opinion.filed",
    "exception.raised",
    "exception.handled",
]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = get_args(WebhookEvent)  # every one, in order


class WebhookSettings(BaseModel):
    # Webhooks to the approval system (signaling/webhooks.py, docs/webhooks.md): every
    # event of webhook_events is POSTed to each URL, signed with webhook_secret, retried
    # with exponential backoff (webhook_backoff_s doubling up to webhook_backoff_max_s)
    # until webhook_max_attempts or webhook_max_age_s. Empty webhook_urls: none are sent.
    webhook_urls: list[str] = Field(default_factory=list)
    webhook_secret: str = ""
    webhook_events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    webhook_backoff_s: float = Field(1.0, gt=0)
    webhook_backoff_max_s: float = Field(600.0, gt=0)
    webhook_max_attempts: int = Field(15, ge=1, le=1000)
    webhook_max_age_s: float = Field(24 * 3600.0, gt=0)
    # A node's claim on a delivery: another node may send it again only after this, so
    # it must outlast a whole attempt (webhook_timeout_s); a crashed node's claim ends.
    webhook_lease_s: float = Field(60.0, gt=0)
    webhook_poll_s: float = Field(1.0, gt=0, le=60)
    webhook_concurrency: int = Field(8, ge=1, le=256)

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")) or len(url) < 10:
                raise ValueError(f"{url!r}: must be an http:// or https:// URL")
        if len(set(v)) != len(v):
            raise ValueError("a URL is listed twice")
        return v

    @model_validator(mode="after")
    def _webhooks(self) -> Self:
        if self.webhook_urls and len(self.webhook_secret) < 32:
            raise ValueError("webhook_secret: at least 32 characters when webhook_urls is set")
        if self.webhook_lease_s <= self.webhook_timeout_s:
            # Shorter, and a slow attempt's delivery could be claimed and sent twice.
            raise ValueError("webhook_lease_s must be longer than webhook_timeout_s")
        return self
