"""Replay at once: a real session recorded through the SFU (Python participants, one of
them joining late), then described, fetched with Range requests and grants, refused to
the wrong people and to path tricks, and audited in the case timeline."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from yarl import URL

from bench.bot import Bot
from bench.pattern_media import PatternVideoTrack, ToneAudioTrack, read_pattern
from jointreview.app import create_app
from recording.verify import verify_session
from signaling import replay
from signaling.appkeys import SERVICE, STORE
from signaling.auth import TokenService

from .conftest import Tokens, auth, make_config
from .images import tiny

pytestmark = pytest.mark.asyncio(loop_scope="module")

CASE = "RPL-2024-001"
LATE_S = 1.5  # the reviewer publishes this long after the clerk
PNG = tiny("PNG")
MISSING = ["股东会决议原件", "法定代表人身份证复印件"]


@dataclass
class Live:
    """What a supervisor got while the session was still running, and right after."""

    description: dict[str, Any]  # GET .../recording during the session
    open_tracks: dict[str, tuple[int, str]]  # track id in the track index -> (status, error code)
    after_end: list[tuple[int, str | None]]  # each GET .../recording from the end on
    first_replay: dict[str, Any]  # the first description after the end that succeeded


@dataclass
class Recorded:
    server: TestServer
    tok: Tokens
    sid: str
    dir: Path
    clerk_published: float
    reviewer_published: float
    http: aiohttp.ClientSession
    live: Live

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def get(self, path: str, token: str | None, **headers: str) -> aiohttp.ClientResponse:
        h = {**(auth(token) if token else {}), **headers}
        url = URL(self.url(""), encoded=True).with_path(path, encoded=True)
        return await self.http.get(url, headers=h)

    async def description(self, token: str) -> dict[str, Any]:
        r = await self.get(f"/api/sessions/{self.sid}/recording", token)
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def _post(
    http: aiohttp.ClientSession, url: str, token: str, ctype: str = "", **kw: Any
) -> Any:
    headers = {**auth(token), **({"Content-Type": ctype} if ctype else {})}
    async with http.post(url, headers=headers, **kw) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _while_live(
    http: aiohttp.ClientSession, base: str, tok: Tokens, sid: str, directory: Path
) -> tuple[dict[str, Any], dict[str, tuple[int, str]]]:
    """A supervisor opens the replay of the session while it runs, and asks for the
    files being written (their ids from the track index, as an insider would know them)."""
    async with http.get(
        f"{base}/api/sessions/{sid}/recording", headers=auth(tok.supervisor())
    ) as r:
        assert r.status == 200, await r.text()
        description = dict(await r.json())
    index = json.loads((directory / "recording.json").read_text(encoding="utf-8"))
    tracks: dict[str, tuple[int, str]] = {}
    for entry in index["tracks"]:
        url = f"{base}/api/sessions/{sid}/tracks/{entry['track_id']}"
        async with http.get(url, headers={**auth(tok.supervisor()), "Range": "bytes=0-99"}) as r:
            json_error = r.content_type == "application/json"
            code = (await r.json())["error"]["code"] if json_error else r.content_type
            tracks[entry["track_id"]] = (r.status, code)
    return description, tracks


async def _right_after_the_end(
    http: aiohttp.ClientSession, base: str, tok: Tokens, sid: str
) -> tuple[list[tuple[int, str | None]], dict[str, Any]]:
    """The supervisor opens the replay the moment the session has ended, and again until
    it opens (the media node closes and seals the files within moments)."""
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        url = f"{base}/api/sessions/{sid}/recording"
        async with http.get(url, headers=auth(tok.supervisor())) as r:
            body = await r.json()
            seen.append((r.status, body["error"]["code"] if r.status != 200 else None))
            if r.status == 200:
                return seen, dict(body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the replay never opened after the end: {seen[-3:]}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rec(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Recorded]:
    """One session of CASE, recorded: the clerk's camera and microphone from the start,
    a city-amr reviewer's camera from LATE_S on; chat, a still, an opinion; ended."""
    root = tmp_path_factory.mktemp("replay")
    config = make_config(root, media_listen_ips=["127.0.0.1"], export_workers=0)
    server = TestServer(create_app(config))
    await server.start_server()
    tok = Tokens(TokenService(config))
    http = aiohttp.ClientSession()
    base = str(server.make_url("")).rstrip("/")
    created = await _post(http, f"{base}/api/cases/{CASE}/sessions", tok.clerk(), json={})
    sid = created["session_id"]
    await _post(
        http, f"{base}/api/sessions/{sid}/invitations", tok.clerk(), json={"dept": "city-amr"}
    )
    none = lambda info: False  # noqa: E731  (receive nothing: spare the CPU)
    clerk = Bot(base, tok.clerk(), subscribe_filter=none)
    reviewer = Bot(base, tok.reviewer(), subscribe_filter=none)
    try:
        await clerk.connect()
        await clerk.join(sid)
        await clerk.publish("camera", PatternVideoTrack(1))
        await clerk.publish("microphone", ToneAudioTrack(440))
        clerk_published = time.time()
        await asyncio.sleep(LATE_S)
        await reviewer.connect()
        await reviewer.join(sid)  # joining accepts the department's invitation
        await reviewer.publish("camera", PatternVideoTrack(2))
        reviewer_published = time.time()
        await asyncio.sleep(0.6)
        await clerk.request({"type": "chat", "text": "请看营业执照"})
        await _post(
            http,
            f"{base}/api/sessions/{sid}/snapshots",
            tok.clerk(),
            "image/png",
            data=PNG,
        )
        await asyncio.sleep(0.4)
        body = {"decision": "materials_missing", "missing": MISSING}
        await _post(http, f"{base}/api/sessions/{sid}/opinions", tok.reviewer(), json=body)
        await asyncio.sleep(0.6)
        live = await _while_live(http, base, tok, sid, config.data_dir / "archive" / CASE / sid)
        await reviewer.leave()
        await _post(http, f"{base}/api/sessions/{sid}/end", tok.clerk())
        after_end, first = await _right_after_the_end(http, base, tok, sid)
    finally:
        for p in (clerk, reviewer):
            await p.close()
    directory = config.data_dir / "archive" / CASE / sid
    await _until(lambda: (directory / "manifest.json").exists(), 15, "the sealed case file")
    yield Recorded(
        server,
        tok,
        sid,
        directory,
        clerk_published,
        reviewer_published,
        http,
        Live(live[0], live[1], after_end, first),
    )
    await http.close()
    await server.close()


