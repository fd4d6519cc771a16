"""What ``jointreview bench sfu`` measured: one row per scenario × mode × size, the
summary (CPU ratio against the baseline, six-party sessions per core) and its printout."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TextIO

MEETING_SIZE = 6


@dataclass(frozen=True)
class Case:
    scenario: str  # fanout | meeting
    mode: str  # forward | transcode
    subscribers: int  # participants receiving video
    sessions: int
    size: int  # K (fanout) or S (meeting)

    @property
    def streams(self) -> int:
        """Subscriber streams: one subscriber receiving one publisher (audio + video)."""
        if self.scenario == "fanout":
            return self.size
        return self.size * MEETING_SIZE * (MEETING_SIZE - 1)

    @property
    def label(self) -> str:
        size = f"K={self.size}" if self.scenario == "fanout" else f"S={self.size}"
        return f"{self.scenario} {self.mode} {size}"


@dataclass
class Row:
    scenario: str
    mode: str
    subscribers: int
    sessions: int
    cpu_pct: float
    us_per_packet: float | None
    us_per_ingress_packet: float | None
    fps_min: float
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    decode_errors: int
    frozen_streams: int
    packets_in_per_s: float
    packets_out_per_s: float
    # context beyond the required fields
    subscriber_streams: int = 0
    window_s: float = 0.0
    generator_cpu_pct: float = 0.0  # all load generators together
    generator_cpu_max_pct: float = 0.0  # the busiest one (each runs on one core at most)
    server_udp_drops: int = 0  # datagrams the kernel dropped: the socket's reader lagged
    generator_udp_drops: int = 0
    ready: str = ""
    delivered: float = 0.0  # packets out / (packets in × subscribers of each packet)
    publisher_late_max_ms: float = 0.0
    probe_frames_dropped: int = 0  # incomplete, or waiting for a keyframe after one
    loadavg: float = 0.0  # 1-minute load average when the window closed
    notes: list[str] = field(default_factory=list)


# -- small helpers -------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load_notes(row: Row) -> list[str]:
    """Say when the numbers describe the load generators (or the machine) rather than
    the server: they share its two cores."""
    notes = []
    if row.generator_udp_drops:
        notes.append(
            f"the load generators' sockets overflowed ({row.generator_udp_drops} datagrams "
            "dropped): they did not keep up, so fps, latency, decode errors and freezes "
            "at this size describe the generators"
        )
    if row.server_udp_drops:
        notes.append(f"the server's sockets overflowed ({row.server_udp_drops} datagrams)")
    if row.publisher_late_max_ms > 100:
        notes.append(
            f"publishers sent up to {row.publisher_late_max_ms:.0f} ms late (a generator's "
            "event loop lagged)"
        )
    if row.loadavg > (os.cpu_count() or 1):
        notes.append(
            f"load average {row.loadavg:.2f} on {os.cpu_count()} cores (this benchmark's "
            "own processes included)"
        )
    return notes


def skipped_text(skipped: list[Case], limit: int) -> str:
    sizes = ", ".join(c.label.split(" ", 2)[2] + f" ({c.streams} streams)" for c in skipped)
    return (
        f"transcode at {sizes}: more than {limit} subscriber streams "
        "(--baseline-max-streams; the relay saturates two cores at about eight)"
    )


def clean(row: dict[str, Any]) -> bool:
    """Did every subscriber get every frame, with nothing dropped on the way?"""
    return (
        row["fps_min"] >= 25
        and row["decode_errors"] == 0
        and row["frozen_streams"] == 0
        and row["server_udp_drops"] == 0
        and row["generator_udp_drops"] == 0
    )


def summarise(rows: list[dict[str, Any]], skipped: list[Case], limit: int) -> dict[str, Any]:
    def key(r: dict[str, Any]) -> tuple[str, int, int]:
        return (r["scenario"], r["subscribers"], r["sessions"])

    fwd = {key(r): r for r in rows if r["mode"] == "forward"}
    base = {key(r): r for r in rows if r["mode"] == "transcode"}
    ratio = None
    ratio_at = None
    both = [k for k in base if k in fwd and fwd[k]["cpu_pct"] > 0]
    if both:
        k = max(
            both,
            key=lambda k: (  # the baseline may stutter (that is its result); not the tool
                clean(fwd[k]) and base[k]["generator_udp_drops"] == 0,
                base[k]["subscriber_streams"],
                k[0] == "fanout",
            ),
        )
        streams = base[k]["subscriber_streams"]
        ratio = round(base[k]["cpu_pct"] / fwd[k]["cpu_pct"], 1)
        ratio_at = {
            "scenario": k[0],
            "subscribers": k[1],
            "sessions": k[2],
            "subscriber_streams": streams,
            "baseline_cpu_pct_per_stream": round(base[k]["cpu_pct"] / streams, 2),
            "forward_cpu_pct_per_stream": round(fwd[k]["cpu_pct"] / streams, 2),
            "clean": clean(fwd[k]) and base[k]["generator_udp_drops"] == 0,
        }
    per_core = None
    per_core_at = None
    meetings = [r for r in rows if r["scenario"] == "meeting" and r["mode"] == "forward"]
    if meetings:
        # The largest size whose load was carried cleanly (a run where the generators fell
        # behind has the server idling less predictably); the largest of all otherwise.
        # None clean: the one that delivered the most of what it should have (where the
        # generators starved, the server also had less to forward and looks cheaper).
        r = max(meetings, key=lambda r: (clean(r), r["sessions"] if clean(r) else r["delivered"]))
        per_session = r["cpu_pct"] / r["sessions"]
        per_core = round(100 / per_session, 1) if per_session > 0 else None
        per_core_at = {
            "sessions": r["sessions"],
            "cpu_pct_per_session": round(per_session, 2),
            "clean": clean(r),
        }
    return {
        "results": rows,
        "ratio_vs_baseline": ratio,
        "ratio_at": ratio_at,
        "sessions_per_core": per_core,
        "sessions_per_core_at": per_core_at,
        "baseline_skipped": [
            {"scenario": c.scenario, "subscribers": c.subscribers, "sessions": c.sessions}
            for c in skipped
        ],
        "baseline_skipped_reason": f"more than {limit} subscriber streams" if skipped else None,
        "machine": {
            "cores": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
    }


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def report(summary: dict[str, Any], skipped: list[Case], limit: int, out: TextIO) -> None:
    head = (
        f"{'scenario':<8} {'mode':<9} {'subs':>4} {'sess':>4} {'streams':>7} {'cpu%':>6} "
        f"{'us/out':>7} {'us/in':>7} {'pkt in/s':>9} {'pkt out/s':>9} {'fps min':>7} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'dec err':>7} {'frozen':>6} {'gen cpu%':>9} "
        f"{'drops srv/gen':>13}"
    )
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in summary["results"]:
        print(
            f"{r['scenario']:<8} {r['mode']:<9} {r['subscribers']:>4} {r['sessions']:>4} "
            f"{r['subscriber_streams']:>7} {r['cpu_pct']:>6.1f} "
            f"{_fmt(r['us_per_packet'], '.1f'):>7} {_fmt(r['us_per_ingress_packet'], '.1f'):>7} "
            f"{r['packets_in_per_s']:>9.0f} {r['packets_out_per_s']:>9.0f} "
            f"{r['fps_min']:>7.1f} {_fmt(r['latency_ms_p50'], '.1f'):>7} "
            f"{_fmt(r['latency_ms_p95'], '.1f'):>7} {r['decode_errors']:>7} "
            f"{r['frozen_streams']:>6} "
            f"{r['generator_cpu_pct']:>4.0f}/{r['generator_cpu_max_pct']:<4.0f} "
            f"{r['server_udp_drops']:>6}/{r['generator_udp_drops']:<6}",
            file=out,
        )
        for note in r["notes"]:
            print(f"    note: {note}", file=out)
    print(file=out)
    print(
        "streams = subscriber streams (one subscriber receiving one publisher's audio + "
        "video); cpu% = server process, % of one core; us/out, us/in = server CPU µs per "
        "RTP packet received by subscribers / sent by publishers; latency from probes that "
        "decode; gen cpu% = the load generators on the same machine (all/busiest process); "
        "drops = datagrams the kernel dropped because the server's / generators' socket "
        "buffers were full.",
        file=out,
    )
    if skipped:
        print("Baseline skipped: " + skipped_text(skipped, limit) + ".", file=out)
    at = summary["ratio_at"]
    if at:
        size = f"K={at['subscribers']}" if at["scenario"] == "fanout" else f"S={at['sessions']}"
        print(
            f"CPU per subscriber stream, baseline / jointreview: {summary['ratio_vs_baseline']}x "
            f"(at {at['scenario']} {size}, {at['subscriber_streams']} streams, the largest "
            f"size both ran{'' if at['clean'] else ' (not cleanly)'}: "
            f"{at['baseline_cpu_pct_per_stream']}% vs "
            f"{at['forward_cpu_pct_per_stream']}% of a core per stream)",
            file=out,
        )
    else:
        print("CPU ratio vs baseline: no size ran in both modes", file=out)
    pc = summary["sessions_per_core_at"]
    if pc and summary["sessions_per_core"] is not None:
        print(
            f"Six-party sessions per core (forward): {summary['sessions_per_core']} "
            f"(from meeting S={pc['sessions']}, the largest size "
            f"{'carried cleanly' if pc['clean'] else 'measured (none was clean)'}: "
            f"{pc['cpu_pct_per_session']}% of a core per session)",
            file=out,
        )
    for f in summary.get("failed", []):
        print(f"FAILED: {f['scenario']} {f['mode']} size {f['size']}: {f['error']}", file=out)
    m = summary["machine"]
    print(f"Machine: {m['cores']} cores, load average {m['loadavg']}", file=out)
    if "loop_wakeup_us" in m:
        print(
            f"This machine's costs outside the SFU's own work (CPU µs): an event-loop wakeup "
            f"{m['loop_wakeup_us']}, a sendto on loopback {m['sendto_waking_us']} when it "
            f"wakes the receiving process, {m['sendto_awake_us']} when not "
            "(bench/machine.py)",
            file=out,
        )
