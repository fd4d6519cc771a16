"""Media health as the SFU itself counts it (no I/O, time passed in), for the supervisors'
live overview: per published track the loss of what reached the SFU, and for video the
frame rate and the freezes; per participant a summary of their tracks.

``TrackHealth`` is fed by the forwarding core: one ``frame`` per video frame (the RTP
marker bit of an in-order packet) and the loss fraction of each receiver report it
sends the publisher. Everything else is read from the core's own counters when asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .forwarder import Upstream
    from .room import Room

# A gap between two frames longer than this is a freeze (a viewer sees the picture stop).
# Screen and document shares may send slowly when nothing moves: their freezes are
# reported, but only a camera's count towards the participant's ``frozen``.
FREEZE_S = 1.0
RATE_WINDOW_S = 1.0  # the frame rate is the frames of the last full window of this long


class TrackHealth:
    """One published track's running figures (its ``Upstream`` holds one)."""

    __slots__ = ("_win_at", "_win_n", "frames", "freezes", "last_frame_at", "loss", "rate")

    def __init__(self) -> None:
        self.frames = 0
        self.freezes = 0
        self.last_frame_at = 0.0
        self.loss = 0.0  # fraction lost in the last receiver-report interval (after repair)
        self.rate = 0.0
        self._win_at = 0.0
        self._win_n = 0

    def frame(self, now: float) -> None:
        if self.frames and now - self.last_frame_at > FREEZE_S:
            self.freezes += 1
        if self.frames == 0 or now - self._win_at > 4 * RATE_WINDOW_S:
            self._win_at, self._win_n = now, 0  # first frame, or after a long stop
        elif now - self._win_at >= RATE_WINDOW_S:
            self.rate = self._win_n / (now - self._win_at)
            self._win_at, self._win_n = now, 0
        self._win_n += 1
        self.frames += 1
        self.last_frame_at = now

    def fps(self, now: float) -> float:
        """Frames per second now: 0 while frozen; in the first second, so far."""
        if now - self.last_frame_at > FREEZE_S:
            return 0.0
        if self.rate == 0.0 and self._win_n > 1 and self.last_frame_at > self._win_at:
            return (self._win_n - 1) / (self.last_frame_at - self._win_at)
        return self.rate


def track(up: Upstream, source: str, now: float) -> dict[str, Any]:
    h = up.health
    out: dict[str, Any] = {
        "track_id": up.track_id,
        "kind": up.kind,
        "source": source,
        "loss": round(h.loss, 4),
        "lost": up.unrepaired()[0],
        "received": up.received,
        "jitter_ms": round(1000.0 * up.jitter / up.clock_rate, 1) if up.clock_rate else 0.0,
    }
    if up.kind == "video":
        frozen = h.frames > 0 and now - h.last_frame_at > FREEZE_S
        out.update(fps=round(h.fps(now), 1), frames=h.frames, freezes=h.freezes, frozen=frozen)
    return out


def room(r: Room, now: float) -> list[dict[str, Any]]:
    """Every peer of the room: its connection, what it publishes (with the figures
    above) and how many tracks flow to it; ``loss`` is its worst track's, ``fps`` its
    camera's, ``freezes`` all its video's, ``frozen`` whether its camera stands still."""
    out = []
    for pid, peer in r.peers.items():
        tracks = [
            track(up, pub.source, now) for up, owner, pub in r.tracks.values() if owner is peer
        ]
        camera = next((t for t in tracks if t["source"] == "camera"), None)
        out.append(
            {
                "participant_id": pid,
                "connection": peer.pc.connectionState,
                "tracks": tracks,
                "receiving": sum(1 for s in peer.subscriptions.values() if s.flowing),
                "loss": max((t["loss"] for t in tracks), default=0.0),
                "fps": camera["fps"] if camera else None,
                "freezes": sum(t.get("freezes", 0) for t in tracks),
                "frozen": bool(camera and camera["frozen"]),
                "frozen_s": _frozen_for(r, peer, now),
            }
        )
    return out


def _frozen_for(r: Room, peer: object, now: float) -> float:
    """How long its camera has stood still (0 while it moves or before its first frame)."""
    for up, owner, pub in r.tracks.values():
        if owner is peer and pub.source == "camera" and up.kind == "video":
            h = up.health
            gap = now - h.last_frame_at
            return round(gap, 1) if h.frames > 0 and gap > FREEZE_S else 0.0
    return 0.0
