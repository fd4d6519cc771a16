"""Room in the archive (#18): on a nearly full disk (a real small tmpfs, as in
tests/test_faults.py) and against the archive's quota, a recorded session is refused
with a precise code, and healthz reports the archive's free space and quota use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jointreview.app import create_app
from signaling import storage
from signaling.auth import TokenService

from .conftest import auth, make_config
from .test_faults import small_fs  # noqa: F401  (the fixture: a 4 MiB tmpfs)

MIB = 1024 * 1024


@pytest.fixture
def archive_on_small_fs(tmp_path: Path, small_fs: Path) -> Iterator[Path]:  # noqa: F811
    """The node's archive on the small filesystem; the rest of data_dir on the big one."""
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data" / "archive").symlink_to(small_fs)
    yield small_fs


def _filler(where: Path, size: int) -> Path:
    path = where / "filler"
    with path.open("wb") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    return path


async def _start(client: TestClient[Any, Any], clerk: str, case: str) -> tuple[int, Any]:
    res = await client.post(f"/api/cases/{case}/sessions", json={}, headers=auth(clerk))
    return res.status, await res.json()


async def test_a_nearly_full_disk_and_a_full_quota_refuse_a_recorded_session(
    tmp_path: Path, archive_on_small_fs: Path
) -> None:
    fs = archive_on_small_fs
    config = make_config(
        tmp_path, recording_policy="always", disk_min_free_bytes=MIB, archive_quota_bytes=3 * MIB
    )
    clerk = TokenService(config).issue(sub="clerk-01", role="clerk", name="陈晓")
    async with TestClient(TestServer(create_app(config))) as client:
        res = await client.get("/healthz")
        archive = (await res.json())["checks"]["archive"]
        assert archive["ok"] and archive["quota_bytes"] == 3 * MIB
        assert 3 * MIB < archive["free_bytes"] <= 4 * MIB

        # The disk: 3.5 of its 4 MiB taken, less than disk_min_free_bytes left.
        filler = _filler(fs, 3 * MIB + MIB // 2)
        storage.forget_usage(config.data_dir / "archive")
        status, body = await _start(client, clerk, "ROOM-1")
        assert status == 507
        assert body["error"]["code"] == "insufficient_storage", body
        assert "disk_min_free_bytes" in body["error"]["message"]
        res = await client.get("/healthz")
        archive = (await res.json())["checks"]["archive"]
        assert not archive["ok"] and archive["free_bytes"] < MIB
        assert archive["quota_used_ratio"] > 1.0

        # Room on the disk again, but the quota: 2.5 of 3 MiB used, 0.5 MiB left.
        filler.unlink()
        _filler(fs, 2 * MIB + MIB // 2)
        storage.forget_usage(config.data_dir / "archive")
        status, body = await _start(client, clerk, "ROOM-2")
        assert status == 507
        assert body["error"]["code"] == "archive_quota_full", body
        res = await client.get("/healthz")
        health = await res.json()
        archive = health["checks"]["archive"]
        assert archive["used_bytes"] >= 2 * MIB + MIB // 2
        assert 0.8 < archive["quota_used_ratio"] < 0.9
        assert health["status"] == "ok"  # reported: the node still serves

        (fs / "filler").unlink()
        storage.forget_usage(config.data_dir / "archive")
        status, body = await _start(client, clerk, "ROOM-3")
        assert status == 201, body
