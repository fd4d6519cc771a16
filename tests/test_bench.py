"""``jointreview bench sfu`` end to end, at its smallest sizes and a short window."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {
    "scenario",
    "mode",
    "subscribers",
    "sessions",
    "cpu_pct",
    "us_per_packet",
    "us_per_ingress_packet",
    "fps_min",
    "latency_ms_p50",
    "latency_ms_p95",
    "decode_errors",
    "frozen_streams",
    "packets_in_per_s",
    "packets_out_per_s",
}


@pytest.mark.timeout(150)
def test_bench_sfu_smallest_sizes() -> None:
    argv = ["bench", "sfu", "--seconds", "3", "--subscribers", "1", "--sessions", "1", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    rows = summary["results"]
    assert [(r["scenario"], r["mode"], r["subscribers"], r["sessions"]) for r in rows] == [
        ("fanout", "forward", 1, 1),
        ("fanout", "transcode", 1, 1),
        ("meeting", "forward", 6, 1),  # the baseline would be 30 streams: skipped
    ]
    for row in rows:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["packets_in_per_s"] > 0 and row["packets_out_per_s"] > 0
        if row["mode"] == "forward":
            assert row["fps_min"] > 10, row
            assert row["decode_errors"] == 0, row
            assert row["cpu_pct"] > 0, row
            assert row["latency_ms_p50"] is not None, row
    meeting = rows[2]
    # Six people, each receiving five others' audio and video: five times what comes in.
    assert meeting["packets_out_per_s"] == pytest.approx(5 * meeting["packets_in_per_s"], 0.1)
    assert summary["ratio_vs_baseline"] > 0
    assert summary["sessions_per_core"] > 0
    machine = summary["machine"]
    assert machine["cores"] >= 1 and len(machine["loadavg"]) == 3
    # What the machine charges per wakeup and per sendto, measured, to read the rows by
    assert 0 < machine["sendto_awake_us"] < machine["loop_wakeup_us"], machine
    assert "baseline" in proc.stderr.lower() and "skipped" in proc.stderr.lower()
