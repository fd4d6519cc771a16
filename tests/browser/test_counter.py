"""The counter as the clerk meets it (issue #16 items 3, 4, 6, 7), at 1280x800: the
approval system's deep link starts a session with its invitations in one click (through
the sign-in when there is none); the clerk hears of every answer to a counter invitation
(toast, badge on the Invite tab, chime); Enter never starts a session with nobody invited;
an opinion cannot be filed without a choice, and its confirmation shows what is filed."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlencode

from playwright.sync_api import expect

from signaling.auth import TokenService

from .conftest import Api, Person
from .helpers import wait_joined

SCREEN = {"width": 1280, "height": 800}


def reviewer_token(tokens: TokenService, sub: str, name: str, dept: str, level: str) -> str:
    return tokens.issue(sub=sub, role="reviewer", name=name, dept=dept, level=level)


def test_deep_link_starts_with_invitations_and_the_clerk_hears_every_answer(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    city = reviewer_token(tokens, "rev-city-amr-1", "王建国", "city-amr", "city")
    district = reviewer_token(
        tokens, "rev-district-planning-1", "吴芳", "district-planning", "district"
    )
    r1, r2 = people("city reviewer"), people("district reviewer")
    for person, token in ((r1, city), (r2, district)):
        person.open("/inbox", token)
        expect(person.by("connection-state")).to_have_attribute("data-state", "open")

    # The approval system's link, opened by a clerk not signed in yet: sign in, come back
    # to the same link, and it starts at once with both departments invited.
    query = {
        "case": "GZ-2026-DL-001",
        "applicant": "广州琶洲示例贸易有限公司",
        "matter": "食品经营许可（新办）",
        "window": "琶洲 5 号窗口",
        "invite": "city-amr,district-planning",
        "start": "1",
    }
    clerk = people("clerk", lang="en", viewport=SCREEN)
    clerk.open(f"/counter?{urlencode(query)}")
    clerk.by("go-login").click()
    clerk.by("login-clerk-01").click()
    clerk.page.wait_for_url(re.compile(r"/session/s_"))
    sid = clerk.page.url.rsplit("/", 1)[1]
    wait_joined(clerk.page)
    expect(clerk.by("session-case")).to_have_text("GZ-2026-DL-001")
    expect(clerk.page.locator(".fact", has_text="琶洲 5 号窗口")).to_be_visible()
    rows = clerk.by("invitation-status")
    expect(rows).to_have_count(2)
    assert {rows.nth(i).get_attribute("data-dept") for i in range(2)} == {
        "city-amr",
        "district-planning",
    }
    supervisor = tokens.issue(sub="sup-01", role="supervisor")
    listed = http.call("GET", "/api/sessions", supervisor)["sessions"]
    assert [s["session_id"] for s in listed] == [sid]

    # The chime is off until the clerk turns it on; they look at the chat meanwhile.
    chime = clerk.by("answer-chime")
    expect(chime).not_to_be_checked()
    chime.check()
    clerk.by("tab-chat").click()
    badge = clerk.by("invite-badge")
    expect(badge).to_be_hidden()

    # The city reviewer accepts from the inbox: toast, badge, chime.
    for person in (r1, r2):
        expect(person.by("invitation")).to_contain_text("GZ-2026-DL-001")
    r1.by("accept-invitation").click()
    expect(clerk.by("toast").filter(has_text="王建国")).to_contain_text("accepted")
    expect(badge).to_be_visible()
    clerk.page.wait_for_function("() => document.body.dataset.answerChimes === '1'")

    # The district reviewer declines with a reason: the reason is in the toast.
    r2.by("decline-invitation").click()
    r2.by("decline-reason").fill("不涉及规划事项")
    r2.by("decline-confirm").click()
    expect(clerk.by("toast").filter(has_text="不涉及规划事项")).to_contain_text("吴芳")
    clerk.shot("counter-answers-en")
    clerk.by("tab-invites").click()
    expect(badge).to_be_hidden()  # cleared when the tab is opened
    declined = clerk.page.locator("[data-testid=invitation-status][data-status=declined]")
    expect(declined).to_contain_text("不涉及规划事项")

    # Escalating the declined invitation never offers the person who just declined.
    declined.get_by_test_id("escalate").click()
    options = clerk.by("escalate-target").locator("option").all_inner_texts()
    assert options and not any("吴芳" in o for o in options), options

    # Back to the counter: the form as the link filled it, and no second session (the
    # page took start=1 off the address before starting).
    clerk.page.go_back()
    expect(clerk.by("case-number")).to_have_value("GZ-2026-DL-001")
    assert "start=" not in clerk.page.url
    expect(clerk.by("start-dept-district-planning")).to_be_checked()
    sessions = http.call("GET", "/api/sessions", supervisor)["sessions"]
    assert [s["session_id"] for s in sessions] == [sid]


def test_counter_form_opinion_choice_and_confirmation(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    clerk_token = tokens.issue(sub="clerk-02", role="clerk", name="林静")
    clerk = people("clerk", viewport=SCREEN)

    # A link with a bad value and an unknown department: filled, shown, not started.
    link = "/counter?" + urlencode(
        {"case": "GZ-2026-CT-002", "matter": "x" * 501, "invite": "city-amr,city-zoo", "start": 1}
    )
    clerk.open(link, clerk_token)
    expect(clerk.by("deeplink-unknown")).to_contain_text("city-zoo")
    expect(clerk.by("deeplink-invalid")).to_be_visible()
    expect(clerk.by("deeplink-held")).to_be_visible()
    expect(clerk.by("matter")).to_have_attribute("aria-invalid", "true")
    expect(clerk.by("start-dept-city-amr")).to_be_checked()
    expect(clerk.by("invite-summary")).to_contain_text("市市场监督管理局")
    expect(clerk.page).to_have_url(re.compile(r"/counter\?"))
    clerk.shot("counter-deeplink-zh")

    # Nobody to invite: Enter in the case field starts nothing and says why.
    clerk.by("matter").fill("食品经营许可（变更）")
    clerk.by("start-dept-city-amr").uncheck()
    clerk.by("case-number").press("Enter")
    expect(clerk.by("start-needs-invite")).to_be_visible()
    expect(clerk.page).to_have_url(re.compile(r"/counter\?"))
    listed = http.call("GET", "/api/sessions", clerk_token)["sessions"]
    assert not [s for s in listed if s["case_id"] == "GZ-2026-CT-002"]
    expect(clerk.by("start-without-invite")).to_be_visible()  # the deliberate way
    # With a department ticked, Enter starts and invites in one call.
    clerk.by("start-dept-city-amr").check()
    clerk.by("case-number").press("Enter")
    clerk.page.wait_for_url(re.compile(r"/session/s_"))
    sid = clerk.page.url.rsplit("/", 1)[1]
    inv = http.call("GET", f"/api/sessions/{sid}/invitations", clerk_token)["invitations"]
    assert [i["dept"] for i in inv] == ["city-amr"]

    # The reviewer's opinion: nothing pre-selected, no filing without a choice, and the
    # confirmation shows what goes into the case file before it is filed.
    token = reviewer_token(tokens, "rev-city-amr-1", "王建国", "city-amr", "city")
    http.call("POST", f"/api/invitations/{inv[0]['invitation_id']}/accept", token)
    reviewer = people("reviewer", viewport=SCREEN)
    reviewer.open(f"/session/{sid}", token)
    wait_joined(reviewer.page)
    reviewer.by("tab-opinions").click()
    for decision in ("approve", "materials_missing", "refer", "note"):
        expect(reviewer.by(f"opinion-decision-{decision}")).not_to_be_checked()
    reviewer.by("opinion-note").fill("补正后可当场办理")
    reviewer.by("opinion-submit").click()
    expect(reviewer.by("opinion-form")).to_contain_text("请先选择会办意见")
    expect(reviewer.by("opinion-decisions")).to_have_attribute("aria-invalid", "true")
    expect(reviewer.by("opinion-confirm")).to_have_count(0)

    reviewer.by("opinion-decision-materials_missing").check()
    reviewer.by("opinion-missing").fill("股东会决议原件\n法定代表人身份证复印件")
    reviewer.by("opinion-submit").click()
    confirm = reviewer.by("opinion-confirm")
    expect(confirm).to_be_visible()
    content = reviewer.by("opinion-confirm-content")
    expect(content).to_have_attribute("data-decision", "materials_missing")
    for text in (
        "材料不全，需补正",
        "股东会决议原件",
        "法定代表人身份证复印件",
        "补正后可当场办理",
        "王建国",
    ):
        expect(content).to_contain_text(text)
    reviewer.shot("opinion-confirm-zh")
    reviewer.by("opinion-confirm-back").click()  # back to edit: nothing filed
    expect(confirm).to_have_count(0)
    assert http.call("GET", f"/api/sessions/{sid}/opinions", clerk_token)["opinions"] == []
    reviewer.by("opinion-submit").click()
    reviewer.by("opinion-confirm-file").click()
    expect(reviewer.by("opinion")).to_have_count(1)
    filed = http.call("GET", f"/api/sessions/{sid}/opinions", clerk_token)["opinions"]
    assert [(o["decision"], o["missing"], o["note"]) for o in filed] == [
        ("materials_missing", ["股东会决议原件", "法定代表人身份证复印件"], "补正后可当场办理")
    ]
    # The form is blank again: still nothing pre-selected.
    expect(reviewer.by("opinion-decision-approve")).not_to_be_checked()
