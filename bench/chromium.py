"""How the browser tests and ``jointreview bench network`` launch Debian's Chromium with
Playwright (see BROWSER_TESTING.md): the binary, the flags that matter here, and a
scratch HOME/XDG/TMPDIR so that Chromium writes nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_BIN = "/usr/lib/chromium/chromium"  # skips Debian's wrapper script (it prints noise)
FLAGS = [
    # Three synthetic cameras: fake_device_2 is the clerk's document camera. (Chromium's
    # fake_device_1 delivers Y16 "depth" frames, which a <video> shows but WebRTC never
    # encodes: a sender of it sends nothing.)
    "--use-fake-device-for-media-stream=device-count=3",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def scratch_env(root: Path) -> dict[str, str]:
    """HOME, XDG_* and TMPDIR in a scratch folder: Chromium writes there, not in ~."""
    for sub in ("home", "config", "cache", "data", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_DATA_HOME": str(root / "data"),
        "TMPDIR": str(root / "tmp"),
    }


def busy_camera(path: Path, seconds: float = 4.0, fps: int = 15) -> str:
    """A Y4M file for ``--use-file-for-fake-video-capture``: 640×360 of fine texture
    panning with grain, which a camera's encoder spends its full rate on (~1.7 Mbps in
    Chromium), unlike the fake device's mostly still picture (~150 kbps). Chromium loops
    it. Returns the flag."""
    import numpy as np

    width, height = 640, 360
    rng = np.random.default_rng(14)
    texture = rng.integers(40, 216, (height, width + 4 * round(seconds * fps)), dtype=np.uint8)
    chroma = np.full((height // 2) * (width // 2), 128, dtype=np.uint8).tobytes()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(round(seconds * fps)):
            grain = rng.integers(-12, 13, (height, width), dtype=np.int16)
            y = np.clip(texture[:, 4 * i : 4 * i + width].astype(np.int16) + grain, 0, 255)
            f.write(b"FRAME\n" + y.astype(np.uint8).tobytes() + chroma + chroma)
    return f"--use-file-for-fake-video-capture={path}"
