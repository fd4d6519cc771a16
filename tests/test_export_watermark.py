"""A person's download of the composite export carries who downloaded it and when,
burned in (``export_watermark``; recording/watermark.py, signaling/export_watermark.py),
made by a background job, never inside the download request: asking answers at once
(202, the job, its status URL and progress), the same person asking again joins the same
job, the status goes on to ``done``, then the download serves the copy (the same bytes
again, Range requests). Read back from the downloaded frames: the picture differs from
the sealed export where the text is drawn, and only there; without the setting, the
download is the sealed file itself. The download's audit event names the watermark.
Limits: a person's and a node's jobs are bounded (429, 503, with Retry-After)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from jointreview.metrics import METRICS
from recording import watermark
from recording.compose import Cancelled, Options
from recording.export import COMPOSITE, export_session
from recording.layout import find_font
from signaling.appkeys import CONFIG
from signaling.export_watermark import QUEUED, WATERMARKS, Refused, WatermarkCopies
from signaling.models import Actor
from signaling.state.memory import MemoryStore

from .conftest import auth
from .test_replay import CASE, Recorded, rec  # noqa: F401  (the recorded-session fixture)

FILE = COMPOSITE.replace("/", "%2F")


def _frames(data: bytes) -> list[Any]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)]


def _streams(data: bytes) -> list[tuple[str, str]]:
    with av.open(io.BytesIO(data)) as c:
        return [(s.type, s.codec_context.name) for s in c.streams]


def _small_video(path: Path, frames: int = 20) -> Path:
    """An H.264 MP4 of ``frames`` grey frames, 160×90 at 10 fps."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        for n in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.full((90, 160, 3), n * 10 % 250, dtype=np.uint8), format="rgb24"
            )
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


async def _post(at: Recorded, path: str, token: str) -> tuple[int, dict[str, Any], Any]:
    async with at.http.post(at.url(path), headers=auth(token)) as r:
        return r.status, await r.json(), r.headers


