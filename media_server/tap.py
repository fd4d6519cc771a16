"""What the media server asks of recording: the taps it calls, defined on this side.

The media server forwards; whether and how a room is recorded is not its business. It
calls a ``RecorderTap`` (the node's recorder, handed in by the composition root) to
start recording a room, and the ``RoomTap`` that returns for every received packet, every
sender report and every track's end. It knows no files, paths or formats: live capture
(``recording.live``) implements these Protocols, and nothing here imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .forwarder import Upstream
from .rtp import Header

if TYPE_CHECKING:
    from .room import Room

# (session id, message): a recording's events (``recording.error``), on the event loop
OnEvent = Callable[[str, dict[str, Any]], None]

# The recorder's worker: not started yet (nothing recorded so far), running, or dead.
WriterState = Literal["idle", "running", "stopped"]


class RoomTap(Protocol):
    """The recording of one room (``Room.tap`` while it is recorded).

    ``__call__`` runs on the event loop for every received RTP packet (RTX included):
    it must only enqueue, never wait or write.
    """

    def __call__(self, upstream: Upstream, data: bytes, h: Header) -> None: ...

    def sender_report(self, upstream: Upstream, ntp: int, rtp_ts: int) -> None: ...

    def track_ended(self, upstream: Upstream) -> None: ...

    def stop(self) -> asyncio.Future[dict[str, Any]]:
        """End every track; resolves with a summary once the files are final."""
        ...


class RecorderTap(Protocol):
    """The node's recorder, as ``MediaServer`` uses it."""

    # Where a recording's problems are reported (also those of starting one).
    on_event: OnEvent

    def record(self, room: Room, case_id: str) -> RoomTap:
        """Start recording ``room`` for case ``case_id`` (raises OSError or ValueError
        when it cannot be recorded)."""
        ...

    def writer_state(self) -> WriterState: ...

    def close(self) -> None:
        """Stop once everything queued is written (the rooms were stopped first)."""
        ...
