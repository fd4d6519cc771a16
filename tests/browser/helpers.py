"""What the browser tests wait for and read from a page: concrete signals only (tiles'
data-state, getStats() framesDecoded, test ids), each with a short timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import axe_playwright_python
from playwright.sync_api import Page, expect

from signaling.auth import TokenService

from .conftest import Api

# Every remote video track of the given participants has decoded frames (getStats()).
DECODED_JS = """async (pids) => {
  const m = window.jr && window.jr.media;
  if (!m || !m.pc) return false;
  const stats = await m.pc.getStats();
  const decoded = {};
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") decoded[s.mid] = s.framesDecoded || 0;
  });
  const remotes = [...m.remotes.values()];
  return pids.every((pid) => {
    const videos = remotes.filter((r) => r.info.participant_id === pid && r.info.kind === "video");
    const shown = (r) => r.transceiver.mid && decoded[r.transceiver.mid] > 0;
    return videos.length > 0 && videos.every(shown);
  });
}"""

REPORT_JS = """async () => {
  const m = window.jr && window.jr.media;
  if (!m || !m.pc) return {pc: null};
  const stats = await m.pc.getStats();
  const inbound = [];
  stats.forEach((s) => {
    if (s.type === "inbound-rtp") inbound.push([s.kind, s.mid, s.framesDecoded, s.packetsReceived]);
  });
  return {
    pc: m.pc.connectionState,
    me: m.participantId,
    remotes: [...m.remotes].map(([id, r]) => [id, r.transceiver.mid, r.info.kind, !!r.track]),
    inbound,
    tiles: [...document.querySelectorAll("[data-testid=video-tile]")].map(
      (t) => [t.dataset.participantId, t.dataset.state]),
  };
}"""


AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")
# WCAG 2.0 and 2.1 A/AA and best practices, and label-content-name-mismatch (still marked
# experimental in axe-core): a button's accessible name holds its visible text. Not 2.2's
# target-size (off by default in axe-core): the replay's timeline markers are 12 px dots,
# each with a full-size equivalent in the list of events beside it (2.5.8's exception).
# The viewer's watermark over replayed tiles (watermark.js) is faint on purpose: pure
# decoration over a picture, which WCAG 1.4.3 exempts from contrast; only that rule is
# run without it.
AXE_RUN_JS = """async () => {
  const watermark = {exclude: [".watermark"]};
  const contrast = await axe.run(document.querySelector(".watermark") ? watermark : document, {
    runOnly: ["color-contrast"],
  });
  const r = await axe.run(document, {
    runOnly: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"],
    rules: {"label-content-name-mismatch": {enabled: true}, "color-contrast": {enabled: false}},
  });
  return [...r.violations, ...contrast.violations].map((v) => ({
    id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target),
  }));
}"""
# Besides every serious or critical violation, these (moderate) rules fail too: the page's
# landmarks and headings are how a screen reader user finds their way (#16 item 9).
AXE_STRUCTURE = {"landmark-one-main", "region", "heading-order", "page-has-heading-one"}


def axe_check(page: Page, what: str, *, strict: bool = False) -> None:
    """axe-core (WCAG 2 A/AA and best practices) on the page as it is now: no serious or
    critical violation, and landmarks and headings in order; ``strict``: no violation at
    all, whatever its impact."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE)  # evaluated by the driver: the pages' CSP does not apply
    found = page.evaluate(AXE_RUN_JS)
    failing = [
        v
        for v in found
        if strict or v["impact"] in ("serious", "critical") or v["id"] in AXE_STRUCTURE
    ]
    assert failing == [], (what, failing)


def participant_id(page: Page) -> str:
    # Always a function: Playwright evals a bare expression on every poll, which the
    # pages' CSP (no 'unsafe-eval') refuses; a function is compiled once, allowed.
    page.wait_for_function("() => document.body.dataset.participantId")
    return str(page.evaluate("document.body.dataset.participantId"))


def pass_prejoin(page: Page) -> None:
    """An applicant's page: agree to the recording notice and join (prejoin.js); any
    other page (or an applicant who answered already in this tab) goes straight on."""
    page.wait_for_function(
        "() => document.body.dataset.participantId || document.body.dataset.prejoin"
        " || document.querySelector('[data-testid=join-error],[data-testid=page-error]')"
    )
    if page.evaluate("() => document.body.dataset.prejoin") != "1":
        return
    page.get_by_test_id("consent-accept").click()
    expect(page.get_by_test_id("join-session")).to_be_enabled()
    page.get_by_test_id("join-session").click()


def wait_joined(page: Page) -> str:
    """In the session, with its own camera tile showing frames."""
    pass_prejoin(page)
    pid = participant_id(page)
    expect(tile(page, pid)).to_have_attribute("data-state", "playing")
    return pid


def tile(page: Page, pid: str) -> Any:
    return page.locator(f"[data-testid=video-tile][data-participant-id='{pid}']")


def wait_video_from(page: Page, pids: list[str], timeout: float = 15_000) -> None:
    """The page shows (tiles playing) and decodes (framesDecoded > 0) each one's video."""
    try:
        for pid in pids:
            expect(tile(page, pid)).to_have_attribute("data-state", "playing", timeout=timeout)
        page.wait_for_function(DECODED_JS, arg=pids, timeout=timeout, polling=200)
    except Exception as exc:
        raise AssertionError(f"no video from {pids}: {page.evaluate(REPORT_JS)}") from exc


def start_session(http: Api, clerk_token: str, case: str, **invite: Any) -> str:
    """A joint review of ``case``; with ``invite`` (e.g. ``dept=...``), one invitation."""
    body = {"applicant_name": "示例科技有限公司", "matter": "食品经营许可"}
    sid = str(http.call("POST", f"/api/cases/{case}/sessions", clerk_token, body)["session_id"])
    if invite:
        http.call("POST", f"/api/sessions/{sid}/invitations", clerk_token, invite)
    return sid


def open_review(http: Api, tokens: TokenService, case: str) -> tuple[str, str, str]:
    """A joint review of ``case`` started by clerk 陈晓 with 市场监管局 (city-amr) invited:
    (session id, the clerk's token, reviewer 王建国's token)."""
    clerk = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    reviewer = tokens.issue(
        sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
    )
    return start_session(http, clerk, case, dept="city-amr"), clerk, reviewer
