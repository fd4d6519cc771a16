"""``jointreview bench sfu`` and ``bench history`` end to end, at their smallest sizes."""

from __future__ import annotations

import asyncio
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


HISTORY_KEYS = {
    "database",
    "sessions",
    "cases",
    "events",
    "events_new",
    "filed",
    "batched",
    "live",
    "insert_us_per_event_batched",
    "insert_us_per_event_live",
    "rss_mb_before",
    "rss_mb_after",
    "rss_growth_mb",
    "queries",
    "restart_s_empty",
    "restart_s_filled",
    "targets",
}
QUERIES = {"case_view", "session_timeline", "dept_invitations_month", "window_sessions_week"}


def _bench_history(*extra: str) -> dict:
    argv = ["bench", "history", "--sessions", "200", "--queries", "20", "--json", *extra]
    proc = subprocess.run(
        [sys.executable, "-m", "jointreview.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert HISTORY_KEYS <= set(summary), HISTORY_KEYS - set(summary)
    # Every session and event generated is in the record, each once.
    assert summary["sessions"] == summary["filed"]["sessions"] == 200
    assert summary["events"] == summary["events_new"] == summary["filed"]["events"]
    assert summary["cases"] == summary["filed"]["cases"] > 0
    assert summary["batched"]["events"] + summary["live"]["events"] == summary["events"]
    assert summary["live"]["sessions"] > 0 and summary["live"]["events"] > 0
    # Each session brings its invitations, participants, chat, opinions and a still.
    for table in ("invitations", "participants", "chat", "opinions"):
        assert summary["filed"][table] >= 200, (table, summary["filed"])
    assert summary["filed"]["snapshots"] == 200
    for key in ("insert_us_per_event_batched", "insert_us_per_event_live", "rss_mb_before"):
        assert summary[key] > 0, key
    assert summary["restart_s_empty"] > 0 and summary["restart_s_filled"] > 0
    assert len(summary["rss_mb_quarters"]) == 4 and min(summary["rss_mb_quarters"]) > 0
    assert set(summary["queries"]) == QUERIES
    for name, q in summary["queries"].items():
        assert q["calls"] == 20 and q["rows"] > 0, (name, q)
        assert 0 < q["p50_ms"] <= q["p95_ms"], (name, q)
        assert summary["targets"][f"{name}_p95_ms"]["met"] in (True, False)
    assert "restart" in proc.stderr and "p95" in proc.stderr
    return summary


@pytest.mark.timeout(180)
def test_bench_history_sqlite() -> None:
    summary = _bench_history()
    assert summary["database"] == "sqlite"
    assert summary["targets"]["insert_us_per_event_batched"]["target"] == 200


@pytest.mark.timeout(180)
async def test_bench_history_postgres(fresh_postgres_url: str) -> None:
    from signaling.history import migrate

    await migrate.upgrade(fresh_postgres_url)
    summary = await asyncio.to_thread(_bench_history, "--database-url", fresh_postgres_url)
    assert summary["database"] == "postgresql"
    assert summary["db_bytes"] is None


async def test_a_generator_event_line_longer_than_64_kib_is_read(tmp_path: Path) -> None:
    """``bench sfu --seconds 240`` failed on a result line over asyncio's 64 KiB limit."""
    from bench.sfu_processes import Generator, open_log, spawn_speaking

    script = (
        "import json, sys\n"
        "tracks = [{'kind': 'video', 'packets': 12345, 'note': 'x' * 100}] * 2000\n"
        "sys.stdout.write(json.dumps({'event': 'result', 'tracks': tracks}) + '\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stdin.read()\n"
    )
    log = tmp_path / "generator.log"
    with open_log(log) as fh:
        proc = await spawn_speaking([sys.executable, "-c", script], {}, fh)
    gen = Generator(proc, log)
    try:
        result = await gen.expect("result", 30)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        await proc.wait()
    assert len(result["tracks"]) == 2000  # a line of ~250 KB


def test_a_long_window_latencies_fit_a_short_line() -> None:
    """The latencies travel as a histogram: a 240 s window of four decoded tracks (28,800
    pictures) is a line of a few KB, and the percentiles read back are the same."""
    from bench.sfu_load import latency_histogram
    from bench.sfu_processes import from_histogram
    from bench.sfu_report import percentile

    values = [20 + (i * 7919 % 6000) / 100 for i in range(240 * 30 * 4)]  # 20..80 ms
    hist = latency_histogram(values)
    assert len(json.dumps(hist)) < 64 * 1024
    back = from_histogram(hist)
    assert len(back) == len(values)
    rounded = [round(x, 1) for x in values]
    for q in (0.5, 0.95):
        assert percentile(back, q) == pytest.approx(percentile(rounded, q), abs=0.051)
