"""Screen sharing as the clerk's document source, in real headless Chromium.

getDisplayMedia works headless with the flags every browser test already has:
``--use-fake-ui-for-media-stream`` picks the screen without a picker and
``--use-fake-device-for-media-stream`` makes it a synthetic 1280x720 screen (its track
says ``displaySurface: "monitor"``). Without the fake device Chromium tries a real screen
and fails (NotReadableError); ``--auto-select-desktop-capture-source`` and
``--auto-accept-this-tab-capture`` alone leave getDisplayMedia pending for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, expect

from signaling.auth import TokenService

from .conftest import Api, Person
from .helpers import open_review, wait_joined, wait_video_from

CASE = "GZ-SCREEN-0001"

# What the page shows on its document stage, and what it decodes of the remote document.
STAGE_JS = """async () => {
  const stage = document.querySelector("[data-testid=document-stage]");
  const video = stage.querySelector("video");
  const m = window.jr.media;
  const docs = [...m.remotes.values()].filter((r) => r.info.source === "document");
  let decoded = 0;
  if (docs.length === 1 && m.pc) {
    const mid = docs[0].transceiver.mid;
    (await m.pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.mid === mid) decoded = s.framesDecoded || 0;
    });
  }
  return {
    hidden: stage.hidden,
    state: stage.dataset.state,
    owner: stage.dataset.participantId,
    label: stage.querySelector(".doc-label").textContent,
    remotes: docs.map((r) => [r.info.participant_id, r.info.kind]),
    width: video.videoWidth,
    height: video.videoHeight,
    time: video.currentTime,
    frames: video.getVideoPlaybackQuality().totalVideoFrames,
    decoded,
  };
}"""

# The clerk's own document track: what getDisplayMedia gave, and what the sender sends.
LOCAL_DOC_JS = """() => {
  const doc = window.jr.grid.localDoc;
  const pub = [...window.jr.media.published.values()].find((p) => p.source === "document");
  if (!doc) return null;
  return {
    surface: doc.track.getSettings().displaySurface || null,
    state: doc.track.readyState,
    sent: !!pub && pub.transceiver.sender.track === doc.track,
  };
}"""

NO_REMOTE_DOC_JS = """() => ![...window.jr.media.remotes.values()].some(
  (r) => r.info.source === "document")"""


def stage(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(STAGE_JS))


def assert_document_plays(page: Page, owner: str, timeout: float = 15.0) -> dict[str, Any]:
    """The page's document stage shows the owner's shared screen, and it plays: a size,
    currentTime advancing, frames presented by the <video> and decoded by WebRTC."""
    expect(page.get_by_test_id("document-stage")).to_be_visible()
    expect(page.get_by_test_id("document-stage")).to_have_attribute("data-state", "playing")
    first = stage(page)
    deadline = time.monotonic() + timeout
    while True:
        now = stage(page)
        if (
            now["time"] >= first["time"] + 0.5
            and now["frames"] >= first["frames"] + 3
            and now["decoded"] >= first["decoded"] + 3
        ):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the shared screen does not play: {first} -> {now}")
        time.sleep(0.2)
    assert now["remotes"] == [[owner, "video"]], now
    assert now["owner"] == owner, now
    assert (now["width"], now["height"]) == (1280, 720), now
    return now


def assert_document_gone(page: Page) -> None:
    expect(page.get_by_test_id("document-stage")).to_be_hidden()
    page.wait_for_function(NO_REMOTE_DOC_JS, polling=200)
    assert not page.evaluate("document.querySelector('.has-document')")


def share_screen(clerk: Person) -> None:
    source = clerk.by("document-source")
    expect(source.locator("option[value=screen]")).to_have_text("共享屏幕")
    source.select_option("screen")
    clerk.page.wait_for_function(f"() => ({LOCAL_DOC_JS})()?.sent === true", polling=200)
    local = clerk.page.evaluate(LOCAL_DOC_JS)
    assert local == {"surface": "monitor", "state": "live", "sent": True}, local
    expect(clerk.by("snapshot")).to_be_enabled()


def test_clerk_shares_screen_as_document_and_stops(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    sid, clerk_token, reviewer_token = open_review(http, tokens, CASE)

    clerk, reviewer = people("clerk"), people("reviewer")
    clerk.open(f"/session/{sid}", clerk_token)
    pid_clerk = wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    pid_reviewer = wait_joined(reviewer.page)
    wait_video_from(reviewer.page, [pid_clerk])
    wait_video_from(clerk.page, [pid_reviewer])
    expect(reviewer.by("document-stage")).to_be_hidden()

    # The clerk shares the screen: the reviewer sees it large, labelled, and it plays.
    share_screen(clerk)
    shown = assert_document_plays(reviewer.page, pid_clerk)
    assert "材料画面" in shown["label"] and "陈晓" in shown["label"], shown
    reviewer.set_lang("en")
    expect(reviewer.by("document-stage").locator(".doc-label")).to_contain_text("Document")
    reviewer.set_lang("zh-CN")
    expect(clerk.by("document-stage")).to_have_attribute("data-state", "playing")

    # The page's own stop control: "no document source". The stage goes everywhere.
    shared = clerk.page.evaluate_handle("window.jr.grid.localDoc.track")
    clerk.by("document-source").select_option("none")
    assert_document_gone(reviewer.page)
    expect(clerk.by("document-stage")).to_be_hidden()
    expect(clerk.by("snapshot")).to_be_disabled()
    assert shared.evaluate("t => t.readyState") == "ended"  # the capture is released
    wait_video_from(reviewer.page, [pid_clerk])  # the camera goes on

    # Shared again, then stopped from the browser's side ("Stop sharing" in Chromium's
    # bar). That ends the capture: the track's readyState becomes "ended" and `ended`
    # fires. track.stop() alone does the first but, by the spec, never fires `ended`
    # (checked: it does not), so the event is dispatched as the browser would.
    share_screen(clerk)
    assert_document_plays(reviewer.page, pid_clerk)
    clerk.page.evaluate(
        """() => {
          const track = window.jr.grid.localDoc.track;
          track.stop();
          track.dispatchEvent(new Event("ended"));
        }"""
    )
    assert_document_gone(reviewer.page)
    expect(clerk.by("document-stage")).to_be_hidden()
    expect(clerk.by("document-source")).to_have_value("none")
    expect(clerk.by("snapshot")).to_be_disabled()
    assert clerk.page.evaluate(LOCAL_DOC_JS) is None
    wait_video_from(reviewer.page, [pid_clerk])
