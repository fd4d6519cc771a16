"""Composite export: a recorded session rendered into one MP4, checked frame by frame
(each tile shows what its participant sent at that instant, black before a late join
and after a leave, held through a gap), audio in sync, as a job that survives a
restart and is shared by workers on Redis without running twice, and by hand with
``jointreview export``.

Sessions are synthesized with the recorder's own capture code (``bench.recorded_sessions``:
real track files and track index, with known send times); one test records a real session
through the server and lets the sealing hook queue its export."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack, ToneAudioTrack, read_pattern
from bench.recorded_sessions import Party, synthesize
from jointreview import cli
from recording import archive
from recording.compose import Cancelled, Options, load, render
from recording.export import COMPOSITE, export_session
from recording.layout import Labeler, fit, plan
from recording.parallel import parts
from recording.sources import TrackClock, VideoReader, usable_tracks
from signaling.export_jobs import QUEUE, ExportWorker
from signaling.history.db import default_url
from signaling.history.repo import History
from signaling.state import MemoryStore, Store
from signaling.state.redis_store import RedisStore

from .test_recording import _server, until

FPS_IN = 30
W, H = 640, 360
CASE = "EXP-1"
# A keyframe every half second, as the recorder asks for every 10 s of a long session: a
# part of a split export starts mid-track, from the keyframe before it (the export splits
# only where keyframes are at most half a part apart).
KEY_S = 0.5
PARTIES = [
    Party(1, "陈晓", dept="city-amr", tone_from_s=2.0, keyframe_s=KEY_S),  # speaks from 2.0 s
    Party(2, "李四", join_s=2.0, tone_from_s=None, keyframe_s=KEY_S),  # joins late
    # the camera stalls 1.5 s
    Party(3, "王五", video_gaps=[(3.0, 4.5)], tone_from_s=None, keyframe_s=KEY_S),
    Party(4, "赵六", leave_s=4.0, audio=False, keyframe_s=KEY_S),  # leaves early
]
# threads=2 decodes tiles a frame ahead on a pool; threads=4 with parts of >= 1 s splits
# the 6 s into four parts (from 1.5, 3.0 and 4.53 s: mid-GOP, a gap's start, just after
# its end) rendered by four processes and joined. Neither may change the result.
HOW = {"one": (1, 20.0), "pool": (2, 20.0), "parts": (4, 1.0)}
SECONDS = 6.0
OPTIONS = Options(width=W, height=H, fps=15, dept_names={"city-amr": "市市场监督管理局"})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthesized, sealed session (copied by tests that change it)."""
    archive_dir = tmp_path_factory.mktemp("export") / "archive"
    directory = archive_dir / CASE / "s_one"
    synthesize(directory, PARTIES, SECONDS, case_id=CASE, session_id="s_one")
    archive.write_manifest(archive_dir, {"case_id": CASE, "session_id": "s_one"}, [])
    return directory


def _copy(recorded: Path, archive_dir: Path, session_id: str) -> Path:
    target = archive_dir / CASE / session_id
    shutil.copytree(recorded, target)
    return target


def _sent(party: Party, t: float) -> int | None:
    """The counter of the party's last frame sent at or before session time ``t``."""
    if t < party.join_s or (party.leave_s is not None and t >= party.leave_s):
        return None
    i = int((t - party.join_s) * FPS_IN + 1e-6)
    while i >= 0 and any(a <= party.join_s + i / FPS_IN < b for a, b in party.video_gaps):
        i -= 1  # not sent: the picture before the gap is held
    return i


def _tile(gray: np.ndarray, rect: Any) -> av.VideoFrame:
    crop = np.ascontiguousarray(gray[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w])
    # Back to the pattern's size: its bands are read at fixed fractions of the width.
    return av.VideoFrame.from_ndarray(crop, format="gray").reformat(320, 240)


def _frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield float(frame.time or 0.0), frame.to_ndarray(format="gray")


def _options(how: str) -> Options:
    threads, part_min_s = HOW[how]
    return Options(**{**vars(OPTIONS), "threads": threads, "part_min_s": part_min_s})


