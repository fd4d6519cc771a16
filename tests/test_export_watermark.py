"""A person's download of the composite export carries who downloaded it and when,
burned in (``export_watermark``; recording/watermark.py, signaling/export_watermark.py).
Read back from the downloaded frames: with the setting, the picture differs from the
sealed export where the text is drawn, and only there; without it, the download is the
sealed file itself. The download's audit event names the watermark."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import av
import numpy as np
import pytest

from recording import watermark
from recording.compose import Options
from recording.export import COMPOSITE, export_session
from recording.layout import find_font
from signaling.appkeys import CONFIG

from .test_replay import CASE, Recorded, rec  # noqa: F401  (the recorded-session fixture)


def _frames(data: bytes) -> list[Any]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)]


def _streams(data: bytes) -> list[tuple[str, str]]:
    with av.open(io.BytesIO(data)) as c:
        return [(s.type, s.codec_context.name) for s in c.streams]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_downloaded_composite_names_who_took_it(rec: Recorded) -> None:  # noqa: F811
    options = Options(width=320, height=180, fps=10)
    made = await asyncio.to_thread(export_session, rec.dir.parents[1], CASE, rec.sid, options)
    config = rec.server.app[CONFIG]
    url = f"/api/sessions/{rec.sid}/casefile/files/{COMPOSITE.replace('/', '%2F')}"
    try:
        # Without the setting: the sealed export, byte for byte.
        r = await rec.get(url, rec.tok.supervisor())
        assert r.status == 200
        plain = await r.read()
        assert hashlib.sha256(plain).hexdigest() == made["sha256"]
        config.export_watermark = True
        who = rec.tok.svc.issue(sub="sup-wm", role="supervisor", name="郑监督")
        r = await rec.get(url, who)
        assert r.status == 200 and r.content_type == "video/mp4"
        marked = await r.read()
        again = await (await rec.get(url, who)).read()
        assert again == marked  # the same copy within the audit's window
        # The case file's export is untouched.
        assert hashlib.sha256((rec.dir / COMPOSITE).read_bytes()).hexdigest() == made["sha256"]
    finally:
        config.export_watermark = False
        (rec.dir / COMPOSITE).unlink()
        (rec.dir / "exports.json").unlink()
    assert _streams(marked) == _streams(plain) == [("video", "h264"), ("audio", "aac")]
    a, b = _frames(plain), _frames(marked)
    assert len(a) == len(b) > 10
    # Where the text is drawn the picture changed; elsewhere only by re-encoding noise.
    r = await rec.get(f"/api/cases/{CASE}", rec.tok.supervisor())
    events = [e for e in (await r.json())["events"] if e["type"] == "casefile.downloaded"]
    [event] = [e for e in events if e["actor"]["sub"] == "sup-wm"]
    text = event["data"]["watermark"]
    assert text.startswith("导出 · 郑监督 · ") and event["data"]["path"] == COMPOSITE
    fill, rim = watermark.mask(320, 180, text, find_font(None))
    inside, outside = fill > 0.2, (fill + rim) == 0
    for k in (len(a) // 3, 2 * len(a) // 3):
        diff = b[k] - a[k]
        assert diff[inside].mean() > 25, diff[inside].mean()  # brighter: the letters
        assert np.abs(diff[outside]).mean() < 3, np.abs(diff[outside]).mean()
    assert (np.abs(b[-1] - a[-1]) > 20).mean() > 0.02  # over the whole picture


def test_the_mark_is_read_back_from_a_frame() -> None:
    """The mask and its blend: letters lighter, the rim darker, the rest as it was."""
    fill, rim = watermark.mask(320, 180, "导出 · 郑监督 · 2026-12-06 22:40:00", find_font(None))
    assert 0.02 < (fill > 0).mean() < 0.3 and (rim > 0).mean() > 0
    assert fill.max() <= watermark.FILL_ALPHA + 1e-6 and rim.max() <= watermark.RIM_ALPHA + 1e-6
    grey = np.full((180, 320), 128, dtype=np.uint8)
    out = watermark.stamp(grey, fill, rim).astype(int)
    assert (out[fill > 0.3] > 150).all() and (out[rim > 0.2] < 128).all()
    assert (out[(fill + rim) == 0] == 128).all()
