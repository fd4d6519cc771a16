"""The soak's figures: ``/healthz``'s admin-only process figures, the slope, and
``jointreview bench soak`` end to end at its smallest size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.soak import slope_per_hour, trend
from jointreview.app import create_app

from .conftest import Tokens, auth, make_config

ROOT = Path(__file__).resolve().parent.parent


async def test_healthz_adds_the_process_figures_for_an_admin_only(
    tmp_path: Path, tok: Tokens
) -> None:
    config = make_config(tmp_path, media_enabled=False, disk_min_free_bytes=0)
    async with TestClient(TestServer(create_app(config))) as client:
        res = await client.get("/healthz", headers=auth(tok.admin()))
        assert res.status == 200
        figures = (await res.json())["process"]
        for token in (None, tok.clerk(), tok.supervisor(), "not-a-token"):
            res = await client.get("/healthz", headers=auth(token) if token else {})
            assert res.status == 200  # the public answer: no figures, no refusal
            assert (await res.json()).get("process") is None, token
    assert figures["rss_bytes"] > 1_000_000
    assert figures["fds"] > 0 and figures["threads"] >= 1
    assert figures["tasks"] >= 1  # at least the request's own


def test_slope_per_hour_is_least_squares() -> None:
    assert slope_per_hour([(0, 5), (3600, 5)]) == 0
    assert slope_per_hour([(0, 0), (10, 1), (20, 2)]) == pytest.approx(360)
    assert slope_per_hour([(0, 1)]) is None
    # A warm-up step and then flat: the whole run slopes, its second half does not.
    samples = [{"t": t, "rss_bytes": 100.0 if t < 60 else 150.0} for t in range(0, 600, 10)]
    figures = trend(samples, "rss_bytes")
    assert figures["slope_per_hour"] > 0 and figures["settled_slope_per_hour"] == 0
    assert figures["flat"] and (figures["start"], figures["end"]) == (100, 150)
    falling = [{"t": t, "tasks": 700.0 if t < 400 else 200.0} for t in range(0, 600, 10)]
    assert not trend(falling, "tasks")["grows"] and not trend(falling, "tasks")["flat"]


@pytest.mark.timeout(150)
def test_bench_soak_smallest() -> None:
    argv = ["bench", "soak", "--seconds", "6", "--interval", "2", "--sessions", "1", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["samples"] >= 3
    for key in ("rss_bytes", "fds", "threads", "tasks", "tree_rss_bytes"):
        figures = summary["trends"][key]
        assert figures["start"] > 0 and figures["slope_per_hour"] is not None, key
    assert all(s["tasks"] > 0 for s in summary["series"])
    assert summary["media"]["fps_min"] > 10 and summary["media"]["frozen_streams"] == 0
    assert "soak" in proc.stderr and "tasks" in proc.stderr  # the progress