def _track(d: dict[str, Any], sub: str, kind: str) -> dict[str, Any]:
    return next(t for t in d["tracks"] if t["owner"]["sub"] == sub and t["kind"] == kind)


async def test_the_description_lines_tracks_and_markers_up(rec: Recorded) -> None:
    d = await rec.description(rec.tok.supervisor())
    assert (d["case_id"], d["session_id"]) == (CASE, rec.sid)
    assert d["recording"]["state"] == "complete" and d["session"]["status"] == "ended"
    assert len(d["tracks"]) == 3
    cam = _track(d, "clerk-01", "video")
    mic = _track(d, "clerk-01", "audio")
    late = _track(d, "rev-city-amr-1", "video")
    assert (cam["source"], cam["content_type"], cam["codec"]) == (
        "camera",
        "video/webm",
        "video/VP8",
    )
    assert (mic["source"], mic["content_type"]) == ("microphone", "audio/webm")
    assert late["owner"] == {
        "sub": "rev-city-amr-1",
        "name": "rev-city-amr-1",
        "role": "reviewer",
        "dept": "city-amr",
        "level": "city",
    }
    assert 0 <= cam["offset_s"] < 1.0 and 0 <= mic["offset_s"] < 1.0
    # The late joiner starts as much later as it published later.
    delay = rec.reviewer_published - rec.clerk_published
    assert abs((late["offset_s"] - cam["offset_s"]) - delay) < 0.5, (late, cam, delay)
    starts = {t["track_id"]: t["started_at"] - t["offset_s"] for t in d["tracks"]}
    assert max(starts.values()) - min(starts.values()) < 0.002  # one clock for all
    assert d["recording"]["started_at"] == pytest.approx(min(starts.values()), abs=0.002)
    for t in d["tracks"]:
        assert t["url"] == f"/api/sessions/{rec.sid}/tracks/{t['track_id']}"
        assert t["src"].startswith("/api/replay/") and t["state"] == "closed"
        assert t["offset_s"] + t["duration_s"] <= d["recording"]["duration_s"] + 0.01
    # Markers, on the same clock.
    by_type: dict[str, list[dict[str, Any]]] = {}
    for m in d["markers"]:
        by_type.setdefault(m["type"], []).append(m)
    joins = {m["actor"]["sub"]: m for m in by_type["join"]}
    assert set(joins) == {"clerk-01", "rev-city-amr-1"}
    assert abs(joins["rev-city-amr-1"]["t"] - late["offset_s"]) < 0.8  # joined, then sent
    [chat] = by_type["chat"]
    assert chat["data"]["text"] == "请看营业执照" and chat["actor"]["sub"] == "clerk-01"
    [opinion] = by_type["opinion"]
    assert opinion["data"]["decision"] == "materials_missing"
    assert opinion["data"]["missing"] == MISSING and opinion["actor"]["dept"] == "city-amr"
    assert late["offset_s"] < opinion["t"] < d["recording"]["duration_s"]
    [snap] = by_type["snapshot"]
    assert snap["data"]["url"] == f"/api/snapshots/{snap['data']['snapshot_id']}"
    [shown] = d["snapshots"]
    assert shown["snapshot_id"] == snap["data"]["snapshot_id"]
    assert abs(shown["t"] - snap["t"]) < 0.05
    invitations = [(m["data"]["state"], m["data"]["dept"]) for m in by_type["invitation"]]
    assert invitations == [("created", "city-amr"), ("accepted", "city-amr")]
    assert [m["data"]["state"] for m in by_type["recording"]] == ["started", "stopped"]
    assert {m["actor"]["sub"] for m in by_type["leave"]} == {"clerk-01", "rev-city-amr-1"}
    ts = [m["t"] for m in d["markers"]]
    assert ts == sorted(ts)


