"""Taking a case file away: a session recorded through the SFU (the replay tests' own
recording), listed with every file's hash, each file downloaded intact by token and by
grant, the composite export offered once it is made, the wrong people and path tricks
refused, a file changed after sealing withheld, and every download audited."""

from __future__ import annotations

import asyncio
import hashlib
import json
from urllib.parse import quote

import pytest

from recording.compose import Options
from recording.export import COMPOSITE, export_session
from recording.verify import verify_session
from signaling.appkeys import SERVICE

from .test_replay import CASE, Recorded, rec  # noqa: F401  (the recorded-session fixture)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _index(rec: Recorded, token: str) -> dict:  # noqa: F811
    r = await rec.get(f"/api/sessions/{rec.sid}/casefile", token)
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def test_every_file_of_the_case_file_downloads_as_sealed(rec: Recorded) -> None:  # noqa: F811
    index = await _index(rec, rec.tok.supervisor())
    assert (index["case_id"], index["session_id"]) == (CASE, rec.sid)
    manifest_bytes = (rec.dir / "manifest.json").read_bytes()
    sealed = {f["path"]: f for f in json.loads(manifest_bytes)["files"]}
    by_path = {f["path"]: f for f in index["files"]}
    # Everything the manifest vouches for, the timeline it hashes, and the manifest itself.
    sealed["timeline.jsonl"] = {"sha256": json.loads(manifest_bytes)["timeline"]["sha256"]}
    assert set(by_path) == set(sealed) | {"manifest.json", "manifest.sig"}
    kinds = {f["kind"] for f in index["files"]}
    assert {"manifest", "timeline", "track", "still"} <= kinds
    assert index["export"] is None  # no export made yet (this server runs no export job)
    summary = index["summary"]
    assert (summary["tracks"], summary["stills"], summary["opinions"]) == (3, 1, 1)
    assert summary["participants"] == 2 and summary["chat"] == 1 and summary["events"] > 8
    for path, f in by_path.items():
        assert f["url"] == f"/api/sessions/{rec.sid}/casefile/files/{quote(path, safe='')}"
        for how in ("token", "grant"):
            r = await (
                rec.get(f["url"], rec.tok.supervisor())
                if how == "token"
                else rec.get(f["src"], None)
            )
            assert r.status == 200, (path, how, await r.text())
            body = await r.read()
            want = (rec.dir / path).read_bytes() if path.startswith("manifest.") else None
            if want is None:
                assert hashlib.sha256(body).hexdigest() == sealed[path]["sha256"] == f["sha256"]
            else:
                assert body == want and f["sha256"] is None
            assert len(body) == f["size"]
            disposition = r.headers["Content-Disposition"]
            assert disposition.startswith("attachment;") and f"{CASE}_{rec.sid}_" in disposition
            # The name people see (#16): RFC 5987 UTF-8, as the index lists it.
            assert disposition.endswith(f"filename*=UTF-8''{quote(f['name'], safe='')}")
    # Listed with people's names and sources, not p_…_1_0.webm; every name distinct.
    names = [f["name"] for f in index["files"]]
    assert len(set(names)) == len(names) and all(n.startswith(CASE) for n in names)
    tracks = sorted(f["name"] for f in index["files"] if f["kind"] == "track")
    assert any("摄像头" in n for n in tracks) and any("麦克风" in n for n in tracks), tracks
    assert not any("p_" in n for n in tracks), tracks
    [still] = [f["name"] for f in index["files"] if f["kind"] == "still"]
    assert still.startswith(f"{CASE}_资料照片_1") and still.endswith((".jpg", ".png")), still
    track = next(f for f in index["files"] if f["kind"] == "track")
    r = await rec.get(track["url"], rec.tok.supervisor(), Range="bytes=10-19")
    assert r.status == 206 and len(await r.read()) == 10


async def test_the_composite_is_offered_once_it_is_made(rec: Recorded) -> None:  # noqa: F811
    options = Options(width=320, height=180, fps=10)
    made = await asyncio.to_thread(export_session, rec.dir.parents[1], CASE, rec.sid, options)
    try:
        index = await _index(rec, rec.tok.clerk())
        export = index["export"]
        assert export is not None and export["path"] == COMPOSITE
        assert (export["kind"], export["content_type"]) == ("export", "video/mp4")
        assert export["sha256"] == made["sha256"] and export["size"] == made["size"]
        assert export["duration_s"] == made["duration_s"] > 1
        r = await rec.get(export["src"], None)
        assert r.status == 200 and r.content_type == "video/mp4"
        assert hashlib.sha256(await r.read()).hexdigest() == made["sha256"]
        assert "exports.json" in {f["path"] for f in index["files"]}
    finally:
        (rec.dir / COMPOSITE).unlink()
        (rec.dir / "exports.json").unlink()


