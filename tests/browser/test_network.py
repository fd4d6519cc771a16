"""Networks as they are (issue #14): the reviewer's Chromium runs in a network namespace
behind the impairment relay (bench/netns.py); the clerk's page is on the host.

A 5 s cut: the reviewer's page says "reconnecting" soon after the cut starts and shows
the clerk's video again after the link returns; a 5 s cut with an address change
(.2 → .3): the page recovers by itself. The times are printed (``NETWORK {...}``) for
the issue's note, not asserted; recovery is asserted within a generous bound. A 300 kbps
link toward the reviewer is usable within a bound (moving video, or "video paused" with
the audio); a link too thin for video pauses the video and keeps the audio. How well a
300 kbps link carries the call (frames, freezes) is measured by ``jointreview bench
network``; both ways, the clerk's camera comes down to it in time.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
from playwright.sync_api import Browser, Playwright, expect

from bench.chromium import busy_camera
from bench.impair import Impairment
from bench.netns import Netns, usable
from bench.network_pages import INBOUND_JS, OTHERS_JS, WATCH_JS
from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import FLAGS, Api, Person, launch
from .helpers import open_review, participant_id, tile, wait_joined, wait_video_from

CUT_S = 5.0
GRACE_S = 8.0  # the server's resume grace, short: a cut longer than it means a new slot
LONG_CUT_S = GRACE_S + 6
RECOVERY_BOUND_MS = 60_000
PORTS = 12


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Netns]]:
    why = usable()
    if why:
        pytest.fail(why)
    base = random.randrange(30_000, 60_000 - PORTS)
    ports = range(base, base + PORTS)
    root = tmp_path_factory.mktemp("jrnet")
    server = ServerProcess(root / "data", env={})
    with Netns(root, ports, server.port) as ns:
        server.env.update(
            {
                "JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]',
                "JR_MEDIA_ANNOUNCED_IP": ns.host_ip,
                "JR_MEDIA_PORT_MIN": str(ports.start),
                "JR_MEDIA_PORT_MAX": str(ports.stop - 1),
                "JR_RESUME_GRACE_S": str(GRACE_S),
                # The server notices the cut within 3 s (not 7.5 s by default), so a
                # 14 s cut outlasts the 8 s grace.
                "JR_HEARTBEAT_S": "2",
            }
        )
        server.start()
        try:
            yield server, ns
        finally:
            if server.proc is not None:
                server.stop()


@pytest.fixture(scope="module")
def browser(playwright: Playwright, net: tuple[ServerProcess, Netns]) -> Iterator[Browser]:
    """The host's Chromium (the clerk's), launched once the namespace exists: one already
    running sees the new interface as a network change and fails the page loads then in
    flight (net::ERR_NETWORK_CHANGED: the clerk's page stuck before joining, in one of
    three runs of this module in a day)."""
    b = launch(playwright, FLAGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def ns_browser(playwright: Playwright, net: tuple[ServerProcess, Netns]) -> Iterator[Browser]:
    _, ns = net
    flags = [*FLAGS, f"--unsafely-treat-insecure-origin-as-secure={ns.url}"]
    b = playwright.chromium.launch(
        executable_path=ns.chromium(),
        args=flags,
        env=playwright._jr_env,  # type: ignore[attr-defined]
        headless=True,
    )
    yield b
    b.close()


@pytest.fixture(scope="module")
def server(net: tuple[ServerProcess, Netns]) -> ServerProcess:
    return net[0]


def _reviewer(people: Callable[..., Person], ns_browser: Browser, ns: Netns) -> Person:
    person = people("reviewer", browser_=ns_browser)
    person.base = ns.url
    return person


def _cut(
    ns: Netns, page: Person, pids: list[str], move: bool, length: float = CUT_S
) -> dict[str, float]:
    # The chip shows frames again (it lags the video by one tick at most) before a cut.
    expect(page.by("connection-quality")).not_to_have_attribute("data-grade", "stalled")
    page.page.evaluate(WATCH_JS, pids)
    assert ns.relay is not None
    start = time.time()
    ns.relay.cut(True)
    if move:
        ns.move()
    time.sleep(length)
    ns.relay.cut(False)
    returned = time.time()
    page.page.evaluate("() => { window.jrNet.mark = true; }")
    page.page.wait_for_function("() => window.jrNet.back", timeout=RECOVERY_BOUND_MS, polling=200)
    got = page.page.evaluate("() => window.jrNet")

    def since(key: str, t0: float) -> float:
        return round(got[key] / 1000 - t0, 2) if got[key] else -1  # -1: never seen

    return {
        "reconnecting_after_cut_s": since("left", start),
        "stalled_shown_after_cut_s": since("stalled", start),
        "video_after_return_s": since("back", returned),
    }


class Call(NamedTuple):
    sid: str
    clerk: Person
    reviewer: Person
    pid_clerk: str
    pid_reviewer: str
    clerk_token: str


def _call(
    people: Callable[..., Person],
    ns_browser: Browser,
    ns: Netns,
    tokens: TokenService,
    http: Api,
    case: str,
    clerk_browser: Browser | None = None,
) -> Call:
    """The clerk (on the host; ``clerk_browser``: e.g. a busy camera's) and the reviewer
    (in the namespace) in a call, each seeing the other's video."""
    sid, clerk_token, reviewer_token = open_review(http, tokens, case)
    clerk = people("clerk", browser_=clerk_browser) if clerk_browser else people("clerk")
    reviewer = _reviewer(people, ns_browser, ns)
    clerk.open(f"/session/{sid}", clerk_token)
    pid_clerk = wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    pid_reviewer = wait_joined(reviewer.page)
    wait_video_from(reviewer.page, [pid_clerk])
    wait_video_from(clerk.page, [pid_reviewer])
    return Call(sid, clerk, reviewer, pid_clerk, pid_reviewer, clerk_token)


def test_cuts_and_an_address_change(
    people: Callable[..., Person],
    ns_browser: Browser,
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    _, ns = net
    sid, clerk, reviewer, pid_clerk, pid_reviewer, clerk_token = _call(
        people, ns_browser, ns, tokens, http, "GZ-NET-1"
    )

    tiles = clerk.page.locator("[data-testid=video-tile]")
    before = tiles.count()
    results = {"cut_5s": _cut(ns, reviewer, [pid_clerk], move=False)}
    wait_video_from(clerk.page, [pid_reviewer], timeout=RECOVERY_BOUND_MS)
    results["cut_5s_new_address"] = _cut(ns, reviewer, [pid_clerk], move=True)
    wait_video_from(clerk.page, [pid_reviewer], timeout=RECOVERY_BOUND_MS)
    # The clerk sees the reviewer once (one tile, not a second one for a new slot).
    expect(tiles).to_have_count(before)
    expect(tile(clerk.page, pid_reviewer)).to_have_count(1)
    # The self-view and every tile back, in the same slot; the chip says so.
    expect(tile(reviewer.page, pid_reviewer)).to_have_attribute("data-state", "playing")
    assert participant_id(reviewer.page) == pid_reviewer
    expect(reviewer.by("connection-state")).to_have_attribute("data-state", "open")
    expect(reviewer.by("connection-quality")).not_to_have_attribute("data-grade", "stalled")
    # One reviewer in the session, not two.
    session = http.call("GET", f"/api/sessions/{sid}", clerk_token)
    joined = [p for p in session["participants"] if p["state"] == "joined"]
    assert len(joined) == 2, session["participants"]
    print("NETWORK", json.dumps(results))
    # Provoked: the test cuts the link; Chromium logs the failed socket attempts.
    reviewer.allow_errors(NETWORK_NOISE, "socket attempts while the link is cut")


# What Chromium itself logs while a link is down: the network's doing, not the page's.
NETWORK_NOISE = "WebSocket connection to"


def test_a_cut_longer_than_the_grace_period_joins_afresh(
    people: Callable[..., Person],
    ns_browser: Browser,
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    """The server gives the slot up while the link is down; the page takes a new one by
    itself when it returns, and the clerk sees one reviewer (the new slot), not two."""
    _, ns = net
    sid, clerk, reviewer, pid_clerk, old, clerk_token = _call(
        people, ns_browser, ns, tokens, http, "GZ-NET-2"
    )
    tiles = clerk.page.locator("[data-testid=video-tile]")
    before = tiles.count()
    clerk.page.evaluate(OTHERS_JS, old)
    started = time.time()
    result = _cut(ns, reviewer, [pid_clerk], move=False, length=LONG_CUT_S)
    away = clerk.page.evaluate("() => window.jrOthers.away")
    result["others_see_reconnecting_s"] = round(away / 1000 - started, 2) if away else -1
    new = participant_id(reviewer.page)
    assert new != old  # the grace had passed: a fresh join
    wait_video_from(clerk.page, [new], timeout=RECOVERY_BOUND_MS)
    expect(tile(reviewer.page, new)).to_have_attribute("data-state", "playing")
    expect(tiles).to_have_count(before)
    expect(tile(clerk.page, old)).to_have_count(0)
    session = http.call("GET", f"/api/sessions/{sid}", clerk_token)
    joined = [p for p in session["participants"] if p["state"] == "joined"]
    assert sorted(p["participant_id"] for p in joined) == sorted([pid_clerk, new])
    print("NETWORK", json.dumps({f"cut_{LONG_CUT_S:.0f}s_past_grace": result}))
    # Provoked: the test degrades the link; Chromium logs the failed socket attempts.
    reviewer.allow_errors(NETWORK_NOISE, "socket attempts while the link is down")


OUTBOUND_JS = """async () => {
  const stats = await window.jr.media.pc.getStats();
  let bytes = 0;
  stats.forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") bytes += s.bytesSent || 0;
  });
  return bytes;
}"""
# The clerk's page: the scale its camera is sent at (sendscale.js).
CAMERA_SCALE_JS = "document.body.dataset.cameraScale || '1'"
# The reviewer's page: the clerk's audio still arriving (packets), and whether the page
# says the clerk's video is paused for it.
AUDIO_JS = """async (pid) => {
  const stats = await window.jr.media.pc.getStats();
  let audio = 0;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") audio += s.packetsReceived || 0;
  });
  const t = document.querySelector(`[data-testid=video-tile][data-participant-id='${pid}']`);
  return {audio, paused: Boolean(t && t.dataset.video === "paused")};
}"""


def _window(page: Person, seconds: int) -> dict[str, float]:
    """The clerk's video as the reviewer receives it over ``seconds``, per second."""
    first = prev = page.page.evaluate(INBOUND_JS)
    fps = []
    for _ in range(seconds):
        time.sleep(1)
        now = page.page.evaluate(INBOUND_JS)
        fps.append(now["frames"] - prev["frames"])
        prev = now
    d = {k: prev[k] - first[k] for k in first}
    packets = d["lost"] + d["received"]
    return {
        "fps_avg": round(sum(fps) / len(fps), 1),
        "fps_worst_1s": min(fps),
        "freezes": d["freezes"],
        "frozen_s": round(d["frozen"], 1),
        "loss_pct": round(100 * d["lost"] / packets, 1) if packets else 0,
        "jitter_buffer_ms": round(1000 * d["jb"] / d["jbCount"]) if d["jbCount"] else -1,
    }


def _clerk_kbps(clerk: Person, seconds: float = 1.0) -> float:
    before = clerk.page.evaluate(OUTBOUND_JS)
    time.sleep(seconds)
    return (clerk.page.evaluate(OUTBOUND_JS) - before) * 8 / 1000 / seconds


def _until(check: Callable[[], bool], bound_s: float) -> float:
    """Seconds until ``check()`` holds (it paces itself), or -1 within ``bound_s``."""
    start = time.time()
    while time.time() - start < bound_s:
        if check():
            return round(time.time() - start, 1)
    return -1.0


@pytest.fixture(scope="module")
def browsers(
    playwright: Playwright, ns_browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Browser, Browser]]:
    """(the clerk's browser with a busy camera, the reviewer's in the namespace)."""
    flag = busy_camera(tmp_path_factory.mktemp("camera") / "camera.y4m")
    b = launch(playwright, [*FLAGS, flag])
    yield b, ns_browser
    b.close()


def _full_rate(clerk: Person) -> float:
    """The clerk's camera at its full rate (it ramps up over the first seconds)."""
    best = 0.0
    for _ in range(15):
        kbps = _clerk_kbps(clerk)
        if kbps > 1000 and kbps < best * 1.1:
            return kbps
        best = max(best, kbps)
    return best


def test_random_loss_and_a_jitter_transient(
    people: Callable[..., Person],
    browsers: tuple[Browser, Browser],
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    """10 % loss with 100 ms round trip: the picture keeps moving (target per 30 s: at
    most 3 s frozen, 12 fps on average; here a 10 s window, asserted with margin). Then
    10 s of jitter and reordering: when the link is clean again the clerk's camera is back
    near its full rate within seconds (96 s when the browser's REMB alone decided)."""
    _, ns = net
    assert ns.relay is not None
    _, clerk, reviewer, _, _, _ = _call(
        people, browsers[1], ns, tokens, http, "GZ-NET-4", browsers[0]
    )
    out: dict[str, object] = {}
    try:
        full = _full_rate(clerk)
        ns.relay.set(Impairment(loss=0.10, delay_ms=50))
        time.sleep(2)
        row = out["10% loss, 100 ms"] = _window(reviewer, 10)
        # Then jitter as `jointreview bench network`'s jitter row (40 ± 40 ms each way,
        # reordering) for 10 s. (From a clean link the browser's REMB rode it out in
        # either version; after the lossy stretch it collapsed and the base never came
        # back within 30 s.)
        ns.relay.set(Impairment(delay_ms=40, jitter_ms=40))
        time.sleep(10)
        ns.relay.set(Impairment())
        low = _clerk_kbps(clerk)
        back = _until(lambda: _clerk_kbps(clerk) >= 0.8 * full, 30)
        out["loss then jitter, then clean"] = {
            "full_kbps": round(full),
            "kbps_when_it_ends": round(low),
            "back_to_80pct_s": back,
        }
    finally:
        ns.relay.set(Impairment())
        print("NETWORK", json.dumps(out, ensure_ascii=False))
    # Target: 1 s frozen per 10 s (3 s per 30 s) and 12 fps; `jointreview bench network`'s
    # loss10 row is its measure. Without the second copies of a lossy leg's packets
    # (media_server/repair.py) it froze 2-6 s per 10 s; with them 0.3 s here and
    # 1.9-2.6 s per 30 s in the bench. Asserted with margin for a loaded machine.
    assert row["frozen_s"] <= 3.0 and row["fps_avg"] >= 12, out
    assert 0 <= back <= 15, out
    # Provoked: the test degrades the link; Chromium logs the failed socket attempts.
    reviewer.allow_errors(NETWORK_NOISE, "socket attempts while the link is down")


def test_a_300_kbps_link_toward_the_reviewer(
    people: Callable[..., Person],
    browsers: tuple[Browser, Browser],
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    """300 kbps toward the reviewer: soon moving video (8 fps or more) or "video paused"
    with the audio still coming (the SFU holds a leg found far over capacity), and a
    jitter buffer of at most 1 s. (The target for "usable" is 5 s; the bound leaves room
    for a loaded machine: ``jointreview bench network --rows 300k_down`` measures it.)"""
    _, ns = net
    assert ns.relay is not None
    _, clerk, reviewer, pid_clerk, _, _ = _call(
        people, browsers[1], ns, tokens, http, "GZ-NET-50", browsers[0]
    )
    out: dict[str, object] = {}
    try:
        out["full_kbps"] = round(_full_rate(clerk))
        ns.relay.set(up=Impairment(), down=Impairment(rate_kbps=300))
        state = {"frames": reviewer.page.evaluate(INBOUND_JS)["frames"], "audio": 0}
        state["audio"] = reviewer.page.evaluate(AUDIO_JS, pid_clerk)["audio"]

        def usable() -> bool:
            time.sleep(1)
            frames = reviewer.page.evaluate(INBOUND_JS)["frames"]
            seen = reviewer.page.evaluate(AUDIO_JS, pid_clerk)
            moving = frames - state["frames"] >= 8
            paused = seen["paused"] and seen["audio"] > state["audio"]
            state["frames"], state["audio"] = frames, seen["audio"]
            out["paused"] = seen["paused"]
            return moving or paused

        out["usable_after_s"] = _until(usable, 30)
        out["window"] = _window(reviewer, 8)
        out["clerk_kbps"] = round(_clerk_kbps(clerk))
        # The clerk's page scaled its camera down to what the SFU asks of it
        # (sendscale.js): 320x180, whose keyframes the thin link carries.
        out["clerk_scale"] = clerk.page.evaluate(CAMERA_SCALE_JS)
    finally:
        ns.relay.set(Impairment())
        print("NETWORK", json.dumps({"300 kbps down": out}))
    window = out["window"]
    assert isinstance(window, dict)
    # Never a multi-second jitter buffer (it was 4-9 s before the SFU adapted), target
    # 1 s: 134-156 ms here since a held leg restarts on a keyframe that fits its link
    # (before: 204-698 ms, once 1,239 ms, on a keyframe made at the old resolution).
    assert window["jitter_buffer_ms"] <= 1000, out
    assert 0 <= out["usable_after_s"] <= 8, out  # type: ignore[operator]
    assert out["clerk_scale"] == "2", out
    # Provoked: the test degrades the link; Chromium logs the failed socket attempts.
    reviewer.allow_errors(NETWORK_NOISE, "socket attempts while the link is down")


def test_a_300_kbps_link_both_ways(
    people: Callable[..., Person],
    browsers: tuple[Browser, Browser],
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    """300 kbps both ways: the clerk's camera comes down to what the reviewer's link
    carries within 10 s (here within 12 s, for a loaded machine), its resolution with it.
    When the link is clean again, the camera's full resolution and rate come back by
    themselves. The reviewer's picture on such a link is measured by
    ``jointreview bench network --rows 300k_both``."""
    _, ns = net
    assert ns.relay is not None
    _, clerk, reviewer, _, _, _ = _call(
        people, browsers[1], ns, tokens, http, "GZ-NET-51", browsers[0]
    )
    out: dict[str, object] = {}
    try:
        out["full_kbps"] = round(_full_rate(clerk))
        thin = Impairment(rate_kbps=300)
        ns.relay.set(up=thin, down=thin)
        out["clerk_adapts_s"] = _until(lambda: _clerk_kbps(clerk) <= 330, 30)
        out["clerk_scale"] = clerk.page.evaluate(CAMERA_SCALE_JS)
        ns.relay.set(Impairment())
        full = 0.8 * float(out["full_kbps"])  # type: ignore[arg-type]
        back = _until(
            lambda: clerk.page.evaluate(CAMERA_SCALE_JS) == "1" and _clerk_kbps(clerk) >= full,
            75,
        )
        out["back_to_full_s"] = back
    finally:
        ns.relay.set(Impairment())
        print("NETWORK", json.dumps({"300 kbps both ways": out}))
    assert 0 <= out["clerk_adapts_s"] <= 12, out  # type: ignore[operator]
    assert out["clerk_scale"] == "2", out
    # (the estimate climbs 8 % a second from ~250 kbps, GCC's rate: 38 s measured)
    assert 0 <= back <= 75, out
    # Provoked: the test degrades the link; Chromium logs the failed socket attempts.
    reviewer.allow_errors(NETWORK_NOISE, "socket attempts while the link is down")


def test_a_link_too_thin_for_video_pauses_it(
    people: Callable[..., Person],
    browsers: tuple[Browser, Browser],
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    """100 kbps toward the reviewer carries the clerk's voice, not a picture: the SFU
    pauses the clerk's video for the reviewer alone, the tile says so and the audio goes
    on; when the link is back, a probe brings the picture back by itself."""
    _, ns = net
    assert ns.relay is not None
    _, clerk, reviewer, pid_clerk, _, _ = _call(
        people, browsers[1], ns, tokens, http, "GZ-NET-6", browsers[0]
    )
    out: dict[str, object] = {}
    try:
        ns.relay.set(up=Impairment(), down=Impairment(rate_kbps=100))
        start = time.time()
        label = tile(reviewer.page, pid_clerk).get_by_test_id("video-paused")
        expect(label).to_be_visible(timeout=20_000)
        out["paused_after_s"] = round(time.time() - start, 1)
        before = reviewer.page.evaluate(AUDIO_JS, pid_clerk)
        time.sleep(2)
        after = reviewer.page.evaluate(AUDIO_JS, pid_clerk)
        out["audio_packets_in_2s"] = after["audio"] - before["audio"]
        grade = reviewer.by("connection-quality").get_attribute("data-grade")
        out["chip"] = grade
        ns.relay.set(Impairment())
        start = time.time()
        expect(label).to_be_hidden(timeout=70_000)
        wait_video_from(reviewer.page, [pid_clerk], timeout=20_000)
        out["video_back_after_s"] = round(time.time() - start, 1)
    finally:
        ns.relay.set(Impairment())
        print("NETWORK", json.dumps({"100 kbps down": out}))
    assert out["audio_packets_in_2s"] > 50, out  # type: ignore[operator]
    assert grade == "paused", out
    expect(tile(clerk.page, participant_id(reviewer.page))).to_have_count(1)
    # Provoked: the test degrades the link; Chromium logs the failed socket attempts.
    reviewer.allow_errors(NETWORK_NOISE, "socket attempts while the link is down")
