"""One subscriber's copy of an upstream track (``forwarder.Upstream``): its own SSRC,
payload types and extension ids, where its numbering and timestamps stand, and the state
the adaptation keeps for it (paused, held for a keyframe, paced, its link's estimate)."""

from __future__ import annotations

import random
from typing import Any

from .bandwidth import LinkEstimate
from .pacing import Pacer


class Leg:
    """One subscriber's copy of an upstream track."""

    __slots__ = (
        "abs_send_time_id",
        "audio_level_id",
        "echoed",
        "ext_key",
        "frames_mark",
        "keep_ts",
        "key_asked",
        "key_ok",
        "keyframe_wanted",
        "link",
        "octets",
        "pace_rate",
        "pacer",
        "packets",
        "paused",
        "payload_type",
        "refresh_since",
        "resume_seq",
        "retransmitted",
        "rtx_guard",
        "rtx_payload_type",
        "rtx_seq",
        "rtx_ssrc",
        "seq_off",
        "sink",
        "ssrc",
        "start_seq",
        "started",
        "ts_off",
    )

    def __init__(
        self,
        sink: Any,
        ssrc: int,
        payload_type: int,
        *,
        rtx_ssrc: int | None = None,
        rtx_payload_type: int | None = None,
        audio_level_id: int = 0,
        abs_send_time_id: int = 0,
    ) -> None:
        self.sink = sink  # opaque to the core: what the shim sends through
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.audio_level_id = audio_level_id
        self.abs_send_time_id = abs_send_time_id
        # Legs with the same extension ids share one rewritten body per packet.
        self.ext_key = (audio_level_id, abs_send_time_id)
        self.started = False
        self.keyframe_wanted = False
        # Offsets chosen at the first forwarded packet, so a leg starts anywhere.
        self.seq_off = 0
        self.ts_off = 0
        self.start_seq = 0
        self.resume_seq: int | None = None
        self.keep_ts = False  # resuming after a pause: the timestamps run on
        self.paused = False  # video paused: the link is too thin (adaptation.py)
        self.refresh_since: float | None = None  # held for a keyframe since (adaptation.py)
        self.key_ok = False  # held: the publisher's next keyframe may start it
        self.frames_mark = (0.0, 0)  # held: (when, the publisher's frames then)
        self.key_asked = -1e9  # held: a keyframe last asked for
        self.pacer: Pacer | None = None  # a thin leg's video is paced (pacing.py)
        self.pace_rate = 0.0
        self.link: LinkEstimate | None = None  # video legs: the subscriber link's estimate
        self.rtx_seq = random.randrange(1 << 15)
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.echoed = 0  # second copies sent ahead of any NACK (Upstream._echo)
        self.rtx_guard: dict[int, float] = {}