async def test_only_those_who_may_replay_take_files(rec: Recorded) -> None:  # noqa: F811
    tok = rec.tok
    index = await _index(rec, tok.reviewer())  # the invited department
    manifest = next(f for f in index["files"] if f["path"] == "manifest.json")
    for path in (f"/api/sessions/{rec.sid}/casefile", manifest["url"]):
        r = await rec.get(path, None)
        assert r.status == 401 and (await r.json())["error"]["code"] == "missing_token"
        r = await rec.get(path, tok.applicant(rec.sid, CASE))  # the role: 403
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
        for token in (
            tok.other_reviewer(),  # another department: not invited
            tok.supervisor(case="ANOTHER-CASE"),
        ):
            # As an unknown session: who may not read it learns nothing of it.
            r = await rec.get(path, token)
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "session_not_found"
    r = await rec.get("/api/casefile/not-a-grant.x", None)
    assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_grant"
    # A grant opens what it was minted for only: a track's is no case-file grant, and a
    # case file's opens no track.
    replay = await rec.description(tok.supervisor())
    track_grant = replay["tracks"][0]["src"].removeprefix("/api/replay/")
    r = await rec.get(f"/api/casefile/{track_grant}", None)
    assert r.status == 404 and (await r.json())["error"]["code"] == "file_not_found"
    file_grant = manifest["src"].removeprefix("/api/casefile/")
    r = await rec.get(f"/api/replay/{file_grant}", None)
    assert r.status == 404 and (await r.json())["error"]["code"] == "track_not_found"


@pytest.mark.parametrize(
    "bad",
    [
        "..%2F..%2Fmanifest.json",
        "%2E%2E%2Fmanifest.json",
        "tracks%2F..%2Fmanifest.json",
        "%2Fetc%2Fpasswd",
        "..%5Cmanifest.json",
        "recording.json.repair",
        "nosuch.txt",
        "tracks",
    ],
)
async def test_path_tricks_find_no_file(rec: Recorded, bad: str) -> None:  # noqa: F811
    r = await rec.get(f"/api/sessions/{rec.sid}/casefile/files/{bad}", rec.tok.supervisor())
    assert r.status == 404, await r.text()
    assert (await r.json())["error"]["code"] == "file_not_found"


async def test_a_file_changed_after_sealing_is_withheld(rec: Recorded) -> None:  # noqa: F811
    index = await _index(rec, rec.tok.supervisor())
    still = next(f for f in index["files"] if f["kind"] == "still")
    path = rec.dir / still["path"]
    saved = path.read_bytes()
    try:
        path.write_bytes(saved + b"!")
        r = await rec.get(still["url"], rec.tok.supervisor())
        assert r.status == 404 and (await r.json())["error"]["code"] == "file_not_found"
    finally:
        path.write_bytes(saved)
    r = await rec.get(still["url"], rec.tok.supervisor())
    assert r.status == 200


async def test_downloads_are_in_the_audit_trail(rec: Recorded) -> None:  # noqa: F811
    index = await _index(rec, rec.tok.admin())
    timeline = next(f for f in index["files"] if f["kind"] == "timeline")
    for _ in range(2):  # once in the trail for a viewer and file, however often fetched
        r = await rec.get(timeline["src"], None)
        assert r.status == 200
    r = await rec.get(f"/api/cases/{CASE}", rec.tok.supervisor())
    events = (await r.json())["events"]
    downloads = [
        e
        for e in events
        if e["type"] == "casefile.downloaded" and e["data"]["path"] == timeline["path"]
    ]
    who = [(e["actor"]["sub"], e["actor"]["role"]) for e in downloads]
    assert who.count(("admin", "admin")) == 1  # the two fetches above: one entry
    assert ("sup-01", "supervisor") in who  # the first test's downloads
    assert {e["session_id"] for e in downloads} == {rec.sid}
    # Audited after sealing: notes for `jointreview verify`, the seal holds.
    store_events = [e.model_dump() for e in await rec.server.app[SERVICE].events(CASE)]
    report = verify_session(rec.dir.parents[1], CASE, rec.sid, store_events)
    assert report.ok, report.problems


async def test_a_live_session_has_no_case_file_yet(rec: Recorded) -> None:  # noqa: F811
    base = rec.url("").rstrip("/")
    async with rec.http.post(
        f"{base}/api/cases/{CASE}/sessions",
        json={},
        headers={"Authorization": f"Bearer {rec.tok.clerk()}"},
    ) as r:
        sid = (await r.json())["session_id"]
    r = await rec.get(f"/api/sessions/{sid}/casefile", rec.tok.supervisor())
    assert r.status == 409 and (await r.json())["error"]["code"] == "session_live"
