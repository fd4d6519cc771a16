"""VP8 frames from RTP packets, completed on the marker bit (sans-IO: no asyncio, no I/O).

aiortc's ``JitterBuffer`` releases frame N only when the first packet of frame N+1
arrives, which costs one frame interval (33 ms at 30 fps) per receiver. A browser
completes a frame as soon as its last packet (the one with the RTP marker bit) is in and
every packet back to the frame's first one is present. ``Vp8Framer`` does the same for
code that decodes on its own (the benchmark's probes).

Policy, with no retransmission in sight (the caller sends no NACK):

- A frame is emitted once all its packets, from the one starting partition 0 (VP8
  payload descriptor S=1, PID=0) to the marker, are present with contiguous sequence
  numbers; their order of arrival does not matter.
- When a later frame completes while an earlier one still misses packets, those packets
  are taken as lost: the earlier frame is dropped. VP8 inter frames decode against the
  previous ones, so frames are then discarded until the next keyframe (also at start:
  a decoder cannot begin on an inter frame).
- A packet at or behind the end of the last emitted (or dropped) frame is late: ignored.
  So is a duplicate.
- At most ``max_packets`` packets are held: a stream that never completes a frame (every
  frame damaged, no markers) cannot grow memory. When full, the framer starts over as
  libwebrtc's packet buffer does: everything held is dropped, the next keyframe restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from media_server.aiortc_adapter import parse_vp8_payload

SEQ_MOD = 1 << 16
HALF = 1 << 15  # sequence numbers within half the space ahead count as newer (RFC 3550)
MAX_PACKETS = 512


def seq_ahead(seq: int, ref: int) -> int:
    """How far ``seq`` is ahead of ``ref`` (negative: behind), across the wrap at 65535."""
    d = (seq - ref) % SEQ_MOD
    return d - SEQ_MOD if d >= HALF else d


@dataclass(frozen=True, slots=True)
class Vp8Frame:
    """One encoded frame: the VP8 bitstream without payload descriptors."""

    timestamp: int
    data: bytes
    keyframe: bool
    first_seq: int
    last_seq: int


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: bool
    start: bool  # first packet of the frame: S=1 and partition 0
    keyframe: bool  # meaningful on a start packet only
    data: bytes  # the payload after the VP8 payload descriptor


class Vp8Framer:
    """Feed RTP packets of one VP8 stream (no RTX) with ``push``; get frames back."""

    def __init__(self, max_packets: int = MAX_PACKETS) -> None:
        self.max_packets = max_packets
        self._packets: dict[int, _Packet] = {}
        self._next: int | None = None  # sequence number after the last frame settled
        self._need_key = True
        self._stale_run = 0
        # counts, for reports
        self.emitted = 0
        self.incomplete = 0  # frames lost to missing packets (or to the memory cap)
        self.skipped = 0  # complete frames discarded while waiting for a keyframe
        self.late = 0  # packets of frames already settled
        self.duplicates = 0
        self.malformed = 0

    @property
    def buffered(self) -> int:
        return len(self._packets)

    @property
    def waiting_for_keyframe(self) -> bool:
        """Frames are discarded until a keyframe: the receiver should ask for one."""
        return self._need_key

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> Vp8Frame | None:
        """Take one packet; return the frame it completes, if it completes a decodable one.

        Only the frame a packet belongs to can complete on its arrival, so at most one
        frame comes back per packet."""
        seq %= SEQ_MOD
        if self._next is not None and seq_ahead(seq, self._next) < 0:
            self.late += 1
            self._stale_run += 1
            if self._stale_run > self.max_packets:
                # Not late packets but a stream that restarted its sequence numbers
                # far behind: start over rather than ignore it forever.
                self._reset()
            else:
                return None
        self._stale_run = 0
        if seq in self._packets:
            self.duplicates += 1
            return None
        try:
            start, data = parse_vp8_payload(payload)
        except ValueError:
            self.malformed += 1  # its frame cannot complete; it is dropped as incomplete
            return None
        # VP8 payload header (RFC 7741 4.3), first octet of partition 0: P=0 is a keyframe.
        keyframe = start and len(data) > 0 and not (data[0] & 0x01)
        if len(self._packets) >= self.max_packets:
            self._overflow()
        self._packets[seq] = _Packet(timestamp, marker, start, keyframe, data)
        span = self._frame_around(seq)
        if span is None:
            return None
        return self._settle(*span)

    def _frame_around(self, seq: int) -> tuple[int, int] | None:
        """(first, last) sequence numbers of the complete frame holding ``seq``, if any."""
        packets = self._packets
        timestamp = packets[seq].timestamp
        first = seq
        while not packets[first].start:
            prev = packets.get((first - 1) % SEQ_MOD)
            if prev is None or prev.marker or prev.timestamp != timestamp:
                return None  # a gap, or the previous frame ends before a start was seen
            first = (first - 1) % SEQ_MOD
        last = seq
        while not packets[last].marker:
            following = packets.get((last + 1) % SEQ_MOD)
            if following is None or following.start or following.timestamp != timestamp:
                return None
            last = (last + 1) % SEQ_MOD
        return first, last

    def _settle(self, first: int, last: int) -> Vp8Frame | None:
        if self._next is None:
            self._drop_older_than(first)  # joined mid-stream: partial frames, not losses
        elif first != self._next:
            self._discard_before(first)  # a later frame is complete: the gap is lost
        seqs = [(first + i) % SEQ_MOD for i in range(seq_ahead(last, first) + 1)]
        parts = [self._packets.pop(s) for s in seqs]
        self._next = (last + 1) % SEQ_MOD
        head = parts[0]
        if self._need_key and not head.keyframe:
            self.skipped += 1
            return None
        self._need_key = False
        self.emitted += 1
        data = b"".join(p.data for p in parts)
        return Vp8Frame(head.timestamp, data, head.keyframe, first, last)

    def _discard_before(self, seq: int) -> None:
        """Give up on everything before ``seq``: frames lost, decoding needs a keyframe."""
        dropped = self._drop_older_than(seq)
        # Frames whose packets all vanished leave no timestamp behind: count one at least.
        self.incomplete += max(1, len({p.timestamp for p in dropped}))
        self._need_key = True
        self._next = seq

    def _drop_older_than(self, seq: int) -> list[_Packet]:
        older = [s for s in self._packets if seq_ahead(s, seq) < 0]
        return [self._packets.pop(s) for s in older]

    def _overflow(self) -> None:
        # Which of the held packets would still complete is unknowable (none has for
        # max_packets packets): drop them all and start over as on joining.
        self.incomplete += max(1, len({p.timestamp for p in self._packets.values()}))
        self._reset()

    def _reset(self) -> None:
        self._packets.clear()
        self._next = None
        self._need_key = True
        self._stale_run = 0