@pytest.mark.parametrize("how", list(HOW))
def test_each_tile_shows_what_its_participant_sent_at_that_instant(
    recorded: Path, tmp_path: Path, how: str
) -> None:
    out = tmp_path / "out.mp4"
    result = render(recorded, out, _options(how))
    assert result["parts"] == (4 if how == "parts" else 1)
    assert result["names_drawn"] and result["tiles"][0] == "陈晓 · 市市场监督管理局"
    by_name = {p.name: p for p in PARTIES}
    parties = [by_name[name.split(" · ")[0]] for name in result["tiles"]]
    rects = [fit(320, 240, cell) for cell in plan(["camera"] * len(parties), W, H)]
    checked = {"picture": 0, "black": 0, "held": 0}
    frames = list(_frames(out))
    # Every output frame once, in place (the parts joined without a gap or an overlap).
    assert [round(t * 15, 6) for t, _ in frames] == list(range(round(SECONDS * 15)))
    for t, gray in frames:
        for party, rect in zip(parties, rects, strict=True):
            want = _sent(party, t)
            if want is None:
                assert gray[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w].mean() < 30, (
                    f"{party.name} at {t:.3f}: should be black"
                )
                checked["black"] += 1
                continue
            ident, counter = read_pattern(_tile(gray, rect))
            assert ident == party.ident, (party.name, t)
            assert abs(counter - want) <= 1, f"{party.name} at {t:.3f}: {counter} != {want}"
            checked["picture"] += 1
            checked["held"] += any(a <= t < b for a, b in party.video_gaps)
    assert checked["black"] >= 30 and checked["held"] >= 20 and checked["picture"] > 200
    assert result["duration_s"] == pytest.approx(SECONDS, abs=0.1)


@pytest.mark.parametrize("how", ["one", "parts"])
def test_audio_is_mixed_in_sync(recorded: Path, tmp_path: Path, how: str) -> None:
    out = tmp_path / "out.mp4"
    render(recorded, out, _options(how))
    with av.open(str(out)) as c:
        stream = c.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.codec_context.sample_rate == 48_000
        chunks = [(float(f.time or 0.0), f.to_ndarray()[0]) for f in c.decode(audio=0)]
    start = chunks[0][0]
    pcm = np.concatenate([c for _, c in chunks])
    loud = np.flatnonzero(np.abs(pcm) > 0.05)
    onset = start + loud[0] / 48_000
    # Party 1's tone starts at 2.0 s: heard within one output frame of it.
    assert abs(onset - 2.0) <= 1 / OPTIONS.fps, onset
    assert np.abs(pcm[: int(1.8 * 48_000)]).max() < 0.01  # silence before
    assert len(pcm) / 48_000 == pytest.approx(SECONDS, abs=0.1)


def test_parts_run_as_nice_as_the_thread_that_asked(recorded: Path, tmp_path: Path) -> None:
    """The server's export thread is niced so live media keeps its timing; the worker
    processes (children of the forkserver, not of this thread) must be as nice."""
    got: dict[str, Any] = {}

    def job() -> None:
        tid = threading.get_native_id()
        got["nice"] = max(7, os.getpriority(os.PRIO_PROCESS, tid))  # (only ever raised)
        os.setpriority(os.PRIO_PROCESS, tid, got["nice"])
        got.update(render(recorded, tmp_path / "out.mp4", _options("parts")))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert got["parts"] == 4 and got["workers_nice"] == [got["nice"]]


