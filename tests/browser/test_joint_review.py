"""The whole story in real browsers: a clerk, two reviewers of different departments and
an applicant in one joint review, from the counter to the end of the session.

Screenshots of each screen (zh-CN and English) go to docs/screenshots/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from playwright.sync_api import expect

from signaling.auth import TokenService

from .conftest import Api, Person, eventually
from .helpers import axe_check, participant_id, tile, wait_joined, wait_video_from

CASE = "GZ-2016-000123"


def both_languages(person: Person, name: str) -> None:
    """Screenshot in Chinese, switch to English in place, screenshot, switch back."""
    person.shot(f"{name}-zh")
    person.set_lang("en")
    person.shot(f"{name}-en")
    person.set_lang("zh-CN")


def test_joint_review_from_counter_to_case_file(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    clerk_token = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    city = tokens.issue(
        sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
    )
    district = tokens.issue(
        sub="rev-district-planning-1",
        role="reviewer",
        name="吴芳",
        dept="district-planning",
        level="district",
    )
    clerk, r1, r2 = people("clerk"), people("city reviewer"), people("district reviewer")

    # Reviewers wait in their inboxes.
    for person, token in ((r1, city), (r2, district)):
        person.open("/inbox", token)
        expect(person.by("connection-state")).to_have_attribute("data-state", "open")
        expect(person.by("inbox-empty")).to_be_visible()

    # The counter: the case in hand, one click to start.
    clerk.open("/counter", clerk_token)
    expect(clerk.page).to_have_url(re.compile(r"/counter$"))  # the token left the address bar
    clerk.by("case-number").fill(CASE)
    clerk.by("applicant-name").fill("广州琶洲示例贸易有限公司")
    clerk.by("matter").fill("营业执照变更登记（股东变更）")
    both_languages(clerk, "counter")
    clerk.by("start-without-invite").click()  # this test invites from inside the session
    clerk.page.wait_for_url(re.compile(r"/session/s_"))
    sid = clerk.page.url.rsplit("/", 1)[1]
    pid_clerk = wait_joined(clerk.page)
    expect(clerk.by("session-case")).to_have_text(CASE)

    # Invite two departments of different levels: both inboxes show it within 2 s.
    clerk.by("invite-dept-city-amr").check()
    clerk.by("invite-dept-district-planning").check()
    clerk.by("invite-note").fill("股东会决议签字不清，请协助核对")
    started = time.monotonic()
    clerk.by("invite").click()
    for person in (r1, r2):
        card = person.by("invitation")
        expect(card).to_be_visible(timeout=2_000)
        expect(card).to_contain_text(CASE)
        expect(card).to_contain_text("营业执照变更登记")
    assert time.monotonic() - started < 2.0
    statuses = clerk.by("invitation-status")
    expect(statuses).to_have_count(2)
    for row in statuses.all():  # delivered to a screen: the clerk sees "ringing"
        expect(row).to_have_attribute("data-status", "ringing")
    both_languages(r1, "inbox")
    axe_check(r1.page, "an inbox with an invitation")

    # Both accept in one click and land in the session with video.
    for person in (r1, r2):
        person.by("accept-invitation").click()
        person.page.wait_for_url(re.compile(rf"/session/{sid}$"))
    pid_r1, pid_r2 = wait_joined(r1.page), wait_joined(r2.page)
    for row in statuses.all():
        expect(row).to_have_attribute("data-status", "accepted")

    # The applicant joins by the link (QR code shown at the counter).
    clerk.by("applicant-link").click()
    expect(clerk.by("applicant-qr").locator("svg")).to_be_visible()
    url = clerk.by("applicant-url").input_value()
    assert "/j/" in url  # the short link (#16), which leads to /session/<sid>?token=
    applicant = people("applicant")
    applicant.page.goto(url)
    expect(applicant.page).to_have_url(re.compile(rf"/session/{sid}$"))
    pid_app = wait_joined(applicant.page)

    everyone = {pid_clerk: clerk, pid_r1: r1, pid_r2: r2, pid_app: applicant}
    for pid, person in everyone.items():
        wait_video_from(person.page, [other for other in everyone if other != pid])
    axe_check(r1.page, "a reviewer's session")

    # Chat reaches everyone.
    clerk.by("tab-chat").click()
    clerk.by("chat-input").fill("请看第二页股东签字")
    clerk.by("chat-send").click()
    for person in (r1, r2, applicant):
        if person is not applicant:
            person.by("tab-chat").click()
        expect(person.by("chat-message").filter(has_text="请看第二页股东签字")).to_be_visible()

    # The document camera goes up large; a full-resolution still reaches everyone.
    source = clerk.by("document-source")
    source.select_option(label=source.locator("option", has_text="fake_device_2").inner_text())
    for person in (r1, r2, applicant):
        expect(person.by("document-stage")).to_have_attribute("data-state", "playing")
    clerk.by("snapshot").click()
    r1.by("tab-docs").click()
    still = r1.by("snapshot-item")
    expect(still).to_have_count(1)
    still.click()
    expect(r1.by("snapshot-viewer")).to_be_visible()
    width = r1.by("viewer-image").evaluate("img => img.naturalWidth")
    assert width >= 1280, f"the still is not at the document camera's resolution: {width}"
    r1.by("zoom-in").click()
    r1.shot("snapshot-viewer-zh")
    r1.by("viewer-close").click()

    # Opinions: filed with identity and time, pushed to everyone, in the case file.
    r1.by("tab-opinions").click()
    r1.by("opinion-decision-materials_missing").check()
    r1.by("opinion-missing").fill("股东会决议原件\n新任股东身份证明")
    r1.by("opinion-note").fill("补正后可当场办理")
    both_languages(r1, "session-reviewer")
    r1.by("opinion-submit").click()
    r1.by("opinion-confirm-file").click()  # what goes into the case file, confirmed
    r2.by("tab-opinions").click()
    r2.by("opinion-decision-approve").check()  # nothing is pre-selected
    r2.by("opinion-note").fill("规划条件符合，同意办理")
    r2.by("opinion-submit").click()
    r2.by("opinion-confirm-file").click()
    for person in everyone.values():
        if person is clerk:
            person.by("tab-opinions").click()
        expect(person.by("opinion")).to_have_count(2)
        expect(person.by("opinion").filter(has_text="股东会决议原件")).to_be_visible()
    case = eventually(lambda: http.call("GET", f"/api/cases/{CASE}", clerk_token))
    filed = {(o["author"]["sub"], o["decision"]) for o in case["opinions"]}
    assert filed == {
        ("rev-city-amr-1", "materials_missing"),
        ("rev-district-planning-1", "approve"),
    }
    clerk.by("tab-invites").click()
    both_languages(clerk, "session-clerk")
    both_languages(applicant, "applicant")

    # A reviewer reloads: back in the same slot, with video both ways.
    r2.page.reload()
    assert participant_id(r2.page) == pid_r2
    wait_video_from(r2.page, [pid_clerk, pid_r1, pid_app])
    for person in everyone.values():
        if person is not r2:
            wait_video_from(person.page, [pid_r2])
    expect(tile(clerk.page, pid_r2)).to_have_attribute("data-state", "playing")

    # The clerk ends the session: every page says so.
    clerk.by("end-session").click()
    clerk.by("confirm-end-yes").click()
    for person in everyone.values():
        expect(person.by("session-ended")).to_be_visible()
    # ... and the clerk sees it filed: the sealed case file, counted.
    filed = clerk.by("session-filed")
    expect(filed).to_be_visible(timeout=20_000)
    expect(filed).to_contain_text(CASE)
    assert filed.get_attribute("data-opinions") == "2"
    assert int(filed.get_attribute("data-tracks") or 0) >= 4
    assert int(filed.get_attribute("data-events") or 0) > 10
    clerk.shot("session-filed-zh")
    axe_check(clerk.page, "the clerk's ended session, filed")
    expect(r1.by("session-filed")).to_have_count(0)  # the clerk's job, not the reviewers'
    # While the media node closed the recording the page asked the case's track, not the
    # index (409 recording_sealing): nothing in the console (the people fixture checks).
    ended = http.call("GET", f"/api/sessions/{sid}", clerk_token)["session"]
    assert ended["status"] == "ended"