async def test_a_track_plays_with_range_requests_and_by_its_grant(rec: Recorded) -> None:
    d = await rec.description(rec.tok.supervisor())
    late = _track(d, "rev-city-amr-1", "video")
    r = await rec.get(late["url"], rec.tok.supervisor(), Range="bytes=0-99")
    assert r.status == 206 and r.content_type == "video/webm"
    assert r.headers["Content-Range"].startswith("bytes 0-99/")
    assert len(await r.read()) == 100
    r = await rec.get(late["url"], rec.tok.supervisor())
    assert r.status == 200 and r.headers.get("Accept-Ranges") == "bytes"
    data = await r.read()
    with av.open(io.BytesIO(data)) as c:
        seen = [read_pattern(f) for f in c.decode(c.streams.video[0])]
    assert len(seen) > 30 and {ident for ident, _ in seen} == {2}
    # The grant URL needs no header (that is what <video src> can do) ...
    total = len(data)
    r = await rec.get(late["src"], None, Range=f"bytes={total - 10}-")
    assert r.status == 206 and await r.read() == data[-10:]
    mic = _track(d, "clerk-01", "audio")
    r = await rec.get(mic["src"], None)
    assert r.status == 200 and r.content_type == "audio/webm"
    with av.open(io.BytesIO(await r.read())) as c:
        assert c.streams.audio[0].codec_context.name == "opus"
    # ... but opens its own file only, and not for ever.
    payload, sig = late["src"].removeprefix("/api/replay/").split(".")
    other = json.loads(replay._unb64(payload)) | {"t": mic["track_id"]}
    forged = replay._b64(json.dumps(other).encode())
    r = await rec.get(f"/api/replay/{forged}.{sig}", None)
    assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_grant"
    key = await replay.grant_key(rec.server.app[STORE])
    old = replay.mint(key, rec.sid, late["track_id"], "sup-01", time.time() - 1)
    r = await rec.get(f"/api/replay/{old}", None)
    assert r.status == 401 and (await r.json())["error"]["code"] == "grant_expired"
    exp = json.loads(replay._unb64(payload))["e"]
    assert exp == int(d["grants_expire_at"]) and exp <= time.time() + 15 * 60 + 30


