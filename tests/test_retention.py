"""Records governance (#18): retention purges what is due, once across nodes, never what
is on legal hold, and leaves tombstones that ``jointreview verify`` reads; backup and
restore round trip, verified.

The clock jumps: each app's service clock is moved forward (the purge reads it), and the
purge pass is run at once (``Retention.run_once``), as every node's loop does hourly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview import cli
from jointreview.app import create_app
from recording import addendum
from recording import retention as disk
from signaling.appkeys import SERVICE, STORE
from signaling.auth import TokenService
from signaling.config import Config
from signaling.retention import RETENTION

from .conftest import Tokens, auth, flush_redis, make_config
from .images import tiny
from .test_audit import settled
from .test_signaling_flow import connect, start_session

Client = TestClient[Any, Any]
DAY = 86400.0
JPEG = tiny("JPEG")
KEEP = {"retention_recordings_days": 30, "retention_stills_days": 90}
KEEP_ALL = {**KEEP, "retention_casefile_days": 365}


def _config(tmp_path: Path, **kw: Any) -> Config:
    return make_config(tmp_path, media_enabled=False, **{**KEEP_ALL, **kw})


async def _sealed(client: Client, tok: Tokens, archive: Path, case: str) -> Path:
    """A session with chat, a still and a (stand-in) recorded track, ended and sealed."""
    sid = await start_session(client, tok, case)
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    await clerk.request("chat", "ack", text="请看营业执照")
    res = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=JPEG,
        headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
    )
    assert res.status == 201
    directory = archive / case / sid
    # What the recorder would have left (media is off here): listed by the seal.
    (directory / "tracks").mkdir(parents=True)
    (directory / "tracks" / "cam_1.webm").write_bytes(b"\x1a\x45\xdf\xa3" + b"v" * 5000)
    res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    assert res.status == 200
    deadline = time.monotonic() + 10
    while not (directory / "manifest.json").exists():
        assert time.monotonic() < deadline, "the session was never sealed"
        await asyncio.sleep(0.05)
    await clerk.close()
    return directory


def _jump(client: Client, days: float) -> None:
    service = client.app[SERVICE]
    now = time.time() + days * DAY
    service.clock = lambda: now


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, list(argv))
    return code, capsys.readouterr().out


async def _timeline(client: Client, tok: Tokens, case: str) -> list[dict[str, Any]]:
    res = await client.get(f"/api/cases/{case}/events?limit=500", headers=auth(tok.supervisor()))
    assert res.status == 200
    return list((await res.json())["events"])


async def test_due_parts_go_held_cases_stay_and_verify_reads_the_tombstones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    if config.database_url:  # the commands read the same record as the app (PostgreSQL pass)
        monkeypatch.setenv("JR_DATABASE_URL", config.database_url)
    for name, days in KEEP_ALL.items():  # for the command, as an operator sets them
        monkeypatch.setenv(f"JR_{name.upper()}", str(days))
    tok = Tokens(TokenService(config))
    archive = config.data_dir / "archive"
    data = ["--data-dir", str(config.data_dir)]
    async with TestClient(TestServer(create_app(config))) as client:
        a = await _sealed(client, tok, archive, "RET-A")
        b = await _sealed(client, tok, archive, "RET-B")
        # A composite export made after sealing (listed in exports.json): a recording too.
        (a / "exports").mkdir()
        (a / "exports" / "composite.mp4").write_bytes(b"mp4" * 100)
        made = {"path": "exports/composite.mp4", "size": 300}
        made["sha256"] = hashlib.sha256(b"mp4" * 100).hexdigest()
        addendum.add(a, "RET-A", a.name, made)
        # Legal hold: a clerk may not; a supervisor may, with a reason; audited.
        res = await client.post(
            "/api/cases/RET-B/hold", json={"reason": "诉讼保全"}, headers=auth(tok.clerk())
        )
        assert res.status == 403
        res = await client.post(
            "/api/cases/RET-B/hold", json={"reason": "诉讼保全"}, headers=auth(tok.supervisor())
        )
        assert res.status == 200, await res.text()
        hold = await res.json()
        assert hold["held"] and hold["reason"] == "诉讼保全"
        assert hold["held_by"]["sub"] == "sup-01"
        res = await client.post(
            "/api/cases/RET-B/hold", json={"reason": "again"}, headers=auth(tok.admin())
        )
        assert res.status == 409
        assert (await res.json())["error"]["code"] == "case_on_hold"
        res = await client.post(
            "/api/cases/NO-SUCH/hold", json={"reason": "x"}, headers=auth(tok.admin())
        )
        assert res.status == 404

        # Audited: the supervisor's request is in the trail.
        found = await settled(client)
        holds = [e for e in found if e["object"] == "/api/cases/RET-B/hold"]
        acts = {(e["action"], e["actor"]["sub"], e["result"]) for e in holds}
        assert ("supervisor.request", "sup-01", "ok") in acts, holds
        assert ("request.refused", "clerk-01", "refused") in acts, holds

        # Nothing is due today.
        assert await client.app[RETENTION].run_once() == []
        # 31 days on: the dry run lists both sessions' recordings, B's kept.
        at = str(time.time() + 31 * DAY)
        code, out = await _cli(capsys, "retention", "--dry-run", "--at", at, "--json", *data)
        assert code == 0, out
        rows = json.loads(out.splitlines()[-1])["items"]
        assert {(r["case_id"], r["kind"], r["held"]) for r in rows} == {
            ("RET-A", "recordings", False),
            ("RET-B", "recordings", True),
        }
        assert "KEPT: the case is on legal hold" in out
        assert (a / "tracks" / "cam_1.webm").exists()  # a dry run changes nothing
        # A pass by hand is the running server's to do on a single node.
        code, _ = await _cli(capsys, "retention", "--at", at, *data)
        assert code == 1 and (a / "tracks" / "cam_1.webm").exists()

        _jump(client, 31)
        done = await client.app[RETENTION].run_once()
        assert [(d["case_id"], d["kind"]) for d in done] == [("RET-A", "recordings")]
        assert not (a / "tracks").exists() and (a / "snapshots").is_dir()
        assert (b / "tracks" / "cam_1.webm").exists()
        purged = [
            e for e in await _timeline(client, tok, "RET-A") if e["type"] == "retention.purged"
        ]
        assert len(purged) == 1
        files = purged[0]["data"]["files"]
        assert [f["path"] for f in files] == ["tracks/cam_1.webm", "exports/composite.mp4"]
        assert all(len(f["sha256"]) == 64 for f in files)
        res = await client.get(f"/api/sessions/{a.name}/casefile", headers=auth(tok.supervisor()))
        names = [f["path"] for f in (await res.json())["files"]]
        assert "tracks/cam_1.webm" not in names and any(n.startswith("snapshots/") for n in names)
        held = [e["type"] for e in await _timeline(client, tok, "RET-B")]
        assert "case.held" in held and "retention.purged" not in held

        # The live store loses the hold: the record's case.held still keeps B, and
        # reading the hold puts the store's document back.
        store = client.app[STORE]
        await store.delete(["hold:RET-B"])
        assert await client.app[RETENTION].run_once() == []
        res = await client.get("/api/cases/RET-B/hold", headers=auth(tok.supervisor()))
        assert (await res.json())["reason"] == "诉讼保全"

        # verify passes for what remains and says what was purged and when.
        code, out = await _cli(capsys, "verify", "RET-A", *data)
        assert code == 0, out
        assert "2 purged (retention)" in out and "recordings: purged" in out
        # A file gone without a tombstone still fails; one put back altered too.
        still = next((b / "snapshots").iterdir())
        still.unlink()
        code, out = await _cli(capsys, "verify", "RET-B", *data)
        assert code == 1 and f"snapshots/{still.name}: missing" in out, out
        (a / "tracks").mkdir()
        (a / "tracks" / "cam_1.webm").write_bytes(b"forged")
        code, out = await _cli(capsys, "verify", "RET-A", *data)
        assert code == 1 and "tracks/cam_1.webm: size 6" in out, out
        (a / "tracks" / "cam_1.webm").unlink()
        # A tombstone written by hand (no retention.purged in the timeline) is caught.
        tomb = json.loads((a / "purged.json").read_text())
        snap = next((a / "snapshots").iterdir())
        forged = dict(tomb["purges"][0], kind="stills", files=[{"path": f"snapshots/{snap.name}"}])
        (a / "purged.json").write_text(json.dumps(dict(tomb, purges=[*tomb["purges"], forged])))
        code, out = await _cli(capsys, "verify", "RET-A", *data)
        assert code == 1 and "the stills purge has no matching retention.purged" in out, out
        (a / "purged.json").write_text(json.dumps(tomb))

        # Released: B's time has long come; a year on, everything of both goes.
        res = await client.delete("/api/cases/RET-B/hold", headers=auth(tok.admin()))
        assert res.status == 200 and not (await res.json())["held"]
        res = await client.delete("/api/cases/RET-B/hold", headers=auth(tok.admin()))
        assert (await res.json())["error"]["code"] == "case_not_on_hold"
        _jump(client, 366)
        done = await client.app[RETENTION].run_once()
        kinds = sorted((d["case_id"], d["kind"]) for d in done)
        assert kinds == [
            ("RET-A", "casefile"),
            ("RET-A", "stills"),
            ("RET-B", "casefile"),
            ("RET-B", "recordings"),
        ]  # B's still was deleted by hand above: nothing left of that kind to purge
        assert [p.name for p in a.iterdir()] == ["purged.json"]
        res = await client.get(f"/api/sessions/{a.name}/casefile", headers=auth(tok.supervisor()))
        assert (await res.json())["error"]["code"] == "casefile_purged"
        code, out = await _cli(capsys, "verify", "RET-A", *data)
        assert code == 0 and "casefile: purged" in out, out
        # B's still, deleted by hand before its case file went, is still reported.
        code, out = await _cli(capsys, "verify", "RET-B", *data)
        assert code == 1, out
        assert f"snapshots/{still.name}: was missing when the case file was purged" in out
        assert await client.app[RETENTION].run_once() == []  # nothing twice


async def test_a_guomi_case_files_purged_recordings_verify_by_their_sm3_digests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, seal_algorithm="sm2-sm3")
    if config.database_url:  # the commands read the same record as the app (PostgreSQL pass)
        monkeypatch.setenv("JR_DATABASE_URL", config.database_url)
    for name, days in KEEP_ALL.items():
        monkeypatch.setenv(f"JR_{name.upper()}", str(days))
    monkeypatch.setenv("JR_SEAL_ALGORITHM", "sm2-sm3")
    tok = Tokens(TokenService(config))
    async with TestClient(TestServer(create_app(config))) as client:
        a = await _sealed(client, tok, config.data_dir / "archive", "RET-SM")
        _jump(client, 31)
        done = await client.app[RETENTION].run_once()
        assert [(d["case_id"], d["kind"]) for d in done] == [("RET-SM", "recordings")]
        assert not (a / "tracks").exists()
        code, out = await _cli(capsys, "verify", "RET-SM", "--data-dir", str(config.data_dir))
        assert code == 0 and "1 purged (retention)" in out, out


async def test_a_purge_happens_once_across_two_nodes(
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two apps on one real Redis sharing one archive, both purging at the same moment;
    before them, a pass by hand (``jointreview retention``) while they run."""
    url = redis_url[:-1] + "9"
    flush_redis(url)
    shared = tmp_path / "shared-archive"
    shared.mkdir(mode=0o700)
    configs = []
    for name in ("a", "b"):
        (tmp_path / name / "data").mkdir(parents=True, mode=0o700)
        (tmp_path / name / "data" / "archive").symlink_to(shared)
        configs.append(_config(tmp_path / name, redis_url=url, node_id=f"node-{name}"))
    tok = Tokens(TokenService(configs[0]))
    async with (
        TestClient(TestServer(create_app(configs[0]))) as a,
        TestClient(TestServer(create_app(configs[1]))) as b,
    ):
        directory = await _sealed(a, tok, shared, "RET-2N")
        for name, days in KEEP_ALL.items():
            monkeypatch.setenv(f"JR_{name.upper()}", str(days))
        at = str(time.time() + 35 * DAY)  # the recordings are due, nothing else
        argv = ["retention", "--at", at, "--redis-url", url, "--data-dir", str(configs[0].data_dir)]
        code, out = await _cli(capsys, *argv)
        assert code == 0 and f"purged RET-2N/{directory.name} recordings: 1 file(s)" in out, out
        for client in (a, b):
            _jump(client, 400)
        # A node that died after its tombstone, before its event: the stills are gone,
        # and the next pass (whichever node) files their retention.purged.
        periods = a.app[RETENTION].periods.seconds()
        now = a.app[SERVICE].clock()
        due = disk.due_in("RET-2N", directory.name, directory, periods, now)
        disk.purge(directory, next(d for d in due if d.kind == "stills"), now - 3600)
        done = await asyncio.gather(a.app[RETENTION].run_once(), b.app[RETENTION].run_once())
        kinds = sorted(d["kind"] for node in done for d in node)
        assert kinds == ["casefile"], done
        log = await a.app[STORE].read_log("case:RET-2N:events")
        purges = [e["data"]["kind"] for e in log if e["type"] == "retention.purged"]
        assert sorted(purges) == ["casefile", "recordings", "stills"]
        assert [p.name for p in directory.iterdir()] == ["purged.json"]
        tomb = json.loads((directory / "purged.json").read_text())
        assert all(p.get("seq") for p in tomb["purges"])
    flush_redis(url)


