"""The rows of ``jointreview bench network`` and what runs them: the rig (a server
process, the namespace with its relay, two Chromiums), one call per row (a clerk on the
host, a reviewer in the namespace), the once-a-second meter and each kind of row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from signaling.auth import TokenService
from signaling.config import Config

from .chromium import CHROMIUM, FLAGS, busy_camera, scratch_env
from .impair import Impairment
from .inbox import wait_port
from .netns import Netns
from .network_pages import INBOUND_JS, OTHERS_JS, OUTBOUND_JS, PAUSED_JS, WATCH_JS
from .sfu_processes import BenchError, die_with_parent, free_port, tail

if TYPE_CHECKING:  # Playwright is a test dependency: imported when the bench runs
    from playwright.sync_api import Browser, Page, Playwright

SECRET = "bench-network-secret-" + "x" * 16
ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 30_000  # joining, first video: a page that takes longer has failed
RECOVERY_BOUND_S = 60.0  # after a cut: "never" past this
FULL_RATE_BOUND_S = 150.0  # back to full rate after lifting: "never" past this
FULL_RATE = 0.8  # of the bitrate measured before the row's conditions
STEADY_FPS = 10  # "moving steadily": 3 seconds at this frame rate or more, no freeze
USABLE_FPS = 8  # "usable": two seconds at this frame rate or more, or video paused...
USABLE_AUDIO = 25  # ...with at least this many audio packets in the second (#14's target)
JITTER_S = 10.0  # how long the jitter row's jitter lasts


@dataclass(frozen=True)
class Row:
    label: str
    kind: str  # steady | limit | transient | cut
    down: Impairment = field(default_factory=Impairment)  # toward the reviewer
    up: Impairment | None = None  # from the reviewer (None: as down)
    cut_s: float = 0.0
    move: bool = False


ROWS: dict[str, Row] = {
    "clean": Row("clean", "steady"),
    "loss2": Row("2 % loss, 50 ms RTT", "steady", Impairment(loss=0.02, delay_ms=25)),
    "loss5": Row("5 % loss, 50 ms RTT", "steady", Impairment(loss=0.05, delay_ms=25)),
    "loss10": Row("10 % loss, 100 ms RTT", "steady", Impairment(loss=0.10, delay_ms=50)),
    "1mbps": Row("1 Mbps both ways", "limit", Impairment(rate_kbps=1000)),
    "300k_down": Row(
        "300 kbps toward the reviewer", "steady", Impairment(rate_kbps=300), up=Impairment()
    ),
    "300k_both": Row("300 kbps both ways", "steady", Impairment(rate_kbps=300)),
    "jitter": Row(
        f"jitter 40±40 ms (reordering) for {JITTER_S:g} s, then clean",
        "transient",
        Impairment(delay_ms=40, jitter_ms=40),
    ),
    "cut5": Row("5 s", "cut", cut_s=5),
    "cut20": Row("20 s", "cut", cut_s=20),
    "cut60": Row("60 s", "cut", cut_s=60),
    "cut5_move": Row("5 s, new address", "cut", cut_s=5, move=True),
}


def _api(method: str, url: str, token: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.load(res)


class Rig:
    """The server, the reviewer's namespace and relay, Playwright with two browsers;
    all stopped and removed on exit, also on failure or Ctrl-C."""

    def __init__(self, scratch: Path, ports: range) -> None:
        self.scratch = scratch
        self.ports = ports
        self.port = free_port()
        self.server_url = f"http://127.0.0.1:{self.port}"
        self.ns = Netns(scratch, ports, self.port)
        self.server: subprocess.Popen[bytes] | None = None
        self.pw: Playwright | None = None
        self.clerk_browser: Browser | None = None
        self.reviewer_browser: Browser | None = None
        self.tokens = TokenService(Config(data_dir=scratch / "keys", jwt_secret=SECRET))
        self._tmpdir = os.environ.get("TMPDIR")

    def __enter__(self) -> Rig:
        try:
            self.ns.__enter__()
            self._start_server()
            self._start_browsers()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_server(self) -> None:
        env = {
            **os.environ,
            "JR_JWT_SECRET": SECRET,
            "JR_LOG_LEVEL": "warning",
            "JR_DISK_MIN_FREE_BYTES": str(16 * 1024 * 1024),
            "JR_MEDIA_WORKERS": "1",  # the SFU in the server's process, as the browser tests
            "JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]',
            "JR_MEDIA_ANNOUNCED_IP": self.ns.host_ip,
            "JR_MEDIA_PORT_MIN": str(self.ports.start),
            "JR_MEDIA_PORT_MAX": str(self.ports.stop - 1),
        }
        argv = [sys.executable, "-m", "jointreview.cli", "serve", "--port", str(self.port)]
        argv += ["--data-dir", str(self.scratch / "data")]
        log_path = self.scratch / "server.log"
        with log_path.open("ab") as log:
            self.server = subprocess.Popen(
                argv, env=env, stdout=log, stderr=log, cwd=ROOT, preexec_fn=die_with_parent
            )
        try:
            wait_port(self.port, self.server)
        except (RuntimeError, TimeoutError) as exc:
            raise BenchError(f"the server did not start ({exc}):\n{tail(log_path)}") from None

    def _start_browsers(self) -> None:
        from playwright.sync_api import sync_playwright

        env: dict[str, str | float | bool] = {**scratch_env(self.scratch / "chromium")}
        os.environ["TMPDIR"] = str(env["TMPDIR"])  # Playwright's own profile folders go there
        # Both cameras as busy as a real one (the fake device's still picture needs ~150 kbps).
        camera = busy_camera(self.scratch / "camera.y4m")
        self.pw = sync_playwright().start()
        self.clerk_browser = self.pw.chromium.launch(
            executable_path=CHROMIUM, args=[*FLAGS, camera], env=env, headless=True
        )
        flags = [*FLAGS, camera, f"--unsafely-treat-insecure-origin-as-secure={self.ns.url}"]
        self.reviewer_browser = self.pw.chromium.launch(
            executable_path=self.ns.chromium(), args=flags, env=env, headless=True
        )

    def __exit__(self, *exc: object) -> None:
        try:
            for b in (self.reviewer_browser, self.clerk_browser):
                if b is not None:
                    b.close()
            if self.pw is not None:
                self.pw.stop()
        finally:
            if self.server is not None and self.server.poll() is None:
                self.server.terminate()
                try:
                    self.server.wait(15)
                except subprocess.TimeoutExpired:
                    self.server.kill()
            self.ns.remove()
            if self._tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = self._tmpdir


class Call:
    """One session: the clerk on the host, the reviewer in the namespace, both sending
    and receiving video; ``baseline_kbps`` is the reviewer's received rate once settled."""

    def __init__(self, rig: Rig, case: str) -> None:
        self.rig = rig
        self.case = case
        self.pages: list[Page] = []
        self.baseline_kbps = 0.0

    def __enter__(self) -> Call:
        rig = self.rig
        assert rig.clerk_browser is not None and rig.reviewer_browser is not None
        clerk = rig.tokens.issue(sub="clerk-01", role="clerk", name="陈晓", ttl=3600)
        reviewer = rig.tokens.issue(
            sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
        )
        body = {"applicant_name": "示例科技有限公司", "matter": "食品经营许可"}
        url = f"{rig.server_url}/api/cases/{self.case}/sessions"
        sid = _api("POST", url, clerk, body)["session_id"]
        invite = {"dept": "city-amr"}
        _api("POST", f"{rig.server_url}/api/sessions/{sid}/invitations", clerk, invite)
        try:
            self.clerk = self._open(rig.clerk_browser, rig.server_url, sid, clerk)
            self.reviewer = self._open(rig.reviewer_browser, rig.ns.url, sid, reviewer)
            self.pid_clerk = self._joined(self.clerk)
            self.pid_reviewer = self._joined(self.reviewer)
            for page in (self.reviewer, self.clerk):
                page.wait_for_function(
                    f"async () => ((await ({INBOUND_JS})()) || {{}}).frames > 0",
                    timeout=WAIT_MS,
                    polling=200,
                )
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open(self, browser: Browser, base: str, sid: str, token: str) -> Page:
        context = browser.new_context(
            viewport={"width": 1280, "height": 720},
            locale="zh-CN",
            permissions=["camera", "microphone"],
        )
        page = context.new_page()
        self.pages.append(page)
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{base}/session/{sid}?token={token}")
        return page

    @staticmethod
    def _joined(page: Page) -> str:
        page.wait_for_function("() => document.body.dataset.participantId", polling=100)
        return str(page.evaluate("document.body.dataset.participantId"))

    def __exit__(self, *exc: object) -> None:
        assert self.rig.ns.relay is not None
        self.rig.ns.relay.set(Impairment())
        for page in self.pages:
            page.context.close()


