"""The applicant on a phone (issue #16, items 1, 2 and 8): from the clerk's short link
and QR code to the pre-join screen, the recording consent (filed in the case timeline),
the phone layout in portrait and landscape, the bottom sheets, and the summary that
stays after the end; a reviewer on a 1366x768 laptop in the same session."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from signaling.auth import TokenService

from .conftest import Api, Person
from .helpers import participant_id, start_session, tile, wait_joined, wait_video_from

PHONE = {"width": 375, "height": 667}
PHONE_CONTEXT: dict[str, Any] = {
    "viewport": PHONE,
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}

# Every visible control of the session page: inside the viewport, and its size (touch
# targets); plus the page's own width against the viewport's (horizontal scroll).
LAYOUT_JS = """() => {
  const w = window.innerWidth, h = window.innerHeight;
  const controls = [...document.querySelectorAll(
    "#controls button, #controls select, #controls a, .tabs [role=tab], .lang")]
    .filter((n) => n.offsetParent !== null && getComputedStyle(n).visibility !== "hidden")
    .map((n) => {
      const r = n.getBoundingClientRect();
      return {id: n.dataset.testid || n.id || n.className, left: r.left, top: r.top,
              right: r.right, bottom: r.bottom, height: r.height, width: r.width};
    });
  return {w, h, scrollWidth: document.documentElement.scrollWidth,
          bodyWidth: document.body.scrollWidth, controls};
}"""


def check_layout(page: Page, *, touch: bool) -> dict[str, Any]:
    got: dict[str, Any] = page.evaluate(LAYOUT_JS)
    assert got["scrollWidth"] <= got["w"] and got["bodyWidth"] <= got["w"], got
    assert got["controls"], got
    for c in got["controls"]:
        inside = c["left"] >= 0 and c["top"] >= 0 and c["right"] <= got["w"] + 0.5
        assert inside and c["bottom"] <= got["h"] + 0.5, (c, got["w"], got["h"])
        if touch:
            assert c["height"] >= 44 and c["width"] >= 44, c
    return got


def width(locator: Any) -> float:
    box = locator.bounding_box()
    assert box is not None
    return float(box["width"])


def test_applicant_on_a_phone_from_short_link_to_summary(
    people: Callable[..., Person], tokens: TokenService, http: Api, tmp_path: Path
) -> None:
    case = "GZ-PHONE-0001"
    clerk_token = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    reviewer_token = tokens.issue(
        sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
    )
    sid = start_session(http, clerk_token, case, dept="city-amr")
    [inv] = http.call("GET", f"/api/sessions/{sid}/invitations", clerk_token)["invitations"]
    http.call("POST", f"/api/invitations/{inv['invitation_id']}/accept", reviewer_token)

    # The clerk makes the link: the QR code carries the short link, in sight.
    clerk = people("clerk", viewport={"width": 1280, "height": 800})
    clerk.open(f"/session/{sid}", clerk_token)
    pid_clerk = wait_joined(clerk.page)
    clerk.by("applicant-link").click()
    qr = clerk.by("applicant-qr")
    expect(qr.locator("svg")).to_be_visible()
    expect(qr).to_be_in_viewport()
    short = clerk.by("applicant-url").input_value()
    assert "/j/" in short and len(short.rsplit("/j/", 1)[1]) == 16, short
    clerk.shot("session-clerk-short-link-zh")

    # A reviewer on a 1366x768 laptop: everything fits, nothing scrolls sideways.
    reviewer = people("reviewer", viewport={"width": 1366, "height": 768})
    reviewer.open(f"/session/{sid}", reviewer_token)
    pid_reviewer = wait_joined(reviewer.page)
    check_layout(reviewer.page, touch=False)

    # The applicant opens the short link on a phone: the pre-join screen first.
    applicant = people("applicant", **PHONE_CONTEXT)
    applicant.page.goto(short, wait_until="commit")
    prejoin = applicant.by("prejoin")
    expect(prejoin).to_be_visible(timeout=30_000)  # a phone's first load, on a busy machine
    expect(applicant.by("prejoin-name")).to_have_value("示例科技有限公司")
    expect(applicant.by("join-session")).to_be_disabled()  # not before an answer
    expect(applicant.by("consent-policy")).to_have_attribute("data-declined", "audio_only")
    applicant.page.wait_for_function(
        "() => document.querySelector('.prejoin-video').srcObject?.getVideoTracks().length"
    )
    assert applicant.page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    applicant.shot("applicant-prejoin-phone-zh")
    applicant.by("consent-accept").click()
    expect(applicant.by("consent-accept")).to_have_attribute("aria-pressed", "true")
    applicant.by("join-session").click()
    expect(prejoin).to_have_count(0)
    pid_app = wait_joined(applicant.page)
    wait_video_from(applicant.page, [pid_clerk, pid_reviewer])

    # The consent is in the case timeline, by the applicant.
    events = http.call("GET", f"/api/cases/{case}", clerk_token)["events"]
    [consent] = [e for e in events if e["type"].startswith("consent.")]
    assert consent["type"] == "consent.given" and consent["session_id"] == sid
    assert consent["actor"]["role"] == "applicant" and consent["data"]["then"] == "join"

    # Portrait: one video large (at least 300 px wide), the self-view small, every
    # control inside the screen and 44 px at least, no sideways scroll.
    http.call(
        "POST",
        f"/api/sessions/{sid}/opinions",
        reviewer_token,
        {
            "decision": "materials_missing",
            "missing": ["股东会决议原件", "经营场所租赁合同"],
        },
    )
    page = applicant.page
    page.wait_for_function("() => document.querySelector('#tiles .tile-main')")
    # The main video follows the speaker; a tap pins the counter's (the clerk's) video.
    counter = tile(page, pid_clerk)
    counter.tap()
    expect(counter).to_have_class(re.compile(r"\btile-main\b"))
    expect(counter).to_have_attribute("data-pinned", "1")
    assert width(counter) >= 300
    assert width(tile(page, pid_app)) <= 130
    check_layout(page, touch=True)
    applicant.shot("applicant-phone-zh")
    # The opinions as a bottom sheet, over the video, closed again.
    applicant.by("sheet-opinions").click()
    expect(applicant.by("panel-opinions")).to_be_in_viewport()
    expect(applicant.by("opinion")).to_have_count(1)
    applicant.shot("applicant-phone-sheet-zh")
    applicant.by("sheet-close").click()
    expect(applicant.by("panel-opinions")).to_be_hidden()

    # Landscape: still one large video, everything inside, no sideways scroll.
    page.set_viewport_size({"width": PHONE["height"], "height": PHONE["width"]})
    page.wait_for_function("() => window.innerWidth > window.innerHeight")
    assert width(counter) >= 300
    check_layout(page, touch=True)
    applicant.shot("applicant-phone-landscape-zh")
    page.set_viewport_size(PHONE)

    # The reviewer's page, everyone in, on the laptop; then on a phone-sized window too.
    wait_video_from(reviewer.page, [pid_clerk, pid_app])
    check_layout(reviewer.page, touch=False)
    reviewer.shot("session-reviewer-laptop-zh")
    reviewer.page.set_viewport_size(PHONE)
    reviewer.page.wait_for_function("() => document.body.classList.contains('is-phone')")
    check_layout(reviewer.page, touch=True)
    assert participant_id(reviewer.page) == pid_reviewer

    # The end (the clerk's page has left: its "filed" notice is another test's): the
    # summary stays, with the decisions and what is missing; saveable.
    clerk.by("leave").click()
    expect(clerk.by("session-left")).to_be_visible()
    http.call("POST", f"/api/sessions/{sid}/end", clerk_token)
    summary = applicant.by("session-summary")
    expect(summary).to_be_visible()
    expect(summary.get_by_test_id("summary-decision")).to_have_attribute(
        "data-decision", "materials_missing"
    )
    expect(applicant.by("summary-missing")).to_contain_text("股东会决议原件")
    expect(applicant.by("summary-missing")).to_contain_text("经营场所租赁合同")
    expect(page.locator("body")).to_have_class(re.compile(r"\bhas-summary\b"))
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    applicant.shot("applicant-summary-phone-zh")
    with page.expect_download() as download:
        applicant.by("summary-download").click()
    saved = tmp_path / "summary.txt"
    download.value.save_as(saved)
    assert download.value.suggested_filename.startswith(case)
    assert "经营场所租赁合同" in saved.read_text(encoding="utf-8-sig")
    expect(summary).to_be_visible()  # still there after the socket closed and a download