async def test_only_those_allowed_replay(rec: Recorded) -> None:
    tok = rec.tok
    d = await rec.description(tok.supervisor())
    track = d["tracks"][0]["url"]
    recording = f"/api/sessions/{rec.sid}/recording"
    for path in (recording, track):
        r = await rec.get(path, None)
        assert r.status == 401 and (await r.json())["error"]["code"] == "missing_token"
        r = await rec.get(path, "not.a.jwt")
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_token"
        r = await rec.get(path, tok.applicant(rec.sid, CASE))  # applicants do not replay
        assert r.status == 403, (path, await r.text())
        assert (await r.json())["error"]["code"] == "forbidden"
        for token in (
            tok.other_reviewer(),  # another department: not invited
            tok.supervisor(case="ANOTHER-CASE"),  # scoped to another case
            tok.reviewer(case="ANOTHER-CASE"),
        ):
            # As an unknown session: who may not read it learns nothing of it.
            r = await rec.get(path, token)
            assert r.status == 404, (path, await r.text())
            assert (await r.json())["error"]["code"] == "session_not_found"
        for token in (tok.clerk(), tok.admin(), tok.reviewer()):  # the invited department
            r = await rec.get(path, token, Range="bytes=0-9")
            assert r.status in (200, 206), await r.text()


@pytest.mark.parametrize(
    "bad",
    [
        "..%2F..%2Fmanifest.json",
        "%2E%2E%2F%2E%2E%2Fmanifest.json",
        "%2E%2E",
        "..%5Cmanifest.json",
        "%2Fetc%2Fpasswd",
        "%252E%252E%252Fmanifest.json",
        "recording.json",
        "tracks%2Fx.webm",
        "~2",
        "nosuch.1.0",
    ],
)
async def test_path_tricks_find_nothing(rec: Recorded, bad: str) -> None:
    r = await rec.get(f"/api/sessions/{rec.sid}/tracks/{bad}", rec.tok.supervisor())
    assert r.status == 404, await r.text()
    assert r.content_type == "application/json"


async def test_a_track_index_naming_a_file_elsewhere_serves_nothing(rec: Recorded) -> None:
    """Even the track index is not trusted with paths: a file outside tracks/ (by name or by
    a symbolic link) is never served."""
    saved = (rec.dir / "recording.json").read_bytes()
    index = json.loads(saved)
    entry = dict(index["tracks"][0])
    outside = rec.dir / "tracks" / "link.webm"
    outside.symlink_to(rec.dir / "manifest.json")
    tricks = {"evil.1.0": "../manifest.json", "evil.2.0": "/etc/passwd"}
    tricks["evil.3.0"] = "tracks/link.webm"
    for track_id, name in tricks.items():
        index["tracks"].append(dict(entry, track_id=track_id, file=name))
    try:
        (rec.dir / "recording.json").write_text(json.dumps(index))
        d = await rec.description(rec.tok.supervisor())
        assert not {t["track_id"] for t in d["tracks"]} & set(tricks)
        for track_id in tricks:
            r = await rec.get(f"/api/sessions/{rec.sid}/tracks/{track_id}", rec.tok.admin())
            assert r.status == 404 and (await r.json())["error"]["code"] == "track_not_found"
    finally:
        (rec.dir / "recording.json").write_bytes(saved)
        outside.unlink()


async def test_replays_are_in_the_audit_trail_and_the_seal_holds(rec: Recorded) -> None:
    await rec.description(rec.tok.reviewer())
    r = await rec.get(f"/api/cases/{CASE}", rec.tok.supervisor())
    events = (await r.json())["events"]
    viewed = [e for e in events if e["type"] == "replay.viewed"]
    assert viewed and viewed[-1]["actor"]["sub"] == "rev-city-amr-1"
    assert viewed[-1]["session_id"] == rec.sid and viewed[-1]["data"]["tracks"] == 3
    assert "sup-01" in {e["actor"]["sub"] for e in viewed}
    downloads = [e for e in events if e["type"] == "replay.downloaded"]
    assert downloads and all(e["data"]["track_id"] for e in downloads)
    # Events after sealing are notes for `jointreview verify`, not differences.
    service = rec.server.app[SERVICE]
    store_events = [e.model_dump() for e in await service.events(CASE)]
    archive = rec.dir.parents[1]
    report = verify_session(archive, CASE, rec.sid, store_events)
    assert report.ok, report.problems
    assert any("after the manifest" in n for n in report.notes), report.notes