COUNTERS = ("frames", "freezes", "frozen", "lost", "received", "jb", "jbCount", "bytes", "rtx")


class Meter:
    """Once a second: what the reviewer received of the clerk's video in that second,
    what the clerk sent, and whether the reviewer's media connection held."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.prev_in: dict[str, float] | None = None
        self.prev_tx: float | None = None
        self.seconds: list[dict[str, float]] = []
        self.prev_audio: float | None = None
        self.trace = False  # print each second (``--trace``)
        self.pcs: set[int] = set()
        self.states: set[str] = set()
        self.next = time.monotonic()

    def read(self) -> dict[str, float]:
        inbound = self.call.reviewer.evaluate(INBOUND_JS) or {}
        sent = self.call.clerk.evaluate(OUTBOUND_JS) or {}
        own = self.call.reviewer.evaluate(OUTBOUND_JS) or {}
        self.pcs.add(int(own.get("pcs", 0)))
        self.states.add(str(own.get("state", "")))
        delta: dict[str, float] = {}
        for key in COUNTERS:
            now = float(inbound.get(key, 0))
            before = (self.prev_in or {}).get(key, 0.0)
            delta[key] = now - before if now >= before else now  # a new connection: afresh
        tx = float(sent.get("bytes", 0))
        delta["tx"] = tx - (self.prev_tx or 0.0) if tx >= (self.prev_tx or 0.0) else tx
        shown = self.call.reviewer.evaluate(PAUSED_JS) or {}
        audio = float(shown.get("audio", 0))
        before_audio = self.prev_audio or 0.0
        delta["audio"] = audio - before_audio if audio >= before_audio else audio
        delta["paused"] = float(bool(shown.get("paused")))
        self.prev_audio = audio
        if self.trace:  # what the clerk's encoder does, and the reviewer's decoder
            for key in ("keyframes", "encoded", "width", "target"):
                delta[f"clerk_{key}"] = float(sent.get(key, 0))
            for key in ("keyframes", "nacks", "plis", "width"):
                delta[f"rx_{key}"] = float(inbound.get(key, 0))
        fresh = self.prev_in is None
        self.prev_in = {k: float(inbound.get(k, 0)) for k in COUNTERS}
        self.prev_tx = tx
        return {} if fresh else delta

    def tick(self) -> dict[str, float]:
        """Wait for the next second and read it."""
        if not self.seconds and self.prev_in is None:
            self.read()
            self.next = time.monotonic()
        self.next += 1.0
        time.sleep(max(0.0, self.next - time.monotonic()))
        second = self.read()
        self.seconds.append(second)
        if self.trace and second:
            print(
                "bench network:   second",
                json.dumps({k: round(v) for k, v in second.items()}),
                file=sys.stderr,
                flush=True,
            )
        return second

    def kbps(self, last: int) -> float:
        got = self.seconds[-last:]
        return sum(s["bytes"] for s in got) * 8 / 1000 / max(1, len(got))

    def restart(self) -> None:
        """From here on, a new window (the counters keep running)."""
        self.seconds = []
        self.pcs = {max(self.pcs)} if self.pcs else set()
        self.states = set()

    def summary(self) -> dict[str, Any]:
        s = self.seconds
        n = max(1, len(s))
        total = {k: sum(x[k] for x in s) for k in (*COUNTERS, "tx")}
        packets = total["lost"] + total["received"]
        return {
            "fps_avg": round(total["frames"] / n, 1),
            "fps_worst_1s": int(min((x["frames"] for x in s), default=0)),
            "freezes": int(total["freezes"]),
            "frozen_s": round(total["frozen"], 1),
            "loss_pct": round(100 * total["lost"] / packets, 1) if packets else 0.0,
            "jitter_buffer_ms": round(1000 * total["jb"] / total["jbCount"])
            if total["jbCount"]
            else -1,
            "rx_kbps": round(total["bytes"] * 8 / 1000 / n),
            "rx_retransmitted_kbps": round(total["rtx"] * 8 / 1000 / n),
            "clerk_tx_kbps": round(total["tx"] * 8 / 1000 / n),
            "connection_lost": len(self.pcs) > 1 or bool(self.states - {"connected"}),
        }


def settle(meter: Meter, most_s: float) -> float:
    """Until the received bitrate stops rising (at least 4 s, at most ``most_s``): the
    call's full rate (the best 3 s), in kbps."""
    start = time.monotonic()
    while True:
        meter.tick()
        n = len(meter.seconds)
        if (
            n >= 6
            and meter.kbps(3) <= 1.1 * sum(s["bytes"] for s in meter.seconds[-6:-3]) * 8 / 3000
        ):
            break
        if n >= 4 and time.monotonic() - start >= most_s:
            break
    rates = [meter.seconds[i]["bytes"] for i in range(len(meter.seconds))]
    return max(sum(rates[i : i + 3]) * 8 / 3000 for i in range(len(rates) - 2))


