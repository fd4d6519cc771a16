"""``jointreview loadtest`` against a real ``jointreview serve`` process, at its smallest
size, and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import SECRET

ROOT = Path(__file__).resolve().parent.parent


def loadtest(*argv: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jointreview.cli", "loadtest", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(200)
def test_loadtest_one_session_and_idle_sockets(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = server_factory(env={"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]'})
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    argv = ["--url", server.url, "--jwt-secret-file", str(secret), "--sessions", "1"]
    proc = loadtest(*argv, "--idle-sockets", "7", "--seconds", "8", "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])

    assert s["errors"] == {} and s["error_count"] == 0
    assert s["joined"] == s["participants"] == 6
    assert s["join_ms_p50"] is not None and s["media_ms_p95"] is not None
    video = s["video"]
    assert video["tracks"] == 6 * 5  # everyone receives the other five
    assert video["fps_min"] > 5 and video["kbps_min"] > 0 and video["packets"] > 0
    assert s["audio"]["tracks"] == 30 and s["audio"]["packets"] > 0
    [session] = s["sessions_detail"]
    assert session["joined"] == 6 and session["video_tracks"] == 30
    rings = s["rings"]
    # Seven reviewers over the five departments the session invites: each rings once.
    assert rings["open"] == rings["open_at_end"] == rings["sockets"] == 7
    assert rings["expected"] == rings["received"] == rings["rang_all"] == 7
    assert rings["ms_max"] >= rings["ms_p95"] >= rings["ms_p50"] > 0
    before, after = s["server"]["before"], s["server"]["after"]
    assert after["tasks"] > before["tasks"]  # the server's own figures, as its admin sees them
    # Once the sessions are ended and the sockets closed, their tasks are gone.
    assert s["server"]["settled"]["tasks"] < after["tasks"]
    assert "idle sockets" in proc.stderr and "window" in proc.stderr  # progress


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--sessions", "51"], "--max-sessions"),
        (["--sessions", "2", "--max-sessions", "1"], "--max-sessions (1)"),
        (["--idle-sockets", "20001"], "--max-idle-sockets"),
        (["--seconds", "7200"], "--max-seconds"),
        (["--seconds", "0"], "--seconds"),
    ],
)
def test_loadtest_refuses_absurd_sizes(tmp_path: Path, flags: list[str], said: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    proc = loadtest(
        "--url", "http://127.0.0.1:9", "--jwt-secret-file", str(secret), *flags, timeout=60
    )
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr


def test_loadtest_says_when_a_token_file_is_short(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    from signaling.auth import TokenService
    from signaling.config import Config

    server = server_factory(env={"JR_MEDIA_ENABLED": "false"})
    tokens = TokenService(Config(jwt_secret=SECRET, data_dir=tmp_path))
    made = [tokens.issue(sub="c1", role="clerk")]
    made += [tokens.issue(sub=f"r{k}", role="reviewer", dept="city-amr") for k in range(3)]
    file = tmp_path / "tokens"
    file.write_text("\n".join(made) + "\n")
    proc = loadtest("--url", server.url, "--token-file", str(file), timeout=60)
    # One department's reviewers: a session needs five of them, the file has three.
    assert proc.returncode == 2, proc.stderr
    assert "not enough city-amr reviewer tokens" in proc.stderr, proc.stderr


def test_a_received_track_counts_loss_across_the_wrap_and_freezes() -> None:
    from bench.loadtest_media import Received, Window
    from media_server.aiortc_adapter import RtpPacket

    window = Window()
    window.start, window.end = 0.0, float("inf")
    track = Received("video", window)
    for seq in [65530 + k for k in range(6)] + [0, 1, 3, 4]:  # seq 2 lost, past the wrap
        track.on_packet(RtpPacket(payload_type=96, sequence_number=seq % 65536, payload=b"x"))
    assert (track.packets, track.highest - track.first_seq + 1) == (10, 11)

    frames = Received("video", Window())
    frames.window.start, frames.window.end = 0.0, 10.0
    for k in range(30):  # 30 fps for a second, then nothing for half a second
        frames.on_frame(k / 30)
    frames.on_frame(29 / 30 + 0.5)
    frames.on_frame(29 / 30 + 0.5 + 1 / 30)
    assert frames.freezes == 1 and 0.49 < frames.frozen_s < 0.51
    figures = frames.figures()
    assert figures["lost"] == 0 and figures["freezes"] == 2  # and frozen when the window closed
    assert figures["stopped"]  # for the window's last 8.5 s
