"""WebM written live: a track's header from FFmpeg's muxer, then its clusters written
here, one per flush, each reaching the OS in one ``write`` (wire format: no asyncio).

Why not PyAV's muxer for every frame: on the recorder's writer thread it cost ~35 % more
per packet (an ``av.Packet``, the muxer, a ``write`` per 40 ms cluster with
``flush_packets``; measured with 60 ms batches of a six-party session, all else equal:
8.4-9.8 µs a packet against 6.1-7.4 µs), and it held up to two frames back, which a
``kill -9`` lost. A SimpleBlock is 8 bytes before the frame; FFmpeg still writes the
header (EBML, Segment, Tracks with the codec's private data), and the no-decode remux of
``repair.repair`` adds the duration and the index when a track closes.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import av

from .bitstream import opus_head

# Cluster id, its size (8-byte vint), Timestamp id, its size (8), the timestamp (ms)
_CLUSTER = struct.Struct(">IQBBQ")
_BLOCK2 = struct.Struct(">BHBhB")  # SimpleBlock id, 2-byte size, track 1, time, flags
_BLOCK4 = struct.Struct(">BIBhB")  # the same with a 4-byte size (frames >= 16 KiB)
_NONE = -(1 << 62)  # no cluster open: every timestamp is out of its reach
FLUSH_BYTES = 1 << 20  # without a flush (a capture used on its own), write at 1 MiB


def webm_header(codec: str, width: int = 0, height: int = 0) -> bytes:
    """What FFmpeg's WebM muxer writes before the first cluster, for one track (number
    1): EBML header, a Segment of unknown size, reserved room for the SeekHead, Info,
    Tracks (codec, size; the Opus header) and Tags. Made once per file, in memory."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        if codec == "video/vp8":
            stream = out.add_mux_stream("vp8", width=width, height=height)
        else:
            scratch = av.open(io.BytesIO(), "w", format="webm")
            stream = out.add_stream_from_template(scratch.add_stream("libopus", rate=48_000))
            scratch.close()
            actx = stream.codec_context
            actx.layout = "stereo"
            actx.sample_rate = 48_000
            actx.extradata = opus_head()
        out.start_encoding()
        return buf.getvalue()


class LiveWebm:
    """A WebM file written as a live muxer writes it, one cluster per ``flush``.

    Every flush turns the frames added since the last one into one (or, on a video
    keyframe or a 32 s span, several) Cluster of SimpleBlocks and hands it to the OS in
    one ``write``: a ``kill -9`` leaves the file ending on a whole cluster, everything
    flushed decodable. Timestamps are milliseconds (the header's TimestampScale).
    """

    def __init__(self, path: Path, header: bytes, video: bool) -> None:
        self.video = video
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.parts: list[bytes] = []  # for the next write: clusters, each then its blocks
        self.head = -1  # where in parts the open cluster's header goes (-1: none open)
        self.start = _NONE  # the open cluster's timestamp (ms)
        self.size = 0  # bytes of the open cluster's blocks
        self.pending = 0  # bytes of the closed clusters in parts
        try:
            self._write_all(header)
        except BaseException:
            os.close(self.fd)
            raise

    def add(self, ms: int, key: bool, data: bytes) -> None:
        """One frame (``ms`` never goes back)."""
        rel = ms - self.start
        if rel > 0x7FFF or (key and self.video):  # each video keyframe opens a cluster
            self._open_cluster(ms)
            rel = 0
        n = len(data) + 4  # track number, time, flags
        if n < 0x3FFF:
            self.parts += (_BLOCK2.pack(0xA3, 0x4000 | n, 0x81, rel, 0x80 if key else 0), data)
            self.size += n + 3
        else:
            self.parts += (_BLOCK4.pack(0xA3, 0x10000000 | n, 0x81, rel, 0x80 if key else 0), data)
            self.size += n + 5
        if self.size >= FLUSH_BYTES:
            self.flush()

    def _open_cluster(self, ms: int) -> None:
        if self.head >= 0:
            self._close_cluster()
            if self.pending >= FLUSH_BYTES:
                self.flush()
        self.head = len(self.parts)
        self.parts.append(b"")  # the header, once the size is known
        self.start = ms

    def _close_cluster(self) -> None:
        self.parts[self.head] = _CLUSTER.pack(
            0x1F43B675, 0x0100000000000000 | (10 + self.size), 0xE7, 0x88, self.start
        )
        self.pending += 22 + self.size
        self.head = -1
        self.start = _NONE
        self.size = 0

    def flush(self) -> None:
        """Everything added so far, to the OS, in one write."""
        if self.head >= 0:
            self._close_cluster()
        if self.parts:
            data = b"".join(self.parts)
            self.parts = []
            self.pending = 0
            self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        written = os.write(self.fd, data)
        if written < len(data):  # a regular file takes it all, unless it is failing
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self.fd)

    def abandon(self) -> None:
        os.close(self.fd)
