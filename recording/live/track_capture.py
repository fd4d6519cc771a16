"""One track's capture, on the recorder's writer thread: RTP in, the sender's frames out,
muxed as they were encoded (no decoding, no transcoding).

Packets arrive in arrival order (retransmissions late, some lost). ``Reorder`` puts them
back in sequence order, waiting a little for a retransmission before it gives a gap up;
the assembler joins a video frame's packets (complete on the marker bit, or when the
timestamp changes) and, after a gap, drops frames until the next keyframe, because a
frame that refers to a lost one would only decode as garbage. Frames are written as
they were encoded (pts = unwrapped RTP timestamp, time base 1/clock rate).

Containers: VP8 and Opus in WebM, written live by ``webm.LiveWebm`` (one cluster per
batch of the recorder's writer, one ``write``); H.264 in fragmented MP4, one fragment per
frame, muxed by PyAV (the mp4 muxer refuses VP8). Either way what was written stays
playable after a ``kill -9``; ``recording.repair`` (a no-decode remux by FFmpeg) then
restores the duration and the index, and makes every closed file final.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from media_server import rtp
from media_server.aiortc_adapter import h264_depayload
from recording.bitstream import annexb_nals, sps_dimensions, vp8_payload
from recording.webm import LiveWebm, webm_header

from .reorder import GAP, Reorder

if TYPE_CHECKING:
    from .commands import Packet

# A fragment per frame; each reaches the OS as it is written. The last frame waits for
# the next one (its duration), so a kill loses about one frame interval.
FMP4_OPTIONS = {
    "movflags": "empty_moov+default_base_moof+frag_every_frame",
    "flush_packets": "1",
}

# codec (lower-case mime type) -> (file extension, container format)
CONTAINERS = {
    "video/vp8": ("webm", "webm"),
    "audio/opus": ("webm", "webm"),
    "video/h264": ("mp4", "mp4"),
}

VIDEO_WAIT_S = 0.3  # video has NACK/RTX: give a retransmission time to arrive
AUDIO_WAIT_S = 0.1  # audio has none: a gap is final almost at once
KEYFRAME_ASK_EVERY_S = 0.5
# Browsers send keyframes only when asked; a file with one keyframe seeks (replay) and
# splits (parallel export) only at its start. 0: never ask unprompted.
KEYFRAME_EVERY_S = 10.0
KEYFRAME_REASK_S = 2.0  # such an ask is no emergency: repeated this often if unanswered


def container_for(codec: str) -> tuple[str, str] | None:
    return CONTAINERS.get(codec.lower())


# -- one track ---------------------------------------------------------------------------


class TrackCapture:
    """Depacketize and mux one track into ``path``; writer thread only.

    ``feed`` raises what the file system raises (full disk, I/O error): the recorder
    turns that into a report and stops this track, never the others.
    """

    def __init__(
        self,
        path: Path,
        codec: str,
        clock_rate: int,
        request_keyframe: Callable[[], None] = lambda: None,
        keyframe_every_s: float = KEYFRAME_EVERY_S,
    ) -> None:
        found = container_for(codec)
        if found is None:
            raise ValueError(f"no container for {codec}")
        self.path = path
        self.format = found[1]
        self.codec = codec.lower()
        self.kind = self.codec.split("/")[0]
        self.video = self.kind == "video"
        # ``feed`` for one queued ``(_, data, header, arrival, media ssrc)``, as the
        # recorder's writer takes it off its queue. The usual packet (in order, from the
        # source being written, not RTX) takes a short path; any other goes through
        # ``feed``. On the writer's cold caches every bytecode counts.
        self.push: Callable[[Packet], None] = (
            self._push_vp8
            if self.codec == "video/vp8"
            else self._push_audio
            if not self.video
            else self._push_other
        )
        self.clock_rate = clock_rate
        self.time_base = Fraction(1, clock_rate)
        self.request_keyframe = request_keyframe
        self.reorder = Reorder(VIDEO_WAIT_S if self.kind == "video" else AUDIO_WAIT_S)
        self._is_key_start = rtp.keyframe_detector(self.codec)
        self._depay = vp8_payload if self.codec == "video/vp8" else h264_depayload
        # The output, opened on the first usable frame: a LiveWebm, or (H.264) a PyAV
        # container and its stream.
        self.out: Any = None
        self.webm: LiveWebm | None = None
        self.stream: Any = None
        self._half = clock_rate // 2  # rounding pts to the nearest millisecond
        self.ssrc: int | None = None
        # track index facts
        self.started_at: float | None = None  # arrival of the first written frame
        self.first_rtp_ts: int | None = None
        self.segments: list[dict[str, Any]] = []  # one per source (SSRC) written
        self.width = self.height = 0
        self.frames = 0
        self.keyframes = 0  # video frames that start a picture (the export splits there)
        self.gaps = 0
        self.changed = False  # something the track index should know
        # timestamps
        self._ext_ts = 0
        self._raw_ts: int | None = None
        self._offset = 0
        self._last_pts = -1
        self._pending_segment: dict[str, Any] | None = None
        # frame assembly (video)
        self._cur_ts: int | None = None
        self._done_ts: int | None = None
        self._parts: list[bytes] = []
        self._cur_ok = False
        self._cur_key = False
        self._cur_arrival = 0.0
        self._waiting_key = self.kind == "video"
        self._last_key_ask = -1e9
        self._keyframe_every = keyframe_every_s or float("inf")
        self._last_key_at = float("inf")  # arrival of the last keyframe written
        self._released: list[Any] = []

    # -- input ------------------------------------------------------------------------
    def feed(self, data: bytes, h: rtp.Header, arrival: float, media_ssrc: int | None) -> None:
        if media_ssrc is None:
            return
        marker, _, seq, ts, ssrc, start, end, _, _, _ = h
        if ssrc != media_ssrc:  # RTX (RFC 4588): the original seq leads the payload
            if end - start < 2:
                return  # padding for bandwidth probing
            seq = (data[start] << 8) | data[start + 1]
            start += 2
        payload = data[start:end]
        if media_ssrc != self.ssrc:
            self._new_source(media_ssrc, arrival)
        r = self.reorder
        if not r.held and r.next is not None and (seq - r.next) & 0xFFFF == 0:
            # In order with nothing held (nearly always): straight through, no list.
            r.next += 1
            if self.video:
                self._video_packet(payload, ts, marker, arrival)
            elif payload:
                self._write(payload, ts, True, arrival)
            return
        out = self._released
        r.push(seq, (payload, ts, marker, arrival), arrival, out)
        if out:
            self._run(out)

    def _takes_next(self, seq: int, ssrc: int, media_ssrc: int | None) -> bool:
        """The usual packet (the current source's next, nothing held back): taken off the
        reorder buffer here; anything else goes the general way (``feed``)."""
        r = self.reorder
        nxt = r.next
        if ssrc != media_ssrc or ssrc != self.ssrc or nxt is None or (seq - nxt) & 0xFFFF or r.held:
            return False
        r.next = nxt + 1
        return True

    def _push_audio(self, item: Packet) -> None:
        """``push`` for audio: a packet is a frame."""
        _, data, h, arrival, media_ssrc = item
        _, _, seq, ts, ssrc, start, end, _, _, _ = h
        if not self._takes_next(seq, ssrc, media_ssrc):
            self.feed(data, h, arrival, media_ssrc)
            return
        if end > start:
            self._write(data[start:end], ts, True, arrival)

    def _push_vp8(self, item: Packet) -> None:
        """``push`` for VP8: the next packet of the frame being put together costs a few
        lines and no call (its data after the payload descriptor, RFC 7741 4.2: what
        ``vp8_payload`` returns); a frame's first packet goes through ``_video_packet``."""
        _, data, h, arrival, media_ssrc = item
        marker, _, seq, ts, ssrc, start, end, _, _, _ = h
        if not self._takes_next(seq, ssrc, media_ssrc):
            self.feed(data, h, arrival, media_ssrc)
            return
        if ts != self._cur_ts or not self._cur_ok or end - start < 6:
            self._video_packet(data[start:end], ts, marker, arrival)
            return
        b0 = data[start]
        pos = start + 1
        if b0 & 0x80:
            x = data[pos]
            pos += 1
            if x & 0x80:
                pos += 2 if data[pos] & 0x80 else 1
            if x & 0x40:
                pos += 1
            if x & 0x30:
                pos += 1
        self._parts.append(data[pos:end])
        if marker:
            self._finish()

    def _push_other(self, item: Packet) -> None:
        self.feed(item[1], item[2], item[3], item[4])

    def feed_batch(self, items: list[Packet]) -> None:
        """``push`` each of ``items`` (in arrival order)."""
        push = self.push
        for item in items:
            push(item)

    def tick(self, now: float) -> None:
        """Give up gaps that waited long enough even when no packet follows them."""
        if self.reorder.held:
            self.reorder.expire(now, self._released)
            self._run(self._released)

    def _run(self, items: list[Any]) -> None:
        video = self.kind == "video"
        for item in items:
            if item is GAP:
                self._gap()
            elif video:
                self._video_packet(*item)
            elif item[0]:
                self._write(item[0], item[1], True, item[3])
        items.clear()

    def _new_source(self, ssrc: int, arrival: float) -> None:
        """A (new) SSRC: the publisher started or restarted its encoder. Its timestamps
        start anywhere: re-anchor on the wall clock, after what was written."""
        drained: list[Any] = []
        self.reorder.drain(drained)
        self._run(drained)
        self.ssrc = ssrc
        self.reorder = Reorder(self.reorder.max_wait)
        self._raw_ts = None
        self._parts = []
        self._cur_ts = self._done_ts = None
        self._cur_ok = False
        if self.kind == "video":
            self._waiting_key = True
            self._ask_keyframe(arrival)
        self._pending_segment = {"ssrc": ssrc}

    def _gap(self) -> None:
        self.gaps += 1
        self._parts = []
        self._cur_ok = False
        if self.kind == "video" and not self._waiting_key:
            self._waiting_key = True
            self._ask_keyframe(self._cur_arrival)

    def _ask_keyframe(self, now: float) -> None:
        if now - self._last_key_ask >= KEYFRAME_ASK_EVERY_S:
            self._last_key_ask = now
            self.request_keyframe()

    # -- video frames -----------------------------------------------------------------
    def _video_packet(self, payload: bytes, ts: int, marker: int, arrival: float) -> None:
        if not payload or ts == self._done_ts:
            return  # padding, or a straggler of a frame already written
        if ts != self._cur_ts:
            if self._parts:
                self._finish()  # the previous frame ended without a marker bit
            self._cur_ts = ts
            self._cur_arrival = arrival
            self._parts = []
            assert self._is_key_start is not None
            self._cur_key = self._is_key_start(payload)
            self._cur_ok = self._cur_key or not self._waiting_key
            if self._waiting_key and not self._cur_key:
                self._ask_keyframe(arrival)
            elif (
                arrival - self._last_key_at >= self._keyframe_every
                and arrival - self._last_key_ask >= KEYFRAME_REASK_S
                and not self._cur_key
            ):
                self._ask_keyframe(arrival)
        if self._cur_ok:
            try:
                self._parts.append(self._depay(payload))
            except (ValueError, IndexError):  # malformed or unsupported: lose this frame
                self._cur_ok = False
                self._parts = []
        if marker:
            self._finish()

    def _finish(self) -> None:
        parts, self._parts = self._parts, []
        self._done_ts = self._cur_ts
        if not self._cur_ok or not parts:
            return
        self._cur_ok = False
        if self._cur_key:
            self._waiting_key = False
            self._last_key_at = self._cur_arrival
            self.keyframes += 1
        self._write(b"".join(parts), self._cur_ts or 0, self._cur_key, self._cur_arrival)

    # -- output -----------------------------------------------------------------------
    def _write(self, data: bytes, ts: int, key: bool, arrival: float) -> None:
        raw = self._raw_ts
        if raw is None:
            ext = ts
        else:
            delta = (ts - raw) & 0xFFFFFFFF
            ext = self._ext_ts + (delta if delta < 0x80000000 else delta - 0x100000000)
        self._ext_ts = ext
        self._raw_ts = ts
        if self.out is None and not self._open(data, key):
            self._waiting_key = self.video
            return
        if self._pending_segment is not None:
            self._anchor(ts, arrival)
        pts = ext + self._offset
        last = self._last_pts
        if pts <= last:
            pts = last + 1  # muxers need strictly increasing timestamps
        self._last_pts = pts
        self.frames += 1
        webm = self.webm
        if webm is not None:
            webm.add((pts * 1000 + self._half) // self.clock_rate, key, data)
            return
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = self.time_base
        packet.stream = self.stream
        packet.is_keyframe = key
        self.out.mux_one(packet)

    def _anchor(self, ts: int, arrival: float) -> None:
        segment, self._pending_segment = self._pending_segment, None
        assert segment is not None
        if self.started_at is None:
            self.started_at = arrival
            self.first_rtp_ts = ts
            pts = 0
        else:
            since = round((arrival - self.started_at) * self.clock_rate)
            pts = max(self._last_pts + 1, since)
        self._offset = pts - self._ext_ts
        self.segments.append(dict(segment, rtp_ts=ts, pts=pts, wall=arrival))
        self.changed = True

    def _open(self, frame: bytes, key: bool) -> bool:
        """Open the file on the first frame a player can start from; False: not yet."""
        if self.codec == "video/vp8":
            # The keyframe header has the size (RFC 6386 9.1) the WebM track needs.
            if not key or frame[3:6] != b"\x9d\x01\x2a":
                return False
            self.width = int.from_bytes(frame[6:8], "little") & 0x3FFF
            self.height = int.from_bytes(frame[8:10], "little") & 0x3FFF
        elif self.codec == "video/h264":
            nals = annexb_nals(frame)
            params = [n for n in nals if n and n[0] & 0x1F in (7, 8)]
            sps = next((n for n in params if n[0] & 0x1F == 7), None)
            if not key or sps is None or len(params) < 2:
                return False
            try:
                self.width, self.height = sps_dimensions(sps)
            except (IndexError, ValueError):
                return False
            out = av.open(str(self.path), "w", format=self.format, options=FMP4_OPTIONS)
            # A stream with an unopened codec context carries extradata (SPS/PPS, which
            # the mp4 muxer turns into avcC); add_mux_stream has no way to set it.
            scratch = av.open(io.BytesIO(), "w", format="mp4")
            stream = out.add_stream_from_template(scratch.add_stream("h264"))
            scratch.close()
            ctx = stream.codec_context
            ctx.width, ctx.height = self.width, self.height
            ctx.extradata = b"".join(b"\x00\x00\x00\x01" + n for n in params)
            stream.time_base = self.time_base
            self.out, self.stream = out, stream
            return True
        header = webm_header(self.codec, self.width, self.height)
        self.out = self.webm = LiveWebm(self.path, header, self.video)
        return True

    def flush(self) -> None:
        """Hand what was written to the OS (the recorder: once per batch). WebM only:
        an MP4 fragment reaches the OS as it is written."""
        if self.webm is not None:
            self.webm.flush()

    def close(self) -> None:
        """Write what is still held and close the file (an MP4's muxer writes its
        index; ``recording.repair`` makes either final)."""
        drained: list[Any] = []
        self.reorder.drain(drained)
        self._run(drained)
        if self.kind == "video" and self._parts:
            self._finish()
        out, self.out, self.webm = self.out, None, None
        if out is not None:
            out.close()

    def abandon(self) -> None:
        """After an error: let go of the file without writing any more to it."""
        out, self.out, self.webm = self.out, None, None
        if out is not None:
            # The file already failed and that was reported: a second error adds nothing.
            with contextlib.suppress(Exception):
                if isinstance(out, LiveWebm):
                    out.abandon()
                else:
                    out.close()
