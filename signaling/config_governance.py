"""Records governance's settings (#18): retention periods and the archive's quota.

A base of ``signaling.config.Config`` (kept apart so config.py stays within its size);
each is documented in docs/configuration.md, with ``JR_*`` variables as every setting.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class GovernanceSettings(BaseModel):
    # Days each part of a sealed case file is kept after its session ended (0: for good);
    # every node's purge (signaling/retention.py) deletes what is due, unless held.
    retention_recordings_days: float = Field(0.0, ge=0)  # tracks/ and exports/
    retention_stills_days: float = Field(0.0, ge=0)  # snapshots/
    retention_casefile_days: float = Field(0.0, ge=0)  # the whole case file
    # The chat's text (timeline lines and record rows become stubs that keep each
    # message's hash); only in case files sealed with the redactable seal (version 2).
    retention_chat_days: float = Field(0.0, ge=0)
    retention_every_s: float = Field(3600.0, gt=0)  # how often each node looks
    # The archive's quota (0: none): healthz reports its use; no recorded session starts
    # once less than disk_min_free_bytes of it is left (archive_quota_full).
    archive_quota_bytes: int = Field(0, ge=0)
