"""Chat has its own retention period (#18): at its end each message's line of the case
timeline and its row in the record become a stub that keeps the event's hash (the
redactable seal, manifest version 2), recordings and opinions stay, a held case keeps
its chat, a case file sealed before the redactable seal keeps it too, and ``jointreview
verify`` still passes for what remains and fails precisely for each tampering.

The clock jumps as in tests/test_retention.py (the service's clock moved, the purge
pass and the live store's sweep run at once).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from recording import archive as archive_mod
from recording import retention as disk
from recording.retention import OLD_SEAL
from signaling.appkeys import HISTORY, SERVICE, STORE
from signaling.auth import TokenService
from signaling.config import Config
from signaling.evict import EVICTOR
from signaling.history import schema
from signaling.retention import RETENTION, Retention

from .conftest import Tokens, auth, flush_redis, make_config
from .test_retention import DAY, _cli, _jump, _sealed, _timeline

Client = TestClient[Any, Any]
KEEP = {"retention_chat_days": 7.0, "retention_recordings_days": 30.0}
TEXT = "请看营业执照"


def _config(tmp_path: Path, **kw: Any) -> Config:
    return make_config(tmp_path, media_enabled=False, **{**KEEP, **kw})


def _env(monkeypatch: pytest.MonkeyPatch, config: Config) -> None:
    """The commands read the same settings and record as the app."""
    if config.database_url:
        monkeypatch.setenv("JR_DATABASE_URL", config.database_url)
    for name, days in KEEP.items():
        monkeypatch.setenv(f"JR_{name.upper()}", str(days))


async def _pass(client: Client, days: float) -> list[dict[str, Any]]:
    """``days`` after now: the live store's sweep (sealed sessions leave it), then a
    purge pass."""
    _jump(client, days)
    await client.app[EVICTOR].sweep()
    return list(await client.app[RETENTION].run_once())


def _lines(directory: Path) -> list[dict[str, Any]]:
    text = (directory / "timeline.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _rewrite(directory: Path, events: list[dict[str, Any]]) -> None:
    body = "".join(archive_mod.canonical(e) + "\n" for e in events)
    (directory / "timeline.jsonl").write_text(body, encoding="utf-8")


async def test_chat_goes_at_its_period_and_what_remains_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    _env(monkeypatch, config)
    tok = Tokens(TokenService(config))
    archive = config.data_dir / "archive"
    data = ["--data-dir", str(config.data_dir)]
    async with TestClient(TestServer(create_app(config))) as client:
        a = await _sealed(client, tok, archive, "CH-A")
        b = await _sealed(client, tok, archive, "CH-B")
        with monkeypatch.context() as m:  # a case file sealed before the redactable seal
            v1 = functools.partial(archive_mod.write_manifest, version=1)
            m.setattr(archive_mod, "write_manifest", v1)
            old = await _sealed(client, tok, archive, "CH-OLD")
        assert json.loads((old / "manifest.json").read_text())["version"] == 1
        manifest = json.loads((a / "manifest.json").read_text())
        assert manifest["version"] == 2 and TEXT not in (a / "manifest.json").read_text()
        res = await client.post(
            "/api/cases/CH-B/hold", json={"reason": "信访核查"}, headers=auth(tok.supervisor())
        )
        assert res.status == 200

        # The dry run a week on: A's chat would go, B's is held, the old one is kept.
        at = str(time.time() + 8 * DAY)
        code, out = await _cli(capsys, "retention", "--dry-run", "--at", at, "--json", *data)
        assert code == 0, out
        rows = json.loads(out.splitlines()[-1])["items"]
        assert {(r["case_id"], r["kind"], r["held"], r["kept"]) for r in rows} == {
            ("CH-A", "chat", False, None),
            ("CH-B", "chat", True, None),
            ("CH-OLD", "chat", False, OLD_SEAL),
        }
        assert f"would purge CH-A/{a.name} chat: 1 message(s)" in out
        assert "KEPT: sealed before the redactable seal" in out
        assert TEXT in (a / "timeline.jsonl").read_text()  # a dry run changes nothing
        [whole] = [e for e in await _timeline(client, tok, "CH-A") if e["type"] == "chat.message"]

        assert await _pass(client, 6) == []  # not yet
        done = await _pass(client, 8)
        assert [(d["case_id"], d["kind"], d["messages"]) for d in done] == [("CH-A", "chat", 1)]
        assert await _pass(client, 9) == []  # nothing twice

        # The case file: a stub with the manifest's hash, no text, no sender; the
        # recordings and the still stay.
        [chat] = manifest["chat"]
        [stub] = [e for e in _lines(a) if e["type"] == "chat.message"]
        assert stub["seq"] == chat["seq"] and stub["ts"] == chat["ts"] and stub["actor"] is None
        assert stub["data"]["purged"]["hash"] == chat["event_hash"]
        assert TEXT not in (a / "timeline.jsonl").read_text()
        assert (a / "tracks" / "cam_1.webm").exists() and any((a / "snapshots").iterdir())
        # The record: the same stub, the chat row emptied; retention.purged names it.
        events = await _timeline(client, tok, "CH-A")
        [row] = [e for e in events if e["type"] == "chat.message"]
        assert row["data"] == stub["data"] and row["actor"] is None
        [purged] = [e for e in events if e["type"] == "retention.purged"]
        assert purged["data"]["kind"] == "chat" and purged["data"]["files"] == []
        assert purged["data"]["events"] == [{"seq": chat["seq"], "sha256": chat["event_hash"]}]
        [kept] = await client.app[HISTORY].chat(a.name)
        assert kept["text"] == "" and kept["sender"] is None
        # The replay shows the message as purged, not as missing.
        res = await client.get(f"/api/sessions/{a.name}/recording", headers=auth(tok.supervisor()))
        marks = [m for m in (await res.json())["markers"] if m["type"] == "chat"]
        assert [set(m["data"]) for m in marks] == [{"purged"}]
        # The record restored from a backup made before the purge: a node (re)started
        # redacts it again on its first pass.
        async with client.app[HISTORY].engine.begin() as conn:
            where = (schema.events.c.case_id == "CH-A", schema.events.c.seq == whole["seq"])
            put_back = {"actor": whole["actor"], "data": whole["data"]}
            await conn.execute(sa.update(schema.events).where(*where).values(**put_back))
        assert TEXT in json.dumps(await _timeline(client, tok, "CH-A"), ensure_ascii=False)
        r = client.app[RETENTION]
        again = Retention(
            r.store, r.archive, r.periods, r.file_event, r.clock, "n2", record=r.record
        )
        assert await again.run_once() == []
        assert TEXT not in json.dumps(await _timeline(client, tok, "CH-A"), ensure_ascii=False)
        # B (held) and the version-1 case file keep their chat.
        assert TEXT in (b / "timeline.jsonl").read_text()
        assert TEXT in (old / "timeline.jsonl").read_text()

        # verify: OK for what remains, and says the chat was purged.
        for case in ("CH-A", "CH-B", "CH-OLD"):
            code, out = await _cli(capsys, "verify", case, *data)
            assert code == 0, out
        code, out = await _cli(capsys, "verify", "CH-A", *data)
        assert "chat: purged" in out and "(1 messages;" in out, out

        # Each tampering, reported precisely.
        lines = _lines(a)
        at_ = next(i for i, e in enumerate(lines) if e["type"] == "chat.message")
        where = f"at position {at_ + 1} (seq {chat['seq']})"
        forged = json.loads(json.dumps(lines))
        forged[at_]["data"]["purged"]["hash"] = "0" * 64
        _rewrite(a, forged)
        code, out = await _cli(capsys, "verify", "CH-A", "--files-only", *data)
        assert code == 1, out
        assert f"purged chat message {where}: its stub's hash does not match" in out, out
        edited = json.loads(json.dumps(lines))
        still = next(i for i, e in enumerate(lines) if e["type"] == "snapshot.taken")
        edited[still]["data"]["size"] = 1
        _rewrite(a, edited)
        code, out = await _cli(capsys, "verify", "CH-A", "--files-only", *data)
        assert code == 1 and f"event edited at position {still + 1}" in out, out
        swapped = json.loads(json.dumps(lines))
        swapped[still] = dict(lines[at_], seq=lines[still]["seq"], type="snapshot.taken")
        _rewrite(a, swapped)
        code, out = await _cli(capsys, "verify", "CH-A", "--files-only", *data)
        assert code == 1 and "snapshot.taken replaced by a purge stub" in out, out
        _rewrite(a, lines)
        tomb = (a / "purged.json").read_text()
        (a / "purged.json").write_text(json.dumps(dict(json.loads(tomb), purges=[])))
        code, out = await _cli(capsys, "verify", "CH-A", *data)
        assert code == 1, out
        assert f"chat message purged {where} without a tombstone entry" in out, out
        (a / "purged.json").write_text(tomb)
        assert (await _cli(capsys, "verify", "CH-A", *data))[0] == 0
        # The record's stub altered: the store's side names it.
        bad = json.loads(json.dumps(stub["data"]))
        bad["purged"]["hash"] = "1" * 64
        async with client.app[HISTORY].engine.begin() as conn:
            where = (schema.events.c.case_id == "CH-A", schema.events.c.seq == stub["seq"])
            await conn.execute(sa.update(schema.events).where(*where).values(data=bad))
        code, out = await _cli(capsys, "verify", "CH-A", *data)
        assert code == 1 and "store: purged chat message at position" in out, out
        async with client.app[HISTORY].engine.begin() as conn:
            await conn.execute(sa.update(schema.events).where(*where).values(data=stub["data"]))

        # The recordings' period comes later; the chat stays purged, all still verifies.
        done = await _pass(client, 31)
        assert sorted((d["case_id"], d["kind"]) for d in done) == [
            ("CH-A", "recordings"),
            ("CH-OLD", "recordings"),
        ]
        code, out = await _cli(capsys, "verify", "CH-A", *data)
        assert code == 0 and "recordings: purged" in out and "chat: purged" in out, out

        # B released; a node purges its chat and dies after the tombstone and the
        # timeline, before the record and the event: the next pass finishes both.
        res = await client.delete("/api/cases/CH-B/hold", headers=auth(tok.admin()))
        assert res.status == 200
        periods = client.app[RETENTION].periods.seconds()
        now = client.app[SERVICE].clock()
        [item] = [d for d in disk.due_in("CH-B", b.name, b, periods, now) if d.kind == "chat"]
        disk.purge(b, item, now)
        assert TEXT not in (b / "timeline.jsonl").read_text()
        done = await _pass(client, 32)  # the chat filed first, then B's recordings go
        assert [(d["case_id"], d["kind"]) for d in done] == [("CH-B", "recordings")]
        events = await _timeline(client, tok, "CH-B")
        [row] = [e for e in events if e["type"] == "chat.message"]
        assert set(row["data"]) == {"purged"} and row["actor"] is None
        assert [e["data"]["kind"] for e in events if e["type"] == "retention.purged"] == [
            "chat",
            "recordings",
        ]
        code, out = await _cli(capsys, "verify", "CH-B", *data)
        assert code == 0 and "chat: purged" in out, out


async def test_guomi_chat_purge_once_across_two_nodes(
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two apps on one real Redis sharing one archive, sealing with SM2-SM3, purge the
    chat at the same moment: once, one event; the SM3 stub verifies."""
    url = redis_url[:-1] + "8"
    flush_redis(url)
    shared = tmp_path / "shared-archive"
    shared.mkdir(mode=0o700)
    configs = []
    for name in ("a", "b"):
        (tmp_path / name / "data").mkdir(parents=True, mode=0o700)
        (tmp_path / name / "data" / "archive").symlink_to(shared)
        node = {"redis_url": url, "node_id": f"node-{name}", "seal_algorithm": "sm2-sm3"}
        configs.append(_config(tmp_path / name, **node))
    _env(monkeypatch, configs[0])
    monkeypatch.setenv("JR_SEAL_ALGORITHM", "sm2-sm3")
    tok = Tokens(TokenService(configs[0]))
    async with (
        TestClient(TestServer(create_app(configs[0]))) as a,
        TestClient(TestServer(create_app(configs[1]))) as b,
    ):
        directory = await _sealed(a, tok, shared, "CH-2N")
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["seal"]["hash"] == "sm3"
        for client in (a, b):
            _jump(client, 8)
        await a.app[EVICTOR].sweep()
        done = await asyncio.gather(a.app[RETENTION].run_once(), b.app[RETENTION].run_once())
        assert sorted(d["kind"] for node in done for d in node) == ["chat"], done
        log = await a.app[STORE].read_log("case:CH-2N:events")
        events = log or await _timeline(a, tok, "CH-2N")
        purges = [e["data"] for e in events if e["type"] == "retention.purged"]
        [chat] = manifest["chat"]
        assert [p["events"] for p in purges] == [[{"seq": chat["seq"], "sm3": chat["event_hash"]}]]
        assert TEXT not in (directory / "timeline.jsonl").read_text()
        argv = ["verify", "CH-2N", "--data-dir", str(configs[0].data_dir), "--redis-url", url]
        code, out = await _cli(capsys, *argv)
        assert code == 0 and "chat: purged" in out and "sm2-sm3" in out, out
    flush_redis(url)
