"""Networks as they are (issue #14): the reviewer's Chromium runs in a network namespace
behind the impairment relay (bench/netns.py); the clerk's page is on the host.

A 5 s cut: the reviewer's page says "reconnecting" soon after the cut starts and shows
the clerk's video again after the link returns; a 5 s cut with an address change
(.2 → .3): the page recovers by itself. The times are printed (``NETWORK {...}``) for
the issue's note, not asserted; recovery is asserted within a generous bound.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Playwright, expect

from bench.impair import Impairment
from bench.netns import Netns, usable
from bench.network_pages import INBOUND_JS, OTHERS_JS, WATCH_JS
from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import FLAGS, Api, Person
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


def test_cuts_and_an_address_change(
    people: Callable[..., Person],
    ns_browser: Browser,
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    _, ns = net
    sid, clerk_token, reviewer_token = open_review(http, tokens, "GZ-NET-1")
    clerk = people("clerk")
    reviewer = _reviewer(people, ns_browser, ns)
    clerk.open(f"/session/{sid}", clerk_token)
    pid_clerk = wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    pid_reviewer = wait_joined(reviewer.page)
    wait_video_from(reviewer.page, [pid_clerk])
    wait_video_from(clerk.page, [pid_reviewer])

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
    # What Chromium itself logs while the link is down (failed socket attempts) is the
    # network's doing, not the page's.
    reviewer.errors[:] = [e for e in reviewer.errors if not _network_noise(e)]


def _network_noise(error: str) -> bool:
    return "WebSocket connection to" in error and "net::ERR_" in error


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
    sid, clerk_token, reviewer_token = open_review(http, tokens, "GZ-NET-2")
    clerk = people("clerk")
    reviewer = _reviewer(people, ns_browser, ns)
    clerk.open(f"/session/{sid}", clerk_token)
    pid_clerk = wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    old = wait_joined(reviewer.page)
    wait_video_from(reviewer.page, [pid_clerk])
    wait_video_from(clerk.page, [old])
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
    reviewer.errors[:] = [e for e in reviewer.errors if not _network_noise(e)]


ROWS = {
    "clean": Impairment(),
    "2% loss, 50 ms": Impairment(loss=0.02, delay_ms=25),
    "10% loss, 100 ms": Impairment(loss=0.10, delay_ms=50),
}
WINDOW_S = 10


def test_impaired_rows_are_measured(
    people: Callable[..., Person],
    ns_browser: Browser,
    net: tuple[ServerProcess, Netns],
    tokens: TokenService,
    http: Api,
) -> None:
    """A few rows of the issue's table at 10 s windows (delay each way: half the RTT).
    Measured and printed, not asserted beyond: the video keeps moving."""
    _, ns = net
    assert ns.relay is not None
    sid, clerk_token, reviewer_token = open_review(http, tokens, "GZ-NET-3")
    clerk = people("clerk")
    reviewer = _reviewer(people, ns_browser, ns)
    clerk.open(f"/session/{sid}", clerk_token)
    pid_clerk = wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    wait_joined(reviewer.page)
    wait_video_from(reviewer.page, [pid_clerk])
    table = {}
    try:
        for name, row in ROWS.items():
            ns.relay.set(row)
            time.sleep(2)  # settle
            first = reviewer.page.evaluate(INBOUND_JS)
            fps = []
            prev = first
            for _ in range(WINDOW_S):
                time.sleep(1)
                now = reviewer.page.evaluate(INBOUND_JS)
                fps.append(now["frames"] - prev["frames"])
                prev = now
            d = {k: prev[k] - first[k] for k in first}
            packets = d["lost"] + d["received"]
            table[name] = {
                "fps_avg": round(sum(fps) / len(fps), 1),
                "fps_worst_1s": min(fps),
                "freezes": d["freezes"],
                "frozen_s": round(d["frozen"], 1),
                "loss_pct": round(100 * d["lost"] / packets, 1) if packets else 0,
                "jitter_buffer_ms": round(1000 * d["jb"] / d["jbCount"]) if d["jbCount"] else -1,
            }
            assert sum(fps) > 0, (name, table)
    finally:
        ns.relay.set(Impairment())
    print("NETWORK", json.dumps({"rows": table}, ensure_ascii=False))
    reviewer.errors[:] = [e for e in reviewer.errors if not _network_noise(e)]
