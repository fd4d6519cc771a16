"""Making a closed track file final: a remux by FFmpeg, without decoding.

A track is written live (``webm.LiveWebm``, or a fragmented MP4 for H.264) so that a
``kill -9`` leaves it playable; what a live file lacks is its duration and its index
(WebM cues, the MP4 ``moov``). ``repair`` restores both: the recorder calls it when a
track closes, and the archive (``archive.recover_session``) for the tracks a crash left open.
File formats only: PyAV, no network, no event loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av

# What a closed or repaired file is remuxed into: indexed, with its duration.
FINAL_OPTIONS: dict[str, dict[str, str]] = {"webm": {}, "mp4": {"movflags": "+faststart"}}


def repair(path: Path) -> dict[str, Any]:
    """Remux a track file without decoding: restores duration and index (cues, moov)
    after a crash cut it off, or turns a fragmented MP4 into an ordinary one. The
    original is replaced only once the copy is complete. Returns what it found."""
    fmt = "mp4" if path.suffix == ".mp4" else "webm"
    tmp = path.with_name(path.name + ".repair")
    packets = 0
    last_end = 0.0
    with av.open(str(path)) as src:
        if not src.streams:
            raise ValueError(f"{path.name}: no stream")
        ins = src.streams[0]
        with av.open(str(tmp), "w", format=fmt, options=FINAL_OPTIONS[fmt]) as dst:
            outs = dst.add_stream_from_template(ins)
            try:
                for packet in src.demux(ins):
                    if packet.dts is None or packet.size == 0:
                        continue  # the demuxer's flush packet
                    tb = packet.time_base
                    end = packet.pts + (packet.duration or 0) if packet.pts is not None else 0
                    last_end = max(last_end, float(end * tb) if tb else 0.0)
                    packet.stream = outs
                    dst.mux_one(packet)
                    packets += 1
            except (av.error.InvalidDataError, av.error.EOFError):
                pass  # cut off mid-packet by the crash: keep what came before
    os.replace(tmp, path)
    return {"packets": packets, "duration_s": round(last_end, 3), "size": path.stat().st_size}


def probe(path: Path) -> dict[str, Any]:
    """Duration and packet count of a closed track file (demux only)."""
    with av.open(str(path)) as src:
        duration = (src.duration or 0) / 1_000_000
        return {"duration_s": round(duration, 3)}