def until_full_rate(meter: Meter, full_kbps: float, bound_s: float) -> float:
    """Seconds until two seconds in a row reach FULL_RATE of ``full_kbps`` (-1: never)."""
    start = time.monotonic()
    while time.monotonic() - start < bound_s:
        meter.tick()
        if len(meter.seconds) >= 2 and meter.kbps(2) >= FULL_RATE * full_kbps:
            return round(time.monotonic() - start, 1)
    return -1


def _steady_since(seconds: list[dict[str, float]]) -> float:
    """When the video first moved steadily (3 s at STEADY_FPS, no new freeze), in seconds
    from the window's start (-1: never)."""
    for i in range(2, len(seconds)):
        run = seconds[i - 2 : i + 1]
        if all(x["frames"] >= STEADY_FPS and x["freezes"] == 0 for x in run):
            return float(i - 2)
    return -1


def _moving_after(seconds: list[dict[str, float]]) -> float:
    """Seconds from the window's start to the end of the first of two seconds at
    USABLE_FPS or more (moving video, not only "video paused"); -1: never."""
    for i in range(len(seconds) - 1):
        if min(seconds[i]["frames"], seconds[i + 1]["frames"]) >= USABLE_FPS:
            return float(i + 1)
    return -1


def _usable_after(seconds: list[dict[str, float]]) -> float:
    """Seconds from the window's start to the end of the first second from which the
    video is usable: moving (two seconds at USABLE_FPS or more) or shown paused with the
    audio flowing (#14's thin-link target); -1: never."""
    for i, x in enumerate(seconds):
        moving = i + 1 < len(seconds) and min(x["frames"], seconds[i + 1]["frames"]) >= USABLE_FPS
        if moving or (x["paused"] and x["audio"] >= USABLE_AUDIO):
            return float(i + 1)
    return -1