async def test_a_session_without_a_recording(rec: Recorded) -> None:
    base = rec.url("").rstrip("/")
    created = await _post(rec.http, f"{base}/api/cases/{CASE}/sessions", rec.tok.clerk(), json={})
    sid = created["session_id"]
    r = await rec.get(f"/api/sessions/{sid}/recording", rec.tok.supervisor())
    d = await r.json()
    assert r.status == 200 and d["tracks"] == [] and d["recording"]["state"] == "none"
    assert [m["type"] for m in d["markers"]] == [] and d["grants_expire_at"] is None
    r = await rec.get(f"/api/sessions/{sid}/tracks/x.1.0", rec.tok.supervisor())
    assert r.status == 404 and (await r.json())["error"]["code"] == "track_not_found"
    r = await rec.get("/api/sessions/s_nosuch/recording", rec.tok.supervisor())
    assert r.status == 404 and (await r.json())["error"]["code"] == "session_not_found"


async def test_a_live_session_shows_its_timeline_but_no_file_being_written(
    rec: Recorded,
) -> None:
    d = rec.live.description
    assert d["session"]["status"] == "active" and d["sealed"] is False
    assert d["recording"]["state"] == "recording"  # the recorder was writing
    assert d["tracks"] == [] and d["grants_expire_at"] is None  # no file, no grant
    kinds = [m["type"] for m in d["markers"]]
    assert {"join", "chat", "snapshot", "opinion"} <= set(kinds)
    assert [s["snapshot_id"] for s in d["snapshots"]]  # stills are hashed at upload
    # The files being written are refused with a clear code, each of them.
    assert len(rec.live.open_tracks) == 3
    assert set(rec.live.open_tracks.values()) == {(409, "session_live")}


async def test_replay_opens_right_after_the_end_with_the_sealed_files(rec: Recorded) -> None:
    # Until the case file is sealed (moments), a clear retryable code; then the replay.
    *waiting, last = rec.live.after_end
    assert set(waiting) <= {(409, "recording_sealing")} and last == (200, None)
    d = rec.live.first_replay
    assert d["sealed"] is True and d["session"]["status"] == "ended"
    assert d["recording"]["state"] == "complete" and len(d["tracks"]) == 3
    manifest = json.loads((rec.dir / "manifest.json").read_text(encoding="utf-8"))
    sealed = {f["path"]: f["sha256"] for f in manifest["files"]}
    index = json.loads((rec.dir / "recording.json").read_text(encoding="utf-8"))
    files = {t["track_id"]: t["file"] for t in index["tracks"]}
    for track in d["tracks"]:
        assert track["state"] == "closed" and track["duration_s"]
        r = await rec.get(track["src"], None)
        assert r.status == 200
        # Every byte served is a byte the sealed manifest vouches for.
        assert hashlib.sha256(await r.read()).hexdigest() == sealed[files[track["track_id"]]]


async def test_a_file_changed_after_sealing_is_not_served(rec: Recorded) -> None:
    d = await rec.description(rec.tok.supervisor())
    track = d["tracks"][0]
    index = json.loads((rec.dir / "recording.json").read_text(encoding="utf-8"))
    path = rec.dir / next(t["file"] for t in index["tracks"] if t["track_id"] == track["track_id"])
    saved = path.read_bytes()
    try:
        path.write_bytes(saved + b"appended after sealing")
        r = await rec.get(track["url"], rec.tok.supervisor())
        assert r.status == 404 and (await r.json())["error"]["code"] == "track_not_found"
        d = await rec.description(rec.tok.supervisor())
        assert track["track_id"] not in {t["track_id"] for t in d["tracks"]}
    finally:
        path.write_bytes(saved)
    r = await rec.get(track["url"], rec.tok.supervisor())
    assert r.status == 200
