"""The sealed case file: manifest, hash-chained timeline, and ``jointreview verify``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from aiohttp.test_utils import TestClient, TestServer

from jointreview import cli
from jointreview.app import create_app
from recording import archive, paths
from signaling.appkeys import TOKENS
from signaling.config import Config

from .conftest import Tokens, auth, make_config
from .images import tiny
from .test_signaling_flow import connect, invite, start_session

Client = TestClient[Any, Any]
CASE = "GZ-2026-0001"
JPEG = tiny("JPEG")


async def _sealed_session(client: Client, tok: Tokens, config: Config, case: str = CASE) -> Path:
    """A session with chat, an opinion and a document still, ended and sealed."""
    sid = await start_session(client, tok, case)
    await invite(client, tok, sid, dept="city-amr")
    clerk = await connect(client, tok.clerk())
    await clerk.request("join", "joined", session_id=sid)
    reviewer = await connect(client, tok.reviewer())
    await reviewer.request("join", "joined", session_id=sid)
    await clerk.request("chat", "ack", text="请看营业执照")
    res = await client.post(
        f"/api/sessions/{sid}/opinions",
        json={"decision": "approve", "note": "同意"},
        headers=auth(tok.reviewer()),
    )
    assert res.status == 201
    res = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=JPEG,
        headers={**auth(tok.clerk()), "Content-Type": "image/jpeg"},
    )
    assert res.status == 201
    res = await client.post(f"/api/sessions/{sid}/end", headers=auth(tok.clerk()))
    assert res.status == 200
    directory = config.data_dir / "archive" / case / sid
    deadline = time.monotonic() + 10
    while not (directory / "manifest.json").exists():
        assert time.monotonic() < deadline, "the session was never sealed"
        await asyncio.sleep(0.05)
    await clerk.close()
    await reviewer.close()
    return directory


async def _verify(
    config: Config, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(
        cli.main, ["verify", CASE, *extra, "--data-dir", str(config.data_dir)]
    )
    return code, capsys.readouterr().out


async def test_the_manifest_describes_the_session(
    client: Client, tok: Tokens, config: Config
) -> None:
    directory = await _sealed_session(client, tok, config)
    manifest = json.loads((directory / "manifest.json").read_text())
    people = {p["identity"]["role"]: p for p in manifest["participants"]}
    assert people["reviewer"]["identity"]["dept"] == "city-amr"
    assert people["reviewer"]["identity"]["level"] == "city"
    assert people["clerk"]["joined_at"] <= people["clerk"]["left_at"]
    assert people["clerk"]["left_reason"] == "session_ended"
    assert manifest["session"]["ended_at"] is not None
    # The chat: when and its event's hash, never its text (retention may purge that).
    assert manifest["version"] == 2
    [chat] = manifest["chat"]
    assert set(chat) == {"seq", "ts", "event_hash"}
    assert "请看营业执照" not in (directory / "manifest.json").read_text()
    assert manifest["opinions"][0]["decision"] == "approve"
    snap = next(f for f in manifest["files"] if f["path"].startswith("snapshots/"))
    assert snap["sha256"] == hashlib.sha256(JPEG).hexdigest() and snap["size"] == len(JPEG)
    # The chain: each event hashed alone, each hash over the previous one and that.
    lines = (directory / "timeline.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    timeline = manifest["timeline"]
    own = [hashlib.sha256(archive.canonical(e).encode()).hexdigest() for e in events]
    assert [e["event_hash"] for e in timeline["events"]] == own
    by_seq = dict(zip([e["seq"] for e in events], own, strict=True))
    assert chat["event_hash"] == by_seq[chat["seq"]]
    hashes = archive.chain_hashes(CASE, directory.name, own)
    assert [e["hash"] for e in timeline["events"]] == hashes
    assert timeline["head"] == hashes[-1] and timeline["count"] == len(events)
    assert [e["type"] for e in events][-1] == "session.ended"
    # The store keeps the manifest's fingerprint.
    res = await client.get(f"/api/cases/{CASE}", headers=auth(tok.supervisor()))
    sealed = [e for e in (await res.json())["events"] if e["type"] == "archive.sealed"]
    digest = hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    assert sealed[0]["data"]["manifest_sha256"] == digest


async def test_verify_finds_every_kind_of_change(
    client: Client, tok: Tokens, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = await _sealed_session(client, tok, config)
    code, out = await _verify(config, capsys)
    assert code == 0, out
    assert out.startswith("OK")

    # One byte of a file.
    snap = next((directory / "snapshots").iterdir())
    original = snap.read_bytes()
    snap.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    code, out = await _verify(config, capsys)
    assert code == 1 and f"snapshots/{snap.name}: SHA-256 differs" in out
    snap.write_bytes(original[:-1])
    code, out = await _verify(config, capsys)
    assert code == 1 and f"size {len(original) - 1}" in out
    snap.unlink()
    code, out = await _verify(config, capsys)
    assert code == 1 and f"snapshots/{snap.name}: missing" in out
    snap.write_bytes(original)
    (directory / "snapshots" / "extra.jpg").write_bytes(JPEG)
    code, out = await _verify(config, capsys)
    assert code == 1 and "snapshots/extra.jpg: not in the manifest" in out
    (directory / "snapshots" / "extra.jpg").unlink()
    assert (await _verify(config, capsys))[0] == 0

    # The timeline file: an edited line, a removed event, an inserted one.
    path = directory / "timeline.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    chat_at = next(i for i, line in enumerate(lines) if "chat.message" in line)
    edited = lines.copy()
    edited[chat_at] = edited[chat_at].replace("请看营业执照", "请看身份证")
    path.write_text("".join(edited))
    code, out = await _verify(config, capsys)
    assert code == 1 and f"event edited at position {chat_at + 1}" in out
    path.write_text("".join(lines[:chat_at] + lines[chat_at + 1 :]))
    code, out = await _verify(config, capsys)
    assert code == 1 and f"event removed at position {chat_at + 1}" in out
    fake = json.loads(lines[chat_at])
    fake["seq"] = 999
    path.write_text("".join([*lines[:2], json.dumps(fake) + "\n", *lines[2:]]))
    code, out = await _verify(config, capsys)
    assert code == 1 and "event inserted at position 3 (seq 999" in out
    path.write_text("".join(lines))
    assert (await _verify(config, capsys))[0] == 0

    # The store's own timeline, edited behind the archive's back.
    journal = config.data_dir / "state" / "journal.jsonl"
    ops = journal.read_text().splitlines(keepends=True)
    kept = [op for op in ops if '"chat.message"' not in op]
    journal.write_text("".join(kept))
    code, out = await _verify(config, capsys)
    assert code == 1 and "store: event removed at position" in out
    code, out = await _verify(config, capsys, "--files-only")
    assert code == 0, out


async def test_names_from_input_stay_in_the_archive(
    client: Client, tok: Tokens, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    await _sealed_session(client, tok, config)
    for case, session in (("..", "x"), (CASE, ".."), (CASE, "../../state"), ("a/../b", "s")):
        capsys.readouterr()
        code = await asyncio.to_thread(
            cli.main, ["verify", case, session, "--data-dir", str(config.data_dir)]
        )
        assert code == 1
    with pytest.raises(ValueError):
        paths.session_dir(config.data_dir / "archive", CASE, "../x")


async def test_verify_reads_the_timeline_from_redis_where_the_nodes_keep_it(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With many nodes the case's events live in Redis: ``verify --redis-url`` compares
    the sealed timeline with them (and fails when they differ), not only the files."""
    case = f"GZ-REDIS-{time.time_ns()}"  # the Redis server is shared by the whole run
    config = make_config(tmp_path, redis_url=redis_url)
    async with TestClient(TestServer(create_app(config))) as client:
        tok = Tokens(client.app[TOKENS])
        directory = await _sealed_session(client, tok, config, case)
    argv = ["verify", case, "--data-dir", str(config.data_dir), "--redis-url", redis_url]
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("OK")
    # Someone rewrites the chat in Redis: the store no longer matches the case file.
    r = redis.asyncio.from_url(redis_url)
    try:
        [key] = [k async for k in r.scan_iter(match=f"*case:{case}:events")]
        entries = await r.lrange(key, 0, -1)
        at = next(i for i, e in enumerate(entries) if "请看营业执照".encode() in e)
        await r.lset(key, at, entries[at].decode().replace("请看营业执照", "无需材料"))
    finally:
        await r.aclose()
    code = await asyncio.to_thread(cli.main, argv)
    out = capsys.readouterr().out
    assert code == 1, out
    assert directory.name in out and "store" in out
