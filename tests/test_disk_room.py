"""No recording starts on a disk without room for it (disk_min_free_bytes): a clear 507
instead of a recording that the full disk would end halfway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling.auth import TokenService

from .conftest import auth, make_config
from .wsclient import Signal

NO_ROOM = 1 << 62  # more free space than any disk has


def _client(tmp_path: Path, **overrides: Any) -> tuple[TestClient[Any, Any], str]:
    config = make_config(tmp_path, disk_min_free_bytes=NO_ROOM, **overrides)
    clerk = TokenService(config).issue(sub="clerk-01", role="clerk", name="陈晓")
    return TestClient(TestServer(create_app(config))), clerk


async def test_a_recorded_session_does_not_start_without_room(tmp_path: Path) -> None:
    client, clerk = _client(tmp_path, recording_policy="always")
    async with client:
        res = await client.post("/api/cases/DISK-1/sessions", json={}, headers=auth(clerk))
        assert res.status == 507
        err = (await res.json())["error"]
        assert err["code"] == "insufficient_storage"
        assert "disk_min_free_bytes" in err["message"]
        # Nothing was started: the case has no session.
        res = await client.get("/api/cases/DISK-1", headers=auth(clerk))
        assert res.status == 404


async def test_an_unrecorded_service_still_starts_sessions(tmp_path: Path) -> None:
    client, clerk = _client(tmp_path, recording_policy="off")
    async with client:
        res = await client.post("/api/cases/DISK-2/sessions", json={}, headers=auth(clerk))
        assert res.status == 201


async def test_the_clerk_cannot_switch_recording_on_without_room(tmp_path: Path) -> None:
    client, clerk = _client(tmp_path, recording_policy="clerk")
    async with client:
        res = await client.post("/api/cases/DISK-3/sessions", json={}, headers=auth(clerk))
        assert res.status == 201
        sid = (await res.json())["session_id"]
        sig = await Signal.connect(client, f"/ws?token={clerk}")
        await sig.request("join", "joined", session_id=sid)
        reply = await sig.request("recording.start", "error")
        assert reply["code"] == "insufficient_storage"
        res = await client.get("/api/cases/DISK-3/events?limit=500", headers=auth(clerk))
        types = [e["type"] for e in (await res.json())["events"]]
        assert "recording.started" not in types
        await sig.close()
