"""Focused browser tests: a declined invitation and escalation, an uninvited department,
an expired sign-in, a denied camera (audio only / view only), a dropped socket."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from playwright.sync_api import Browser, Playwright, expect

from signaling.auth import TokenService

from .conftest import FLAGS_NO_FAKE_UI, Api, Person, launch
from .helpers import (
    axe_check,
    participant_id,
    pass_prejoin,
    start_session,
    tile,
    wait_joined,
    wait_video_from,
)


def clerk_token(tokens: TokenService) -> str:
    return tokens.issue(sub="clerk-02", role="clerk", name="林静")


def test_declined_invitation_shows_reason_and_can_be_escalated(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    token = clerk_token(tokens)
    sid = start_session(http, token, "GZ-EDGE-DECLINE")
    clerk, reviewer = people("clerk"), people("reviewer")
    reviewer.open(
        "/inbox",
        tokens.issue(
            sub="rev-city-tax-1", role="reviewer", name="李敏", dept="city-tax", level="city"
        ),
    )
    expect(reviewer.by("connection-state")).to_have_attribute("data-state", "open")
    clerk.open(f"/session/{sid}", token)
    wait_joined(clerk.page)
    clerk.by("invite-dept-city-tax").check()
    clerk.by("invite").click()

    card = reviewer.by("invitation")
    expect(card).to_contain_text("GZ-EDGE-DECLINE")
    reviewer.by("decline-invitation").click()
    reviewer.by("decline-confirm").click()  # no reason: refused on the page
    expect(reviewer.by("decline-reason")).to_have_attribute("aria-invalid", "true")
    expect(card).to_be_visible()
    reviewer.by("decline-reason").fill("本事项不涉及税务，请邀请市场监管部门")
    reviewer.by("decline-confirm").click()
    expect(reviewer.by("invitation")).to_have_count(0)
    expect(reviewer.by("invitation-done")).to_have_attribute("data-status", "declined")
    expect(reviewer.by("inbox-empty")).to_be_visible()

    row = clerk.by("invitation-status")
    expect(row).to_have_attribute("data-status", "declined")
    expect(row).to_contain_text("本事项不涉及税务，请邀请市场监管部门")
    expect(row).to_contain_text("李敏")
    clerk.shot("declined-zh")

    # Escalate: the other level's department (or a named reviewer) in two clicks.
    row.get_by_test_id("escalate").click()
    target = clerk.by("escalate-target")
    target.select_option("dept:district-amr")
    clerk.by("escalate-confirm").click()
    rows = clerk.by("invitation-status")
    expect(rows).to_have_count(2)
    expect(
        clerk.page.locator("[data-testid=invitation-status][data-dept=district-amr]")
    ).to_be_visible()


def test_reviewer_of_an_uninvited_department_cannot_join(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    sid = start_session(http, clerk_token(tokens), "GZ-EDGE-UNINVITED", dept="city-amr")
    outsider = people("outsider")
    outsider.open(
        f"/session/{sid}",
        tokens.issue(
            sub="rev-district-planning-1",
            role="reviewer",
            name="吴芳",
            dept="district-planning",
            level="district",
        ),
    )
    message = outsider.by("join-error")
    expect(message).to_be_visible()
    # Another department's session answers as an unknown one: the page says both.
    expect(message).to_have_attribute("data-code", "session_not_found")
    expect(message).to_contain_text("没有收到本次会办的邀请")
    expect(outsider.by("video-tile")).to_have_count(0)
    axe_check(outsider.page, "the session page refusing an outsider")
    outsider.shot("not-invited-zh")


def test_expired_sign_in_gets_a_clear_message(
    people: Callable[..., Person], tokens: TokenService
) -> None:
    expired = tokens.issue(
        sub="rev-city-amr-1",
        role="reviewer",
        name="王建国",
        dept="city-amr",
        level="city",
        now=time.time() - 7200,
        ttl=600,
    )
    person = people("late reviewer")
    for path in ("/inbox", "/session/s_whatever", "/counter", "/"):
        person.open(path, expired)
        notice = person.by("page-error")
        expect(notice).to_have_attribute("data-code", "token_expired")
        expect(notice).to_contain_text("登录已过期")
        expect(person.page).not_to_have_url(re.compile("token="))
        axe_check(person.page, f"{path}: sign-in expired")
    person.by("go-login").click()
    expect(person.page).to_have_url(re.compile(r"/login$"))
    expect(person.by("login-clerk-01")).to_be_visible()
    person.shot("login-zh")
    person.set_lang("en")
    expect(person.by("login-clerk-01")).to_contain_text("Window clerk")
    person.shot("login-en")


def test_denied_camera_offers_audio_only_and_view_only(
    people: Callable[..., Person], tokens: TokenService, http: Api, playwright: Playwright
) -> None:
    token = clerk_token(tokens)
    sid = start_session(http, token, "GZ-EDGE-DENIED")
    clerk = people("clerk")
    clerk.open(f"/session/{sid}", token)
    pid_clerk = wait_joined(clerk.page)

    denied: Browser = launch(playwright, FLAGS_NO_FAKE_UI)  # no automatic permission
    try:
        for mode, permissions in (("audio", ["microphone"]), ("view", [])):
            applicant = people(f"applicant ({mode})", browser_=denied, permissions=permissions)
            link = http.call("POST", f"/api/sessions/{sid}/applicant-link", token, {})
            applicant.page.goto(link["url"])
            pass_prejoin(applicant.page)
            problem = applicant.by("media-error")
            expect(problem).to_have_attribute("data-kind", "denied")
            if mode == "audio":
                applicant.shot("camera-denied-zh")
                applicant.by("join-audio-only").click()
            else:
                applicant.by("join-view-only").click()
            expect(problem).to_be_hidden()
            expect(applicant.page.locator("body")).to_have_attribute("data-media-mode", mode)
            wait_video_from(applicant.page, [pid_clerk])
            me = participant_id(applicant.page)
            expect(tile(clerk.page, me)).to_be_visible()  # present, without video
            expect(tile(clerk.page, me)).to_have_attribute("data-state", "waiting")
            applicant.by("leave").click()
            expect(applicant.by("session-left")).to_be_visible()
    finally:
        denied.close()


def clerk_with_applicant(
    people: Callable[..., Person], http: Api, token: str, case: str
) -> tuple[str, Person, Person, str, str]:
    """The clerk in a new session and the applicant in by the link, both joined:
    (session id, clerk, applicant, their participant ids)."""
    sid = start_session(http, token, case)
    clerk, applicant = people("clerk"), people("applicant")
    clerk.open(f"/session/{sid}", token)
    pid = wait_joined(clerk.page)
    applicant.page.goto(http.call("POST", f"/api/sessions/{sid}/applicant-link", token, {})["url"])
    return sid, clerk, applicant, pid, wait_joined(applicant.page)


def test_dropped_socket_resumes_and_failed_media_is_rebuilt(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    token = clerk_token(tokens)
    sid, clerk, applicant, pid, pid_app = clerk_with_applicant(people, http, token, "GZ-EDGE-DROP")
    wait_video_from(clerk.page, [pid_app])
    # recording_policy "always" (this server): recorded from the start, nobody stops it.
    for person in (clerk, applicant):
        expect(person.by("recording-indicator")).to_be_visible()
        expect(person.by("toggle-recording")).to_be_hidden()

    # The socket drops: "reconnecting" shows, then the same slot is resumed.
    clerk.page.evaluate("window.jr.signal.dropForTest()")
    expect(clerk.by("reconnecting")).to_be_visible()
    expect(clerk.by("connection-state")).to_have_attribute("data-state", "reconnecting")
    expect(clerk.by("connection-state")).to_have_attribute("data-state", "open")
    expect(clerk.by("reconnecting")).to_be_hidden()
    assert participant_id(clerk.page) == pid
    session = http.call("GET", f"/api/sessions/{sid}", token)
    states = {p["participant_id"]: p["state"] for p in session["participants"]}
    assert states[pid] == "joined"

    # The media connection fails (as after media.state "failed"): a fresh one takes over
    # and video flows both ways again.
    clerk.page.evaluate("() => { window.jr.media.restart(); }")
    wait_video_from(clerk.page, [pid_app])
    wait_video_from(applicant.page, [pid])
    expect(tile(clerk.page, pid)).to_have_attribute("data-state", "playing")


def chat_texts(person: Person) -> list[str]:
    texts = person.page.locator("[data-testid=chat-message] .chat-text").all_inner_texts()
    return [t.strip() for t in texts]


def send_chat(person: Person, text: str) -> None:
    person.by("chat-input").fill(text)
    person.by("chat-send").click()
    expect(person.by("chat-message").filter(has_text=text)).to_have_count(1)


def test_chat_sent_while_a_participant_was_offline_appears_after_resume(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    token = clerk_token(tokens)
    _, clerk, applicant, _, pid_app = clerk_with_applicant(
        people, http, token, "GZ-EDGE-CHAT-RESUME"
    )
    clerk.by("tab-chat").click()
    send_chat(clerk, "开始前：请准备营业执照")
    expect(applicant.by("chat-message")).to_have_count(1)

    # The applicant's network goes away: its socket drops and cannot come back yet. The
    # socket is dropped first, while its close still reaches the server: dropped after
    # Chromium's offline emulation began, the server saw the slot alive for over 15 s in
    # 1 of 8 runs (its heartbeat, 7.5 s, did not end it either: an emulated-offline
    # socket is not a dead link; a real one is noticed, tests/browser/test_network.py).
    # The page's first retry comes 0.5 s later, offline by then.
    applicant.page.evaluate("window.jr.signal.dropForTest()")
    applicant.context.set_offline(True)
    expect(applicant.by("connection-state")).to_have_attribute("data-state", "reconnecting")
    expect(tile(clerk.page, pid_app)).to_have_attribute("data-presence", "disconnected")
    send_chat(clerk, "第一条：请出示股东会决议")
    send_chat(clerk, "第二条：签字页看不清，请重拍")
    expect(applicant.by("chat-message")).to_have_count(1)

    # Back online: the page resumes its slot and shows what it missed, in order, once.
    applicant.context.set_offline(False)
    expect(applicant.by("connection-state")).to_have_attribute("data-state", "open")
    assert participant_id(applicant.page) == pid_app
    expect(applicant.by("chat-message")).to_have_count(3)
    assert chat_texts(applicant) == [
        "开始前：请准备营业执照",
        "第一条：请出示股东会决议",
        "第二条：签字页看不清，请重拍",
    ]
    # Live chat goes on after the resume, without repeats.
    send_chat(applicant, "好的，马上重拍")
    expect(clerk.by("chat-message")).to_have_count(4)
    expect(applicant.by("chat-message")).to_have_count(4)
    assert chat_texts(applicant)[-1] == "好的，马上重拍"