def run_row(call: Call, row: Row, window: float, trace: bool = False) -> dict[str, Any]:
    relay = call.rig.ns.relay
    assert relay is not None
    meter = Meter(call)
    meter.trace = trace
    # A call under way, not one still negotiating its first tracks (a cut then finds
    # the page between two connections: a different case from the issue's).
    full = settle(meter, min(20.0, max(3.0, window)))
    if row.kind == "cut":
        return _cut(call, row)
    meter.restart()
    relay.set(row.up if row.up is not None else row.down, row.down)
    seconds = JITTER_S if row.kind == "transient" else window
    for _ in range(max(1, round(seconds))):
        meter.tick()
    result = {
        **meter.summary(),
        "full_kbps": round(full),
        "usable_after_s": _usable_after(meter.seconds),
        "moving_after_s": _moving_after(meter.seconds),
        "paused_s": int(sum(x["paused"] for x in meter.seconds)),
    }
    if row.kind == "limit":
        result["adapted_s"] = _steady_since(meter.seconds)
    if row.kind in ("limit", "transient"):
        relay.set(Impairment())
        meter.restart()
        result["full_rate_after_s"] = until_full_rate(meter, full, FULL_RATE_BOUND_S)
    return result


def _cut(call: Call, row: Row) -> dict[str, Any]:
    ns = call.rig.ns
    assert ns.relay is not None
    call.clerk.evaluate(OTHERS_JS, call.pid_reviewer)
    call.reviewer.evaluate(WATCH_JS, [call.pid_clerk])
    start = time.time()
    ns.relay.cut(True)
    if row.move:
        ns.move()
    time.sleep(row.cut_s)
    ns.relay.cut(False)
    returned = time.time()
    call.reviewer.evaluate("() => { window.jrNet.mark = true; }")
    deadline = time.monotonic() + RECOVERY_BOUND_S
    while time.monotonic() < deadline:  # video and the socket back (either may lead)
        if call.reviewer.evaluate("() => window.jrNet.back && window.jrNet.open"):
            break
        time.sleep(0.2)
    pid = str(call.reviewer.evaluate("document.body.dataset.participantId"))
    # The clerk's page shows the reviewer's video again (or the bound passes): the most
    # tiles it showed covers the whole recovery.
    clerk_back = f"""async () => ((await ({INBOUND_JS})()) || {{}}).frames > 0 &&
      !!document.querySelector("[data-testid=video-tile][data-participant-id='{pid}'][data-state=playing]")"""
    try:
        call.clerk.wait_for_function(clerk_back, timeout=15_000, polling=200)
    except Exception:  # measured, not asserted: the row says what it saw
        pass
    net = call.reviewer.evaluate("() => window.jrNet")
    others = call.clerk.evaluate("() => window.jrOthers")

    def since(ms: float | None, t0: float) -> float:
        return round(ms / 1000 - t0, 2) if ms else -1

    return {
        "reconnecting_after_cut_s": since(net["left"], start),
        "stalled_after_cut_s": since(net["stalled"], start),
        "socket_after_return_s": since(net["open"], returned),
        "video_after_return_s": since(net["back"], returned),
        "slot": "same" if pid == call.pid_reviewer else "new",
        "others_see_reconnecting_s": since(others["away"], start),
        "most_tiles_of_others": int(others["most"]),
    }