async def test_backup_and_restore_round_trip_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The embedded record (SQLite) whichever database the suite runs on: it is what
    # backup copies (PostgreSQL is pg_dump's).
    config = _config(tmp_path / "node", database_url="", **{k: 0 for k in KEEP_ALL})
    tok = Tokens(TokenService(config))
    backup = tmp_path / "backup"
    async with TestClient(TestServer(create_app(config))) as client:
        directory = await _sealed(client, tok, config.data_dir / "archive", "RET-BK")
        # Online: the node keeps running (and writing) while its record is copied.
        code, out = await _cli(
            capsys, "backup", str(backup), "--json", "--data-dir", str(config.data_dir)
        )
        assert code == 0, out
        summary = json.loads(out.splitlines()[-1])
        assert summary["record"] and summary["files"] >= 5
    restored = tmp_path / "restored"
    code, out = await _cli(capsys, "restore", str(backup), "--json", "--data-dir", str(restored))
    assert code == 0, out
    assert "verify: 1 of 1 session(s) OK" in out, out
    sid = directory.name
    assert (restored / "archive" / "RET-BK" / sid / "manifest.json").read_bytes() == (
        directory / "manifest.json"
    ).read_bytes()
    # Once restored, the data dir is refused unless forced; a damaged backup is reported.
    code, _ = await _cli(capsys, "restore", str(backup), "--data-dir", str(restored))
    assert code == 1
    victim = next((backup / "archive" / "RET-BK" / sid / "snapshots").iterdir())
    victim.write_bytes(b"damaged")
    code, out = await _cli(capsys, "restore", str(backup), "--data-dir", str(tmp_path / "r2"))
    assert code == 1
    assert f"archive/RET-BK/{sid}/snapshots/{victim.name}: SHA-256 differs" in out, out
    assert "FAIL RET-BK" in out
