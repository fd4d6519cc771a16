"""The settings of the case file's seal and of the export watermark (issue #18), a base
of ``Config`` (signaling/config.py), kept here so that module stays within its size."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class SealSettings(BaseModel):
    # The seal of each case file (recording/seal.py): "ed25519-sha256", or "sm2-sm3"
    # (国密: SM2 signatures, SM3 for the files and the timeline's chain). The node's key
    # is made on first start in seal_key_file (empty: <data_dir>/seal-ed25519.pem or
    # seal-sm2.pem, mode 0600); seal_public_keys lists every node's public key
    # (key id = "<kind>:<base64>", as `jointreview seal-key` prints it) so that any node
    # and `jointreview verify` can check any seal.
    seal_algorithm: Literal["ed25519-sha256", "sm2-sm3"] = "ed25519-sha256"
    seal_key_file: Path | None = None
    seal_public_keys: dict[str, str] = Field(default_factory=dict)
    # A composite export downloaded by a person carries who downloaded it and when,
    # burned into the picture (recording/watermark.py); the download's audit says so.
    export_watermark: bool = False
    # The watermarked copies are made by a background job (signaling/export_watermark.py):
    # this many at once on a node, at most _queue waiting or running on a node and
    # _per_person of one person's; kept 10 minutes in _dir (empty: <data_dir>/watermarked;
    # several nodes: storage they share, or a download reaches only the node that made it).
    export_watermark_workers: int = Field(default=1, ge=1, le=16)
    export_watermark_queue: int = Field(default=8, ge=1, le=1000)
    export_watermark_per_person: int = Field(default=2, ge=1, le=100)
    export_watermark_dir: Path | None = None

    @field_validator("seal_public_keys")
    @classmethod
    def _seal_keys(cls, v: dict[str, str]) -> dict[str, str]:
        from recording.seal import public_keys

        public_keys(v)  # ValueError: an entry that is no key, or not that id's key
        return v
