"""What goes through the recorder's one queue, from the event loop to its writer thread.

A received RTP packet is a ``Packet``: a plain tuple, because one is made on the event
loop for every packet (a tuple display costs ~0.05 µs; a NamedTuple's constructor
~0.5 µs, a third of the whole hook). Everything else is a command, one frozen
dataclass per operation, which the writer dispatches with ``match``
(``Recorder._command``). Packets may be dropped when the queue is full; commands never.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from media_server.rtp import Header

if TYPE_CHECKING:
    from .room_tap import RoomRecording, TrackRef
    from .writer import WrittenTrack

# (track, the packet as received, its parsed header, arrival as time.time(), the
# track's media SSRC when it arrived: a packet of another SSRC is RTX)
Packet: TypeAlias = "tuple[TrackRef, bytes, Header, float, int | None]"


@dataclass(frozen=True, slots=True)
class Start:
    """A room's recording starts: a new run in its session's ``recording.json``."""

    recording: RoomRecording


@dataclass(frozen=True, slots=True)
class SenderReport:
    """An RTCP sender report of a recorded track (NTP and RTP time of one instant)."""

    track: TrackRef
    ntp: int
    rtp_ts: int
    arrival: float


@dataclass(frozen=True, slots=True)
class End:
    """A recorded track ended (unpublished, its peer gone, or the recording stopped)."""

    track: TrackRef


@dataclass(frozen=True, slots=True)
class Stop:
    """A room's recording stops; ``done`` resolves (on the loop) with its summary once
    its files are closed and repaired."""

    recording: RoomRecording
    done: asyncio.Future[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Repaired:
    """From the repair thread: a closed track's file is final (or could not be made so)."""

    track: WrittenTrack
    result: dict[str, Any] | BaseException


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing to do but look at the queue (the recorder closing: the writer sees it)."""


Command: TypeAlias = Start | SenderReport | End | Stop | Repaired | Wake
Item: TypeAlias = "Packet | Command"
