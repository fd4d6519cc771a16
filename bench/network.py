"""``jointreview bench network``: issue #14's table for today's code.

A real ``jointreview serve`` (default settings: resume grace, heartbeats as shipped), a
clerk's headless Chromium on the host and a reviewer's in a network namespace behind the
impairment relay (``bench/netns.py``, ``bench/impair.py``). Each row is a fresh call:
both pages join, the reviewer's received bitrate is let settle (its figure is the row's
"full rate"), then the row's conditions are applied to the reviewer's link. Measured from
``getStats()`` of the clerk's video on the reviewer's page, once a second
(``bench/network_pages.py``); cuts from the pages' own watchers. Rows:

- steady rows (clean, loss with delay, thin links): a window of ``--window`` seconds from
  the moment the conditions apply: fps average (worst second), freezes and time frozen,
  loss, jitter buffer, received bitrate (and how much of it was resent), the clerk's sent
  bitrate, and whether the reviewer's media connection left "connected" (consent
  checks lost in a full queue, say) or was rebuilt; when the video was first usable
  (two seconds at 8 fps or more, or shown paused with the audio flowing: #14's target
  for a thin link) and how many seconds the page showed it paused;
- ``1mbps``: also the time until the video moves steadily (3 s at ≥ 10 fps without a
  freeze) and, after lifting, until the received bitrate is back to 80 % of full rate;
- ``jitter``: jitter with reordering for 10 s, then clean: the time back to full rate;
- cuts (5, 20, 60 s; 5 s with an address change): "reconnecting" shown after the cut
  starts, video again after the link returns, same slot or new, when the clerk's page
  shows the reviewer reconnecting, and the most tiles of others it showed at once.

``--trace`` prints each second as measured (and the clerk's encoder: keyframes, frames
encoded, width, target bitrate; the reviewer's decoder: keyframes, NACKs, PLIs, width).

Needs root, iproute2 and Debian's Chromium (``scripts/setup --test``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .netns import usable
from .network_rows import ROWS, Call, Rig, run_row

PORTS = 12


def add_parser(targets: Any) -> None:
    p = targets.add_parser(
        "network", help="Chromium behind an impaired link: fps, freezes, loss, cuts (#14)"
    )
    p.add_argument("--window", type=float, default=30.0, help="seconds measured per row")
    p.add_argument("--rows", default=",".join(ROWS), help=f"rows, of: {','.join(ROWS)}")
    p.add_argument("--repeat", type=int, default=1, help="runs of each row (medians)")
    p.add_argument("--json", action="store_true", help="a JSON summary as stdout's last line")
    p.add_argument("--trace", action="store_true", help="print what each second measured")


def say(text: str) -> None:
    print(f"bench network: {text}", file=sys.stderr, flush=True)


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers: the median of the runs that saw it (-1: never), and how many never did;
    anything else: the values seen, joined."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, bool) for v in values):
            out[key] = any(values)
        elif key.startswith("most_"):
            out[key] = max(values)  # the worst run: "never two" means in none of them
        elif all(isinstance(v, (int, float)) for v in values):
            seen = [v for v in values if v != -1]
            out[key] = round(statistics.median(seen), 2) if seen else -1
            if seen and len(seen) < len(values):
                out[f"{key}_never"] = len(values) - len(seen)
        else:
            out[key] = "/".join(sorted({str(v) for v in values}))
    if len(runs) > 1:
        out["runs"] = len(runs)
    return out


def _cell(value: Any, unit: str = "", never: Any = 0) -> str:
    if value is None or value == -1:
        return "never"
    return f"{value}{unit}" + (f" ({never}× never)" if never else "")


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| link to the reviewer | fps avg (worst 1 s) | freezes / frozen | loss | jitter buffer"
        " | received (of it resent) | clerk sends | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cuts = [
        "| cut | reconnecting after the cut starts | socket / video after the link returns"
        " | slot | clerk sees reconnecting | most tiles of others |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        label = ROWS[name].label
        if ROWS[name].kind == "cut":
            away = "others_see_reconnecting_s"
            cuts.append(
                f"| {label} | {_cell(r['reconnecting_after_cut_s'], ' s')}"
                f" | {_cell(r['socket_after_return_s'], ' s')}"
                f" / {_cell(r['video_after_return_s'], ' s')}"
                f" | {r['slot']}"
                f" | {_cell(r[away], ' s', r.get(f'{away}_never'))}"
                f" | {r['most_tiles_of_others']} |"
            )
            continue
        other = []
        if "usable_after_s" in r:
            never = r.get("usable_after_s_never")
            other.append(f"usable after {_cell(r['usable_after_s'], ' s', never)}")
        if "moving_after_s" in r and r["moving_after_s"] != r.get("usable_after_s"):
            never = r.get("moving_after_s_never")
            other.append(f"moving video after {_cell(r['moving_after_s'], ' s', never)}")
        if r.get("paused_s"):
            other.append(f"video paused {r['paused_s']} s")
        if "adapted_s" in r:
            other.append(f"steady video after {_cell(r['adapted_s'], ' s')}")
        if "full_rate_after_s" in r:
            other.append(f"full rate {_cell(r['full_rate_after_s'], ' s')} after lifting")
        if r.get("connection_lost"):
            other.append("reviewer's media connection left 'connected'")
        lines.append(
            f"| {label} | {r['fps_avg']} ({r['fps_worst_1s']}) | {r['freezes']} / {r['frozen_s']} s"
            f" | {r['loss_pct']} % | {_cell(r['jitter_buffer_ms'], ' ms')}"
            f" | {r['rx_kbps']} ({r['rx_retransmitted_kbps']}) kbps | {r['clerk_tx_kbps']} kbps"
            f" | {'; '.join(other)} |"
        )
    out = "\n".join(lines) if len(lines) > 2 else ""
    if len(cuts) > 2:
        out += ("\n\n" if out else "") + "\n".join(cuts)
    return out


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: argparse.Namespace) -> int:
    why = usable()
    if why:
        say(why)
        return 2
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        say(f"unknown rows {unknown}; rows are {','.join(ROWS)}")
        return 2
    # SIGTERM unwinds like Ctrl-C: the namespace, its interfaces and the server go too.
    signal.signal(signal.SIGTERM, _interrupted)
    scratch = Path(tempfile.mkdtemp(prefix="jr-bench-network-"))
    load_before = os.getloadavg()
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {}
    base = random.randrange(30_000, 60_000 - PORTS)
    failed = True
    try:
        with Rig(scratch, range(base, base + PORTS)) as rig:
            say(f"server {rig.server_url}, reviewer at {rig.ns.ns_ip} behind {rig.ns.host_ip}")
            total = len(names) * args.repeat
            for i, name in enumerate(n for n in names for _ in range(args.repeat)):
                say(f"row {i + 1}/{total} {name} (elapsed {time.monotonic() - started:.0f} s)")
                with Call(rig, f"NET-{i}") as call:
                    result = run_row(call, ROWS[name], args.window, args.trace)
                say(f"  {json.dumps(result, ensure_ascii=False)}")
                runs.setdefault(name, []).append(result)
        failed = False
    finally:
        if failed:  # keep the server's log, not the camera file or the browsers' profiles
            (scratch / "camera.y4m").unlink(missing_ok=True)
            shutil.rmtree(scratch / "chromium", ignore_errors=True)
            say(f"stopped; the server's log: {scratch / 'server.log'}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = {name: median_row(r) for name, r in runs.items()}
    load_after = os.getloadavg()
    print(f"jointreview bench network: window {args.window:g} s, repeat {args.repeat}")
    print(table(summary))
    print(
        "load average (1/5/15 min): before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
        + f"; {os.cpu_count()} cores; took {time.monotonic() - started:.0f} s"
    )
    if args.json:
        out = {
            "window_s": args.window,
            "repeat": args.repeat,
            "load_avg_before": load_before,
            "load_avg_after": load_after,
            "rows": summary,
        }
        print(json.dumps(out, ensure_ascii=False))
    return 0
