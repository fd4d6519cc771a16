"""media_server/speaker.py: active speaker from RFC 6464 audio levels, time passed in.

Each case is a timeline of audio levels per participant (one packet every 20 ms, as
browsers send them; -dBov: 0 loudest, 127 silence, None: no packets at all) and the
active-speaker changes a room would announce, polled as the room does (every 200 ms).
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from media_server import speaker
from media_server.speaker import SpeakerDetector

PACKET = 0.02
POLL = 0.2  # media_server.room.SPEAKER_EVERY
T0 = 300.0


class Talk(NamedTuple):
    who: str
    start: float
    end: float
    level: int | None  # None: sends nothing (muted, DTX)


class Change(NamedTuple):
    who: str | None
    earliest: float
    latest: float


SILENT = 127

CASES = {
    "silence-no-speaker": (
        [Talk("a", 0, 4, SILENT), Talk("b", 0, 4, 90)],
        {},
        [],
    ),
    "one-talker-then-stops": (
        [Talk("a", 0, 2, 30), Talk("a", 2, 6, SILENT)],
        {},
        [Change("a", 0, 0.2), Change(None, 2 + speaker.HOLD, 2 + speaker.HOLD + 0.25)],
    ),
    "one-talker-then-mutes": (
        [Talk("a", 0, 2, 30), Talk("a", 2, 5, None)],
        {},
        [Change("a", 0, 0.2), Change(None, 2 + speaker.HOLD, 2 + speaker.HOLD + 0.25)],
    ),
    "background-noise-is-not-speech": (
        [Talk("a", 0, 4, speaker.SPEECH_LEVEL + 5)],
        {},
        [],
    ),
    "second-talker-within-margin-no-switch": (
        [Talk("a", 0, 5, 40), Talk("b", 1, 5, 40 - int(speaker.SWITCH_MARGIN) + 2)],
        {},
        [Change("a", 0, 0.2)],
    ),
    "louder-second-talker-takes-over": (
        [Talk("a", 0, 5, 40), Talk("b", 1, 5, 20)],
        {},
        [Change("a", 0, 0.2), Change("b", 1.0, 2.0)],
    ),
    "pause-shorter-than-hold-keeps-floor": (
        [
            Talk("a", 0, 1.5, 30),
            Talk("a", 1.5, 1.5 + speaker.HOLD - 0.4, SILENT),
            Talk("a", 1.5 + speaker.HOLD - 0.4, 5, 30),
            Talk("b", 1.5, 5, 40),
        ],
        {},
        [Change("a", 0, 0.2)],
    ),
    "pause-longer-than-hold-hands-over": (
        [
            Talk("a", 0, 1.5, 30),
            Talk("a", 1.5, 4, SILENT),
            Talk("b", 1.5, 6, 40),
        ],
        {},
        [Change("a", 0, 0.2), Change("b", 1.5 + speaker.HOLD, 1.5 + speaker.HOLD + 0.25)],
    ),
    "forget-active-speaker-others-talk": (
        [Talk("a", 0, 1, 20), Talk("b", 0, 3, 40)],
        {1.0: "a"},
        [Change("a", 0, 0.2), Change("b", 1.0, 1.25)],
    ),
    "forget-active-speaker-alone": (
        [Talk("a", 0, 1, 20), Talk("a", 1, 3, None)],
        {1.0: "a"},
        [Change("a", 0, 0.2), Change(None, 1.0, 1.25)],
    ),
    "forget-someone-else-keeps-speaker": (
        [Talk("a", 0, 3, 20), Talk("b", 0, 3, 40)],
        {1.0: "b"},
        [Change("a", 0, 0.2)],
    ),
}


def run(
    talks: list[Talk], forget: dict[float, str], until: float
) -> list[tuple[float, str | None]]:
    detector = SpeakerDetector()
    changes: list[tuple[float, str | None]] = []
    steps = round(until / PACKET)
    forgotten = dict(forget)
    for k in range(steps + 1):
        t = round(k * PACKET, 6)
        for talk in talks:
            if talk.start <= t < talk.end and talk.level is not None:
                if any(
                    abs(t - at) < 1e-9 or at < t for at, who in forgotten.items() if who == talk.who
                ):
                    continue  # a participant that left sends nothing more
                detector.observe(talk.who, talk.level, T0 + t)
        for at, who in list(forget.items()):
            if abs(at - t) < 1e-9:
                detector.forget(who)
        if abs(t / POLL - round(t / POLL)) < 1e-9:
            changed, active = detector.poll(T0 + t)
            if changed:
                changes.append((t, active))
            assert active == detector.active
    return changes


@pytest.mark.parametrize(("talks", "forget", "expected"), list(CASES.values()), ids=list(CASES))
def test_active_speaker_changes(
    talks: list[Talk], forget: dict[float, str], expected: list[Change]
) -> None:
    until = max(t.end for t in talks)
    changes = run(talks, forget, until)
    assert [who for _, who in changes] == [c.who for c in expected], changes
    for (t, _), change in zip(changes, expected, strict=True):
        assert change.earliest - 1e-9 <= t <= change.latest + 1e-9, (change, t)


def test_levels_for_meters() -> None:
    detector = SpeakerDetector()
    for k in range(100):
        detector.observe("loud", 10, T0 + k * PACKET)
        detector.observe("quiet", 60, T0 + k * PACKET)
    levels = detector.levels()
    assert levels["loud"] == pytest.approx(117, abs=1)
    assert levels["quiet"] == pytest.approx(67, abs=1)
    detector.forget("quiet")
    assert set(detector.levels()) == {"loud"}
