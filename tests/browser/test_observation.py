"""Observation (issue #15) in real Chromium: a participant's page shows the announced
supervisor watching, and the supervisor's page receives the participant's video."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from signaling.auth import TokenService

from .conftest import Api, Person
from .helpers import open_review, participant_id, wait_joined, wait_video_from

CASE = "GZ-OBSERVE-1"


def test_the_announced_supervisor_watches_receive_only(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    sid, clerk_token, _ = open_review(http, tokens, CASE)
    sup_token = tokens.issue(sub="sup-01", role="supervisor", name="周监督")
    clerk, sup = people("clerk"), people("supervisor")
    clerk.open(f"/session/{sid}", clerk_token)
    clerk_pid = wait_joined(clerk.page)
    banner = clerk.by("observer-banner")
    expect(banner).to_be_hidden()

    # The supervisor's Live tab lists it in progress, the clerk with it; "Watch" opens
    # the session page, which observes.
    sup.open("/supervise?tab=live", sup_token)
    row = sup.page.locator(f"[data-testid=live-session][data-session-id='{sid}']")
    person = row.locator(f"[data-testid=live-participant][data-participant-id='{clerk_pid}']")
    expect(person).to_be_visible()
    row.get_by_test_id("live-watch").click()
    oid = participant_id(sup.page)
    assert oid.startswith("o_")
    expect(sup.page.locator("body")).to_have_attribute("data-observing", "1")
    # The participant is told, in Chinese and in English.
    expect(banner).to_be_visible()
    expect(banner).to_have_text("监督人员 观看中")
    clerk.set_lang("en")
    expect(banner).to_have_text("Supervisor watching")
    # The supervisor's page decodes the clerk's camera; it sends nothing and cannot chat.
    wait_video_from(sup.page, [clerk_pid])
    expect(sup.by("toggle-mic")).to_be_hidden()
    expect(sup.by("chat-input")).to_be_hidden()
    clerk.shot("observation-announced-en")
    # Leaving ends it for everyone's page.
    sup.by("leave").click()
    expect(sup.by("session-left")).to_be_visible()
    expect(banner).to_be_hidden()
    events = http.call("GET", f"/api/cases/{CASE}", sup_token)["events"]
    kinds = [e["type"] for e in events if e["type"].startswith("observation.")]
    assert kinds == ["observation.started", "observation.ended"]
