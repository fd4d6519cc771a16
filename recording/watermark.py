"""A copy of a composite export with who took it and when burned into its picture
(``export_watermark``, issue #18): a screenshot or a leaked copy then names the person
it was handed to. Used when a person downloads the composite
(``signaling/export_watermark.py``); the case file's own export is never changed.

Every video frame is decoded, the text (repeated diagonally, as on the replay page) is
blended into its luma, and the frame is encoded again at the export's size, rate and
timestamps (H.264, ``+faststart``); the audio packets are copied as they are. The
watermark is faint (white at about a third, with a darker rim so that it reads on a
white document too). Nothing here imports the live path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .compose import Cancelled
from .layout import _load_font, find_font

FILL_ALPHA = 0.34  # the letters: white at this opacity
RIM_ALPHA = 0.22  # their rim: dark at this opacity
ANGLE = 24  # degrees, rising to the right, like the page's


def mask(width: int, height: int, text: str, font_path: str | None) -> tuple[Any, Any]:
    """(fill, rim) alpha planes (float32, height × width) of the repeated text."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(12, min(40, height // 24))
    font = _load_font(font_path, size) if font_path else ImageFont.load_default(size)
    side = int(math.hypot(width, height)) + 2 * size
    fill = Image.new("L", (side, side), 0)
    rim = Image.new("L", (side, side), 0)
    gap = size * 4
    step_x = int(font.getlength(text)) + gap
    row = 0
    for y in range(0, side, size * 5):
        shift = (row % 2) * step_x // 2  # rows staggered, like bricks
        for x in range(-shift, side, step_x):
            ImageDraw.Draw(rim).text((x, y), text, fill=255, font=font, stroke_width=2)
            ImageDraw.Draw(fill).text((x, y), text, fill=255, font=font)
        row += 1
    planes = []
    for plane in (fill, rim):
        turned = plane.rotate(ANGLE, resample=Image.Resampling.BILINEAR)
        left, top = (side - width) // 2, (side - height) // 2
        cut = turned.crop((left, top, left + width, top + height))
        planes.append(np.asarray(cut, dtype=np.float32) / 255.0)
    fill_a, rim_a = planes
    return fill_a * FILL_ALPHA, np.clip(rim_a - fill_a, 0, 1) * RIM_ALPHA


def stamp(y: Any, fill: Any, rim: Any) -> Any:
    """The luma plane with the text blended in (uint8)."""
    out = y.astype(np.float32)
    out = out * (1 - rim) + 16.0 * rim
    out = out * (1 - fill) + 235.0 * fill
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def burn(
    source: Path,
    target: Path,
    text: str,
    font: str | None = None,
    preset: str = "ultrafast",
    crf: int = 23,
    progress: Callable[[float], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Write ``source`` (an MP4) to ``target`` with ``text`` burned in; what was done.
    ``progress`` hears the share of frames done (0..1, 1 at the end); ``cancelled``
    true stops the render at its next frame (``Cancelled``)."""
    started = time.perf_counter()
    font_path = find_font(font)
    frames = 0
    with av.open(str(source)) as inp:
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        total = _frame_count(inp, vin)
        out = av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            vout = out.add_stream("libx264", rate=vin.average_rate or 15)
            vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
            vout.codec_context.time_base = vin.time_base or Fraction(1, 90000)
            vout.codec_context.options = {"preset": preset, "crf": str(crf)}
            aout = out.add_stream_from_template(ain) if ain is not None else None
            fill, rim = mask(vin.width, vin.height, text, font_path)
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream is ain:
                    if packet.dts is not None and aout is not None:
                        packet.stream = aout
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    if not isinstance(frame, av.VideoFrame):
                        continue
                    if cancelled is not None and cancelled():
                        raise Cancelled()
                    planes = frame.to_ndarray(format="yuv420p")
                    h = frame.height
                    planes[:h] = stamp(planes[:h], fill, rim)
                    marked = av.VideoFrame.from_ndarray(planes, format="yuv420p")
                    marked.pts, marked.time_base = frame.pts, frame.time_base
                    out.mux(vout.encode(marked))
                    frames += 1
                    if progress is not None:
                        progress(min(frames / total, 0.99))  # 1 once the file is whole
            out.mux(vout.encode(None))
        finally:
            out.close()
    if progress is not None:
        progress(1.0)
    return {
        "frames": frames,
        "text": text,
        "font": font_path,
        "size": target.stat().st_size,
        "wall_s": round(time.perf_counter() - started, 3),
    }


def _frame_count(container: Any, stream: Any) -> int:
    """The video's frames, as the MP4 counts them, else from its length and rate (at
    least 1: the share of frames done is never a division by zero)."""
    if stream.frames:
        return int(stream.frames)
    seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0
    if not seconds and container.duration:
        seconds = container.duration / 1_000_000
    return max(1, round(seconds * float(stream.average_rate or 15)))