def test_a_cancelled_export_in_parts_stops_its_processes_and_leaves_nothing(
    recorded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(Cancelled):
        render(recorded, out, _options("parts"), None, lambda: True)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_an_export_splits_only_where_keyframes_allow(recorded: Path) -> None:
    """A recording made before the recorder asked for keyframes (one at the start, or
    none counted in its track index) is rendered in one process: each part would decode its
    tracks from the start."""
    options = _options("parts")
    session = load(recorded, options)
    assert len(parts(session, options)) == 4
    for track in session.tracks:
        track.entry.pop("keyframes", None)
    assert parts(session, options) == [(0, session.frames)]
    for track in session.tracks:
        track.entry["keyframes"] = 1
    assert len(parts(session, options)) == 1


def test_a_reader_starting_mid_track_decodes_from_the_keyframe_before(recorded: Path) -> None:
    """What makes the parts cheap: a part starting at 3.7 s decodes from the keyframe at
    3.5 s, not from the track's start, and shows the same picture."""
    index = json.loads((recorded / "recording.json").read_text())
    tracks, _ = usable_tracks(recorded, index)
    track = next(t for t in tracks if t.kind == "video" and t.start_s < 0.1)
    late = VideoReader(track, 1, 3.7)
    whole = VideoReader(track, 1)
    try:
        late_frame, whole_frame = late.advance(3.7), whole.advance(3.7)
        assert late_frame is not None and whole_frame is not None
        assert late_frame[0] == pytest.approx(whole_frame[0])
        assert read_pattern(late_frame[1]) == read_pattern(whole_frame[1])
        assert whole.serial >= 100 and late.serial <= KEY_S * FPS_IN + 2
    finally:
        late.close()
        whole.close()


def test_clock_follows_sender_reports_over_long_sessions() -> None:
    """An RTP clock 0.1 % fast: sender reports pull a frame 1000 s in back by 1 s."""
    entry = {"clock_rate": 48_000, "started_at": 1000.0, "segments": []}
    entry["segments"] = [{"ssrc": 1, "rtp_ts": 4_000_000_000, "pts": 0, "wall": 1000.0}]
    ntp0 = 3_900_000_000 << 32
    reports = [
        [ntp0 + (s << 32), (4_000_000_000 + round(s * 48_048)) & 0xFFFFFFFF, 1000.0 + s]
        for s in range(0, 1200, 5)  # RTP wraps on the way: unwrapped
    ]
    nominal = TrackClock(entry, 990.0)
    assert nominal.at(1001.0) == pytest.approx(1011.0)
    clock = TrackClock(dict(entry, sender_reports=reports), 990.0)
    assert clock.at(1001.0) == pytest.approx(10.0 + 1001.0 * 48_000 / 48_048, abs=1e-3)
    bogus = [[ntp0, 4_000_000_000, 1000.0], [ntp0 + (5 << 32), 4_000_000_000 + 10, 1005.0]]
    assert TrackClock(dict(entry, sender_reports=bogus), 990.0).at(100.0) == pytest.approx(110.0)


def test_layout_and_no_font(recorded: Path, tmp_path: Path) -> None:
    cells = plan(["camera", "document", "camera", "camera"], 1280, 720)
    assert cells[1].w > 900 and cells[1].h == 720  # the document takes the large area
    assert all(c.x % 2 == 0 and c.y % 2 == 0 and c.w % 2 == 0 and c.h % 2 == 0 for c in cells)
    assert Labeler(None).label("陈晓", cells[0]) is None
    result = render(recorded, tmp_path / "plain.mp4", Options(width=320, height=180, font="/nope"))
    assert not result["names_drawn"] and result["frames"] == 90


def _boxes(path: Path) -> list[str]:
    names, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[pos : pos + 8])
        names.append(name.decode())
        pos += size if size >= 8 else len(data)
    return names


