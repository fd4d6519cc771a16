"""A participant's sustained media trouble becomes a supervisors' ``media_quality``
exception: the watch's rules (media_server/quality.py, table-tested with time passed in)
and the whole path with a real aiortc publisher whose camera stops."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from av import VideoFrame

from bench.pattern_media import PatternVideoTrack
from media_server.quality import QualityWatch, Thresholds
from signaling.appkeys import SERVICE
from signaling.media_quality import file_report

from .calls import Call, until
from .conftest import auth

T = Thresholds(loss=0.05, frozen_s=3.0, window_s=10.0, quiet_s=60.0)


def row(pid: str = "p1", loss: float = 0.0, frozen_s: float = 0.0, tracks: int = 1) -> Any:
    return {
        "participant_id": pid,
        "loss": loss,
        "fps": 0.0 if frozen_s else 15.0,
        "frozen_s": frozen_s,
        "tracks": [{}] * tracks,
    }


def play(samples: list[tuple[float, list[dict[str, Any]]]]) -> list[tuple[float, str]]:
    """(time, rows) a second apart -> (time, trouble) of each report."""
    watch = QualityWatch(T)
    return [(now, r["trouble"]) for now, rows in samples for r in watch.observe(rows, now)]


@pytest.mark.parametrize(
    ("losses", "reported_at"),
    [
        ([0.0] * 20, []),  # clean
        ([0.0] * 5 + [0.5] + [0.0] * 14, []),  # one bad second: a mean of 5 % in no window
        ([0.08] * 20, [9.0]),  # sustained: once, when the window is full
        ([0.08] * 12 + [0.0] * 12 + [0.08] * 12, [9.0]),  # back within a minute: not again
        ([0.08] * 12 + [0.0] * 60 + [0.08] * 12, [9.0, 78.0]),  # after the quiet minute
        ([0.04] * 30, []),  # under the threshold however long
    ],
)
def test_loss_is_reported_when_sustained_over_a_window_and_not_again_at_once(
    losses: list[float], reported_at: list[float]
) -> None:
    got = play([(float(t), [row(loss=x)]) for t, x in enumerate(losses)])
    assert got == [(t, "loss") for t in reported_at]


def test_a_freeze_is_reported_once_at_the_threshold_and_a_new_one_after_the_quiet() -> None:
    frozen = [0.0, 0.0, 1.5, 2.5, 3.5, 4.5, 5.5, 0.0]  # frames stop for ~5 s
    later = [0.0] * 70 + [1.5, 2.5, 3.5, 0.0]
    samples = [(float(t), [row(frozen_s=f)]) for t, f in enumerate(frozen + frozen + later)]
    # The second freeze comes within the quiet minute: not filed; the third after it.
    assert play(samples) == [(4.0, "frozen"), (88.0, "frozen")]


def test_what_the_report_says_and_who_it_forgets() -> None:
    watch = QualityWatch(T)
    for t in range(9):
        assert watch.observe([row("a", loss=0.2), row("b", tracks=0)], float(t)) == []
    [report] = watch.observe([row("a", loss=0.2, frozen_s=2.0), row("b", tracks=0)], 9.0)
    assert report == {
        "participant_id": "a",
        "trouble": "loss",
        "fps": 0.0,
        "loss": 0.2,
        "frozen_s": 2.0,
        "for_s": 9.0,
    }
    # "a" left: a newcomer with the same figures starts its own window.
    assert watch.observe([], 10.0) == []
    assert watch.observe([row("a", loss=0.2)], 11.0) == []


class StoppableCamera(PatternVideoTrack):
    """A camera that stops sending frames while ``running`` is clear (still published)."""

    def __init__(self) -> None:
        super().__init__(1, fps=15)
        self.running = asyncio.Event()
        self.running.set()

    async def recv(self) -> VideoFrame:
        await self.running.wait()
        return await super().recv()


async def _exceptions(call: Call) -> list[dict[str, Any]]:
    sup = call.tokens.issue(sub="sup-01", role="supervisor")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{call.url}/api/exceptions?kind=media_quality", headers=auth(sup)) as r,
    ):
        assert r.status == 200, await r.text()
        return list((await r.json())["exceptions"])


async def test_a_camera_that_stops_raises_one_media_quality_exception(tmp_path: Path) -> None:
    call = await Call.start(tmp_path, "MQ-1")
    try:
        clerk = await call.person(1)
        camera = StoppableCamera()
        await clerk.publish("camera", camera)
        room = call.media.room(call.sid)

        def frames() -> int:
            return sum(up.health.frames for up, _, _ in room.tracks.values())

        await until(lambda: frames() > 15, timeout=20, what="the camera's frames at the SFU")
        camera.running.clear()
        found: list[dict[str, Any]] = []
        for _ in range(100):  # the freeze must last 3 s, then the report is filed
            found = await _exceptions(call)
            if found:
                noticed = time.time()
                break
            await asyncio.sleep(0.2)
        camera.running.set()
        assert len(found) == 1, found
        ex = found[0]
        assert ex["case_id"] == "MQ-1" and ex["session_id"] == call.sid
        assert ex["detail"]["participant_id"] == clerk.participant_id
        assert ex["detail"]["trouble"] == "frozen"
        assert ex["detail"]["frozen_s"] >= 3.0 and ex["detail"]["role"] == "clerk"
        # Dated when the picture stopped (the replay's moment), not when it was noticed.
        assert 0 <= ex["offset_s"] and ex["at"] <= noticed - 2.0
        # A malformed or late report files nothing.
        service = call.server.app[SERVICE]
        await file_report(service, call.sid, {"participant_id": 7, "trouble": "frozen"})
        await file_report(service, "no-such-session", {"participant_id": "x", "trouble": "loss"})
        await call.end_session()
        await file_report(service, call.sid, {"participant_id": "x", "trouble": "loss"})
        assert len(await _exceptions(call)) == 1
    finally:
        await call.close()
