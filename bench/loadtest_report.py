"""What ``jointreview loadtest`` found: the summary (join times, per-track media figures,
ring latency, errors by kind, the server's own figures) and its printout, in the manner
of LiveKit's ``lk load-test``: a line per session, then the totals."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, TextIO

from .sfu_report import percentile


def _pct(values: list[float], q: float) -> float | None:
    p = percentile(values, q)
    return None if p is None else round(p, 1)


def media_summary(tracks: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    mine = [t for t in tracks if t["kind"] == kind]
    lost = sum(int(t["lost"]) for t in mine)
    expected = sum(int(t["expected"]) for t in mine)
    kbps = [float(t["kbps"]) for t in mine]
    out: dict[str, Any] = {
        "tracks": len(mine),
        "kbps_p50": _pct(kbps, 0.5),
        "kbps_min": round(min(kbps), 1) if kbps else None,
        "kbps_total": round(sum(kbps), 1),
        "packets": sum(int(t["packets"]) for t in mine),
        "lost": lost,
        "loss_pct": round(lost / expected * 100, 3) if expected else None,
    }
    if kind == "video":
        fps = [float(t["fps"]) for t in mine]
        out.update(
            fps_p50=_pct(fps, 0.5),
            fps_min=round(min(fps), 1) if fps else None,
            freezes=sum(int(t["freezes"]) for t in mine),
            frozen_s=round(sum(float(t["frozen_s"]) for t in mine), 2),
            tracks_frozen=sum(1 for t in mine if t["freezes"]),
            tracks_stopped=sum(1 for t in mine if t.get("stopped")),
        )
    return out


def per_session(tracks: list[dict[str, Any]], joined: dict[str, int]) -> list[dict[str, Any]]:
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tracks:
        by[t["session_id"]].append(t)
    rows = []
    for sid, count in joined.items():
        video = [t for t in by.get(sid, []) if t["kind"] == "video"]
        lost = sum(int(t["lost"]) for t in by.get(sid, []))
        expected = sum(int(t["expected"]) for t in by.get(sid, []))
        rows.append(
            {
                "session_id": sid,
                "joined": count,
                "video_tracks": len(video),
                "fps_min": round(min((float(t["fps"]) for t in video), default=0.0), 1),
                "video_kbps_mean": round(sum(float(t["kbps"]) for t in video) / len(video), 1)
                if video
                else 0.0,
                "loss_pct": round(lost / expected * 100, 3) if expected else None,
                "freezes": sum(int(t["freezes"]) for t in video),
            }
        )
    return rows


def summarise(
    *,
    plan: dict[str, Any],
    members: list[dict[str, Any]],
    tracks: list[dict[str, Any]],
    rings: list[float],
    sockets: dict[str, int],
    errors: Counter[str],
    server: dict[str, Any],
    session_members: dict[str, int],
) -> dict[str, Any]:
    ok = [m for m in members if m.get("ok")]
    joins = [float(m["join_ms"]) for m in ok if m.get("join_ms") is not None]
    media = [float(m["media_ms"]) for m in ok if m.get("media_ms") is not None]
    expected_video = plan["participants"] * (plan["party"] - 1)
    video = media_summary(tracks, "video")
    if video["tracks"] < expected_video and ok:
        errors["video_track_missing"] += expected_video - video["tracks"]
    if video.get("tracks_stopped"):
        errors["video_stopped"] += video["tracks_stopped"]
    return {
        **plan,
        "joined": len(ok),
        "join_ms_p50": _pct(joins, 0.5),
        "join_ms_p95": _pct(joins, 0.95),
        "media_ms_p50": _pct(media, 0.5),
        "media_ms_p95": _pct(media, 0.95),
        "video": video,
        "audio": media_summary(tracks, "audio"),
        "sessions_detail": per_session(tracks, session_members),
        "rings": {
            **sockets,
            "received": len(rings),
            "ms_p50": _pct(rings, 0.5),
            "ms_p95": _pct(rings, 0.95),
            "ms_max": round(max(rings), 1) if rings else None,
        },
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "server": server,
    }


def _v(x: Any, unit: str = "") -> str:
    return "-" if x is None else f"{x}{unit}"


def report(s: dict[str, Any], out: TextIO) -> None:
    def say(text: str = "") -> None:
        print(text, file=out)

    say(
        f"loadtest of {s['url']}: {s['sessions']} sessions × {s['party']} participants, "
        f"{s['idle_sockets']} idle inbox sockets, {s['seconds']:g}s window"
    )
    head = ("joined", 6), ("videos", 6), ("fps min", 8), ("kbps", 8), ("loss %", 7), ("freezes", 7)
    say(f"{'session':<24} " + " ".join(f"{name:>{width}}" for name, width in head))
    for r in s["sessions_detail"]:
        say(
            f"{r['session_id']:<24} {r['joined']:>6} {r['video_tracks']:>6} {r['fps_min']:>8} "
            f"{r['video_kbps_mean']:>8} {_v(r['loss_pct']):>7} {r['freezes']:>7}"
        )
    say()
    say(
        f"joined {s['joined']}/{s['participants']}: join p50 {_v(s['join_ms_p50'], ' ms')}, "
        f"p95 {_v(s['join_ms_p95'], ' ms')}; every video received p50 "
        f"{_v(s['media_ms_p50'], ' ms')}, p95 {_v(s['media_ms_p95'], ' ms')}"
    )
    v, a = s["video"], s["audio"]
    say(
        f"video: {v['tracks']} tracks, fps p50 {_v(v['fps_p50'])} min {_v(v['fps_min'])}, "
        f"kbps p50 {_v(v['kbps_p50'])} min {_v(v['kbps_min'])}, loss {_v(v['loss_pct'], ' %')}, "
        f"{v['freezes']} freezes ({v['frozen_s']} s) on {v['tracks_frozen']} tracks, "
        f"{v['tracks_stopped']} stopped before the window's end"
    )
    say(
        f"audio: {a['tracks']} tracks, kbps p50 {_v(a['kbps_p50'])}, loss {_v(a['loss_pct'], ' %')}"
    )
    r = s["rings"]
    say(
        f"rings: {r['open']}/{r['sockets']} idle sockets open, {r['received']}/{r['expected']} "
        f"rings, {r['rang_all']} sockets rang for every invitation; latency p50 "
        f"{_v(r['ms_p50'], ' ms')}, p95 {_v(r['ms_p95'], ' ms')}, max {_v(r['ms_max'], ' ms')}"
    )
    server = s["server"]
    if server.get("before") and server.get("after"):
        b, e = server["before"], server["after"]
        say(
            f"server process: RSS {b['rss_bytes'] / 1e6:.1f} → {e['rss_bytes'] / 1e6:.1f} MB, "
            f"fds {b['fds']} → {e['fds']}, tasks {b['tasks']} → {e['tasks']}, "
            f"threads {b['threads']} → {e['threads']} (before the load → at its end)"
        )
    if server.get("settled"):
        t = server["settled"]
        say(
            f"server process after the teardown: RSS {t['rss_bytes'] / 1e6:.1f} MB, "
            f"fds {t['fds']}, tasks {t['tasks']}, threads {t['threads']}"
        )
    m = s["machine"]
    say(
        f"this machine: {m['cores']} cores, load average {m['loadavg_start']} at the start, "
        f"{m['loadavg_end']} at the end (the participants run here too)"
    )
    if s["errors"]:
        say("errors: " + ", ".join(f"{k} {n}" for k, n in s["errors"].items()))
    else:
        say("errors: none")
