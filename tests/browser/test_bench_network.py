"""``jointreview bench network`` at a tiny size (a clean row and a 5 s cut, 3 s windows),
so that the command cannot rot: it runs end to end, says what it measured in its JSON
line, and leaves no namespace or interface behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.netns import usable

ROOT = Path(__file__).resolve().parents[2]


def test_bench_network_at_a_tiny_size() -> None:
    why = usable()
    if why:
        pytest.fail(why)
    argv = [sys.executable, "-m", "jointreview.cli", "bench", "network"]
    argv += ["--rows", "clean,cut5", "--window", "3", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err[-3000:]
    assert "row 2/2 cut5" in err  # progress
    assert "load average" in out
    rows = json.loads(out.strip().splitlines()[-1])["rows"]
    assert rows["clean"]["fps_avg"] > 0
    assert rows["clean"]["loss_pct"] == 0
    assert rows["clean"]["moving_after_s"] == 1.0  # (moving from its first second)
    cut = rows["cut5"]
    assert cut["slot"] == "same"
    assert cut["reconnecting_after_cut_s"] > 0
    assert cut["video_after_return_s"] >= 0  # -1: never
    assert cut["most_tiles_of_others"] == 1
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"jrnet{proc.pid}" not in left
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f" jrh{1 + proc.pid % 250}@" not in links
