"""What a peer publishes and receives: the records negotiation makes (no I/O).

A ``Publication`` is one of a participant's m-lines that sends a track to the SFU (a
microphone, camera, document or screen); a ``Subscription`` is one that receives a
published track. The forwarding state of each (``Upstream``, ``Leg``) is the core's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .forwarder import Leg, Upstream

if TYPE_CHECKING:
    from aiortc import MediaStreamTrack

# What a participant may publish, and the kind of m-line each needs.
SOURCES = {"microphone": "audio", "camera": "video", "document": "video", "screen": "video"}


@dataclass
class Publication:
    track_id: str
    mid: str
    kind: str
    source: str
    upstream: Upstream | None = None
    mid_ext_id: int = 0
    rtx_payload_type: int | None = None
    remote_track: MediaStreamTrack | None = None  # transcode mode only

    def describe(self, owner: dict[str, Any]) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "kind": self.kind,
            "source": self.source,
            "codec": self.upstream.codec if self.upstream else None,
            **owner,
        }


@dataclass
class Subscription:
    mid: str
    track_id: str
    upstream: Upstream
    generation: int  # the negotiation that created it
    leg: Leg | None = None
    flowing: bool = False