async def _until_done(
    at: Recorded, status_url: str, token: str
) -> tuple[dict[str, Any], list[int]]:
    """Follow a job to its end: its last state and every percent seen on the way."""
    seen: list[int] = []
    for _ in range(1200):
        r = await at.get(status_url, token)
        assert r.status == 200, await r.text()
        job = await r.json()
        seen.append(job["progress"])
        if job["status"] in ("done", "failed"):
            return job, seen
        assert job["status"] in ("queued", "running"), job
        await asyncio.sleep(0.05)
    raise AssertionError(f"the job never ended: {seen[-5:]}")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_downloaded_composite_names_who_took_it(rec: Recorded) -> None:  # noqa: F811
    options = Options(width=320, height=180, fps=10)
    made = await asyncio.to_thread(export_session, rec.dir.parents[1], CASE, rec.sid, options)
    config = rec.server.app[CONFIG]
    url = f"/api/sessions/{rec.sid}/casefile/files/{FILE}"
    ask = f"/api/sessions/{rec.sid}/casefile/watermarked"
    try:
        # Without the setting: the sealed export, byte for byte; no job to ask for.
        r = await rec.get(url, rec.tok.supervisor())
        assert r.status == 200
        plain = await r.read()
        assert hashlib.sha256(plain).hexdigest() == made["sha256"]
        status, body, _ = await _post(rec, ask, rec.tok.supervisor())
        assert (status, body["error"]["code"]) == (409, "watermark_off")
        config.export_watermark = True
        index = await (
            await rec.get(f"/api/sessions/{rec.sid}/casefile", rec.tok.supervisor())
        ).json()
        assert index["watermark"] is True
        who = rec.tok.svc.issue(sub="sup-wm", role="supervisor", name="郑监督")
        assert (await rec.get(ask, who)).status == 204  # (a page's first look) none asked

        # Asked: answered at once with the job; asked again: the same job.
        status, job, headers = await _post(rec, ask, who)
        assert status == 202, job
        assert job["status"] in ("queued", "running") and 0 <= job["progress"] < 100
        assert job["status_url"] == f"/api/watermarked/{job['job_id']}"
        assert headers["Location"] == job["status_url"]
        assert job["watermark"].startswith("导出 · 郑监督 · ") and job["src"] is None
        status, again, _ = await _post(rec, ask, who)
        assert again["job_id"] == job["job_id"], (status, again)
        # A reloaded page finds the person's job without asking again; not another's.
        r = await rec.get(ask, who)
        assert r.status == 200 and (await r.json())["job_id"] == job["job_id"]
        assert (await rec.get(ask, rec.tok.supervisor())).status == 204
        # Nobody else follows it: another person's job is as an unknown one.
        r = await rec.get(job["status_url"], rec.tok.supervisor())
        assert (r.status, (await r.json())["error"]["code"]) == (404, "export_job_not_found")
        r = await rec.get("/api/watermarked/0123456789abcdef01234567.00", who)
        assert r.status == 404

        done, seen = await _until_done(rec, job["status_url"], who)
        assert done["status"] == "done" and done["progress"] == 100, done
        assert seen == sorted(seen), seen  # the percent only goes up
        assert done["url"] == url and done["src"].startswith("/api/casefile/")
        assert done["expires_at"] > done["created_at"] and done["size"] > 0

        # The download: the copy, by token and by the job's grant; the same bytes again.
        r = await rec.get(url, who)
        assert r.status == 200 and r.content_type == "video/mp4"
        marked = await r.read()
        assert len(marked) == done["size"]
        assert await (await rec.get(done["src"], None)).read() == marked
        r = await rec.get(url, who, Range="bytes=100-199")
        assert r.status == 206 and await r.read() == marked[100:200]
        status, joined, _ = await _post(rec, ask, who)  # asked again: the copy made
        assert status == 200 and joined["job_id"] == job["job_id"], joined
        r = await rec.get(ask, who)  # and a reloaded page offers it: made, with its link
        mine = await r.json()
        assert r.status == 200 and mine["status"] == "done" and mine["src"], mine
        # The case file's export is untouched.
        assert hashlib.sha256((rec.dir / COMPOSITE).read_bytes()).hexdigest() == made["sha256"]

        # The composite's own download starts a job too (202), never renders inside it.
        other = rec.tok.svc.issue(sub="sup-wm-2", role="supervisor", name="李监督")
        r = await rec.get(url, other)
        assert r.status == 202, await r.text()
        second = await r.json()
        assert second["job_id"] != job["job_id"] and r.headers["Location"] == second["status_url"]
        done2, _ = await _until_done(rec, second["status_url"], other)
        assert done2["status"] == "done"
        # The operator sees them: two copies made here, none waiting.
        scraped = rec.server.app[METRICS].render().decode()
        assert 'jointreview_watermark_copy_duration_seconds_count{outcome="done"} 2.0' in scraped
        assert "jointreview_watermark_copies_pending 0.0" in scraped

        # Unauthorised as today: an uninvited reviewer (404), an applicant (403).
        status, body, _ = await _post(rec, ask, rec.tok.other_reviewer())
        assert status == 404, body
        status, body, _ = await _post(rec, ask, rec.tok.applicant(rec.sid, CASE))
        assert status == 403, body

        # Bounded: a person's and the node's jobs (the limits lowered to what is running).
        copies = rec.server.app[WATERMARKS]
        copies.per_person = 0
        third = rec.tok.svc.issue(sub="sup-wm-3", role="supervisor")
        async with rec.http.post(rec.url(ask), headers=auth(third)) as r:
            assert r.status == 429 and r.headers["Retry-After"]
            assert (await r.json())["error"]["code"] == "too_many_exports"
        copies.per_person, copies.per_node = 2, 0
        async with rec.http.get(rec.url(url), headers=auth(third)) as r:
            assert r.status == 503 and r.headers["Retry-After"]
            assert (await r.json())["error"]["code"] == "export_queue_full"
        copies.per_node = 8
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
    [event] = [e for e in events if e["actor"]["sub"] == "sup-wm"]  # once: the audit's window
    text = event["data"]["watermark"]
    assert text == job["watermark"] and event["data"]["path"] == COMPOSITE
    fill, rim = watermark.mask(320, 180, text, find_font(None))
    inside, outside = fill > 0.2, (fill + rim) == 0
    for k in (len(a) // 3, 2 * len(a) // 3):
        diff = b[k] - a[k]
        assert diff[inside].mean() > 25, diff[inside].mean()  # brighter: the letters
        assert np.abs(diff[outside]).mean() < 3, np.abs(diff[outside]).mean()
    assert (np.abs(b[-1] - a[-1]) > 20).mean() > 0.02  # over the whole picture


@pytest.mark.asyncio(loop_scope="module")
async def test_jobs_are_joined_and_bounded(tmp_path: Path) -> None:
    """Counted on a node whose workers are not started (its jobs stay queued): the same
    person and session join one job; a person's third is 429, the node's fourth 503."""
    copies = WatermarkCopies(MemoryStore(None), tmp_path, "node-a", per_node=3, per_person=2)
    src = tmp_path / "composite.mp4"
    ann, bob = (
        Actor(sub="ann", name="安", role="supervisor"),
        Actor(sub="bob", name="博", role="supervisor"),
    )
    try:
        first = await copies.request("C-1", "s1", src, ann, "导出 · ann")
        assert first.status == QUEUED and first.node == "node-a"
        assert (await copies.request("C-1", "s1", src, ann, "导出 · ann")).job_id == first.job_id
        assert (await copies.job(first.job_id)) == first
        assert await copies.job(first.key + ".nope") is None
        await copies.request("C-1", "s2", src, ann, "导出 · ann")
        with pytest.raises(Refused) as person:
            await copies.request("C-1", "s3", src, ann, "导出 · ann")
        assert (person.value.status, person.value.code) == (429, "too_many_exports")
        await copies.request("C-1", "s1", src, bob, "导出 · bob")
        with pytest.raises(Refused) as node:
            await copies.request("C-1", "s2", src, bob, "导出 · bob")
        assert (node.value.status, node.value.code) == (503, "export_queue_full")
        # Every node reads a job's state from the store.
        held = await copies.store.get_ephemeral("wm-export:" + first.key)
        assert held is not None and held["job_id"] == first.job_id and held["node"] == "node-a"
    finally:
        await copies.close()


def test_the_render_reports_its_progress(tmp_path: Path) -> None:
    """The share of frames done, rising to 1; a render asked to stop stops."""
    source = _small_video(tmp_path / "in.mp4")
    shares: list[float] = []
    made = watermark.burn(source, tmp_path / "out.mp4", "导出 · 测试", progress=shares.append)
    assert made["frames"] == 20 and shares[-1] == 1.0
    assert shares == sorted(shares) and 0 < shares[0] < 0.2 and len(shares) == 21
    with pytest.raises(Cancelled):
        watermark.burn(source, tmp_path / "stop.mp4", "x", cancelled=lambda: True)


def test_the_mark_is_read_back_from_a_frame() -> None:
    """The mask and its blend: letters lighter, the rim darker, the rest as it was."""
    fill, rim = watermark.mask(320, 180, "导出 · 郑监督 · 2026-12-06 22:40:00", find_font(None))
    assert 0.02 < (fill > 0).mean() < 0.3 and (rim > 0).mean() > 0
    assert fill.max() <= watermark.FILL_ALPHA + 1e-6 and rim.max() <= watermark.RIM_ALPHA + 1e-6
    grey = np.full((180, 320), 128, dtype=np.uint8)
    out = watermark.stamp(grey, fill, rim).astype(int)
    assert (out[fill > 0.3] > 150).all() and (out[rim > 0.2] < 128).all()
    assert (out[(fill + rim) == 0] == 128).all()


@pytest.mark.asyncio(loop_scope="module")
async def test_another_node_answers_for_the_job(tmp_path: Path) -> None:
    """Two nodes on one store, each with its own copies' folder: node B answers the
    status of the job node A makes (from the store), joins it when the same person asks
    it, and knows it cannot serve A's copy (the API's 409 ``copy_on_other_node``)."""
    store = MemoryStore(None)
    a = WatermarkCopies(store, tmp_path / "a", "node-a")
    b = WatermarkCopies(store, tmp_path / "b", "node-b")
    source = _small_video(tmp_path / "composite.mp4", frames=30)
    ann = Actor(sub="ann", name="安", role="supervisor")
    await a.start()
    try:
        job = await a.request("C-1", "s1", source, ann, "导出 · 安")
        assert (await b.request("C-1", "s1", source, ann, "导出 · 安")).job_id == job.job_id
        for _ in range(600):
            seen = await b.job(job.job_id)
            assert seen is not None and seen.node == "node-a"
            if seen.status == "done":
                break
            await asyncio.sleep(0.05)
        assert seen.status == "done" and seen.progress == 100 and seen.size
        assert a.ready_path(seen) == a.path_of(seen) and a.path_of(seen).stat().st_size == seen.size
        assert b.ready_path(seen) is None  # not in B's folder
        assert (await b.request("C-1", "s1", source, ann, "x")).job_id == job.job_id
        assert a.made == [job] and b.made == []
    finally:
        await a.close()
        await b.close()