def test_cli_export_is_faststart_and_verified(recorded: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    directory = _copy(recorded, data / "archive", "s_one")
    out = tmp_path / "copy.mp4"
    base = ["--data-dir", str(data), "--width", "320", "--height", "180"]
    assert cli.main(["export", "s_one", "-o", str(out), *base]) == 0
    boxes = _boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # playable while downloading
    with av.open(str(out)) as c:
        assert {s.codec_context.name for s in c.streams} == {"h264", "aac"}
        assert sum(1 for _ in c.decode(video=0)) == 90
    assert not (directory / COMPOSITE).exists()  # -o: the case file is left alone
    assert cli.main(["export", "s_one", *base]) == 0
    assert (directory / COMPOSITE).is_file()
    verify = ["verify", CASE, "s_one", "--data-dir", str(data)]
    assert cli.main(verify) == 0
    store = MemoryStore(data / "state")
    ready = [e for e in await_log(store) if e["type"] == "export.ready"]
    assert len(ready) == 1 and ready[0]["data"]["path"] == COMPOSITE
    # where the approval system fetches it (tests/test_casefile_download.py)
    assert ready[0]["data"]["url"] == "/api/sessions/s_one/casefile/files/exports%2Fcomposite.mp4"
    # ... and in the record, as a node files it (docs/history.md).
    assert [e["type"] for e in record_of(data)] == ["export.ready"]
    raw = bytearray((directory / COMPOSITE).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (directory / COMPOSITE).write_bytes(bytes(raw))
    assert cli.main(verify) == 1


async def test_cli_export_announces_in_redis_when_the_nodes_share_it(
    recorded: Path, tmp_path: Path, redis_url: str
) -> None:
    """With many nodes the case timeline is in Redis: ``jointreview export --redis-url``
    announces the composite there (once), where every node's API reads it."""
    data = tmp_path / "data"
    directory = _copy(recorded, data / "archive", "s_one")
    store = await RedisStore.connect(redis_url)

    async def ready() -> list[dict[str, Any]]:
        events = await store.read_log(f"case:{CASE}:events")
        return [e for e in events if e["type"] == "export.ready"]

    try:
        before = len(await ready())  # the Redis server is shared by the whole run
        argv = ["export", "s_one", "--data-dir", str(data), "--redis-url", redis_url]
        argv += ["--width", "320", "--height", "180"]
        assert await asyncio.to_thread(cli.main, argv) == 0
        assert (directory / COMPOSITE).is_file()
        after = await ready()
        assert len(after) == before + 1 and after[-1]["data"]["path"] == COMPOSITE
    finally:
        await store.close()


def record_of(data: Path) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        history = await History.open(default_url(data))
        try:
            return (await history.case_events(CASE, limit=100)).items
        finally:
            await history.close()

    return asyncio.run(read())


def await_log(store: MemoryStore) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        try:
            return await store.read_log(f"case:{CASE}:events")
        finally:
            await store.close()

    return asyncio.run(read())


# -- jobs ---------------------------------------------------------------------------------


def _worker(store: Store, archive_dir: Path, node: str, **kw: Any) -> ExportWorker:
    return ExportWorker(store, archive_dir, node, Options(width=W, height=H), delay_s=0, **kw)


async def test_a_job_survives_a_restart(recorded: Path, tmp_path: Path) -> None:
    archive_dir = tmp_path / "archive"
    directory = _copy(recorded, archive_dir, "s_one")
    part = directory / (COMPOSITE + ".part")
    store = MemoryStore(tmp_path / "state")
    worker = _worker(store, archive_dir, "node-a")
    await worker.enqueue(CASE, "s_one")
    await worker.start()
    await until(part.exists, 20, "the render to start")
    await worker.close()  # stopped mid-render
    await store.close()
    assert not worker.done and not part.exists() and not (directory / COMPOSITE).exists()
    store = MemoryStore(tmp_path / "state")  # the node starts again
    assert await store.job_count(QUEUE) == 1
    worker = _worker(store, archive_dir, "node-a")
    await worker.start()
    await until(lambda: bool(worker.done), 30, "the export")
    await worker.close()
    assert (directory / COMPOSITE).is_file() and await store.job_count(QUEUE) == 0
    events = await store.read_log(f"case:{CASE}:events")
    assert [e["type"] for e in events] == ["export.ready"]
    assert events[0]["data"]["sha256"] == archive.sha256_file(directory / COMPOSITE)
    await store.close()
    assert cli.main(["verify", CASE, "s_one", "--files-only", "--data-dir", str(tmp_path)]) == 0


async def test_a_server_job_renders_in_parts_and_a_stop_leaves_nothing(
    long_recorded: Path, tmp_path: Path
) -> None:
    """The job runs on a thread of the server's event loop; its parts on processes from
    the forkserver. Stopping the node mid-render stops them and leaves no part behind;
    the job, taken up again, makes the whole file."""
    archive_dir = tmp_path / "archive"
    shutil.copytree(long_recorded, archive_dir / CASE / "s_long")
    directory = archive_dir / CASE / "s_long"
    parts_dir = directory / "exports" / ".composite.mp4.part.parts"
    store = MemoryStore(tmp_path / "state")
    options = Options(width=W, height=H, threads=2)
    worker = ExportWorker(store, archive_dir, "node-a", options, delay_s=0)
    await worker.enqueue(CASE, "s_long")
    await worker.start()
    await until(lambda: any(parts_dir.glob("part*.mp4")), 20, "the parts to start")
    await worker.close()
    assert not parts_dir.exists() and not (directory / COMPOSITE).exists()
    worker = ExportWorker(store, archive_dir, "node-a", options, delay_s=0)
    await worker.start()
    await until(lambda: bool(worker.done), 60, "the export")
    await worker.close()
    await store.close()
    with av.open(str(directory / COMPOSITE)) as c:
        times = [round(float(f.time or 0) * 15, 6) for f in c.decode(video=0)]
    assert times == list(range(42 * 15))


async def test_workers_on_redis_share_jobs_and_none_runs_twice(
    recorded: Path, tmp_path: Path, redis_url: str
) -> None:
    archive_dir = tmp_path / "archive"
    sessions = [f"s_{n}" for n in range(5)]
    for sid in sessions:
        _copy(recorded, archive_dir, sid)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    stores = [await RedisStore.connect(redis_url, prefix=prefix) for _ in range(3)]
    a = _worker(stores[0], archive_dir, "node-a", lease_s=1.0, touch_every_s=0.2)
    b = _worker(stores[1], archive_dir, "node-b", lease_s=1.0, touch_every_s=0.2)
    for sid in sessions:
        await a.enqueue(CASE, sid)
    # A node that died holding a job: it never touches it again; another takes it over.
    dead = await stores[2].job_claim(QUEUE, "node-dead/0")
    assert dead is not None
    try:
        await a.start()
        await b.start()
        await until(lambda: len(a.done) + len(b.done) >= len(sessions), 60, "every export")
        await asyncio.sleep(0.5)  # nothing more may run
    finally:
        await a.close()
        await b.close()
    made = [m for m in a.done + b.done if not m["skipped"]]
    rendered = sorted(Path(m["absolute"]).parent.parent.name for m in made)
    assert rendered == sessions  # each once, the dead node's included
    assert a.done and b.done  # both did some
    assert await stores[0].job_count(QUEUE) == 0
    events = await stores[0].read_log(f"case:{CASE}:events")
    assert sorted(e["session_id"] for e in events if e["type"] == "export.ready") == sessions
    for store in stores:
        await store.close()


async def test_sealing_a_recorded_session_queues_its_export(tmp_path: Path) -> None:
    """Through the server: recorded, ended, sealed, exported, announced (in the timeline
    and to the approval system's webhook), verified."""
    from .test_webhooks import Receiver

    receiver = Receiver()
    await receiver.__aenter__()
    rec = await _server(
        tmp_path,
        export_delay_s=0,
        export_width=320,
        export_height=180,
        export_fps=10,
        webhook_urls=[receiver.url],
        webhook_secret="s" * 32,
        webhook_events=["export.ready"],
    )
    people: list[Bot] = []
    try:
        a = await rec.person(1)
        people.append(a)
        await a.publish("camera", PatternVideoTrack(5))
        await a.publish("microphone", ToneAudioTrack(500))
        await asyncio.sleep(2.0)
        await rec.end()

        async def exported() -> bool:
            return "export.ready" in await rec.events()

        for _ in range(300):
            if await exported():
                break
            await asyncio.sleep(0.1)
        assert await exported()
        for _ in range(100):
            if receiver.hits:
                break
            await asyncio.sleep(0.05)
        [hit] = receiver.hits
        assert json.loads(hit.body)["event"] == "export.ready"
    finally:
        for p in people:
            await p.close()
        await rec.server.close()
        await receiver.__aexit__()
    made = rec.dir / COMPOSITE
    with av.open(str(made)) as c:
        frames = [f for f in c.decode(video=0)]
    assert 1.0 < len(frames) / 10 < 4.0
    rect = fit(320, 240, plan(["camera"], 320, 180)[0])
    assert read_pattern(_tile(frames[-3].to_ndarray(format="gray"), rect))[0] == 5
    data_dir = rec.dir.parents[2]
    verify = ["verify", CASE_OF_REC, rec.sid, "--data-dir", str(data_dir)]
    assert await asyncio.to_thread(cli.main, verify) == 0
    manifest = json.loads((rec.dir / "manifest.json").read_text())
    assert COMPOSITE not in {f["path"] for f in manifest["files"]}  # the addendum lists it
    assert export_session(data_dir / "archive", CASE_OF_REC, rec.sid)["skipped"]


CASE_OF_REC = "REC-1"


LONG = [Party(1, "陈晓"), Party(2, "李四", join_s=15.0, video_gaps=[(19.0, 23.0)])]


@pytest.fixture(scope="module")
def long_recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 42 s session (keyframes every 10 s, as recorded): long enough to be split."""
    data = tmp_path_factory.mktemp("long") / "data"
    directory = data / "archive" / CASE / "s_long"
    synthesize(directory, LONG, 42.0, case_id=CASE, session_id="s_long")
    archive.write_manifest(data / "archive", {"case_id": CASE, "session_id": "s_long"}, [])
    return directory


def test_a_long_session_exports_in_parts_from_the_command_line(
    long_recorded: Path, tmp_path: Path
) -> None:
    """``jointreview export --threads 2`` on a 42 s session: two processes (forked from a
    forkserver that loads this command as its main module) render 21 s each; the joined
    file has every frame once, in place, the right picture on each side of the seam, and
    the progress bar reaches the end."""
    data = long_recorded.parents[2]
    parties = LONG
    out = tmp_path / "long.mp4"
    argv = ["export", "s_long", "-o", str(out), "--threads", "2", "--data-dir", str(data)]
    proc = subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *argv, "--width", "640", "--height", "360"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "42.0/42.0" in proc.stderr.replace(" ", "")  # the bar got to the end
    assert "in 2 parts on as many processes" in proc.stdout, proc.stdout
    rects = [fit(320, 240, cell) for cell in plan(["camera"] * 2, W, H)]
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        times = []
        for frame in c.decode(video=0):
            t = float(frame.time or 0.0)
            times.append(round(t * 15, 6))
            if 19.5 <= t < 23.5 or abs(t - 21.0) < 0.5:  # around the seam, in the gap
                gray = frame.to_ndarray(format="gray")
                for party, rect in zip(parties, rects, strict=True):
                    ident, counter = read_pattern(_tile(gray, rect))
                    assert ident == party.ident, (party.name, t)
                    assert abs(counter - (_sent(party, t) or -9)) <= 1, (party.name, t)
    assert times == list(range(42 * 15))


async def test_a_failed_export_reaches_the_hooks_like_a_ready_one(tmp_path: Path) -> None:
    """``export.failed`` goes through the event hooks (the record, the webhooks): else
    the record never holds it and the case's log can never be trimmed."""
    archive_dir = tmp_path / "archive"
    (archive_dir / CASE / "s_gone").mkdir(parents=True)  # nothing recorded in it
    store = MemoryStore(tmp_path / "state")
    worker = _worker(store, archive_dir, "node-a")
    heard: list[str] = []

    async def hook(event: Any) -> None:
        heard.append(event.type)

    worker.event_hooks = [hook]
    await worker.enqueue(CASE, "s_gone")
    await worker.start()
    await until(lambda: bool(heard), 30, "the export to fail")
    await worker.close()
    events = await store.read_log(f"case:{CASE}:events")
    await store.close()
    assert heard == ["export.failed"] == [e["type"] for e in events]
    assert events[0]["session_id"] == "s_gone" and events[0]["data"]["message"]
