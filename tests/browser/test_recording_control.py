"""Recording under ``recording_policy = "clerk"``: staff start and stop it from the page,
everyone sees the indicator, and only staff ever see the button."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import WebSocketRoute, expect

from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Api, Person, eventually
from .helpers import open_review, participant_id, wait_joined

CASE = "GZ-REC-CLERK"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's own server: nothing is recorded until staff say so."""
    root = tmp_path_factory.mktemp("jr-rec")
    proc = ServerProcess(
        root / "data",
        env={
            "JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]',
            "JR_LOG_LEVEL": "warning",
            "JR_RECORDING_POLICY": "clerk",
        },
    ).start()
    yield proc
    if proc.proc is not None:
        proc.stop()


def recording_events(http: Api, token: str, case: str = CASE) -> list[str]:
    events = http.call("GET", f"/api/cases/{case}", token)["events"]
    return [e["type"] for e in events if e["type"].startswith("recording.")]


def test_clerk_starts_and_stops_recording_from_the_page(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    sid, clerk_token, reviewer_token = open_review(http, tokens, CASE)
    admin_token = tokens.issue(sub="admin-01", role="admin", name="赵主任")

    clerk, reviewer = people("clerk"), people("reviewer")
    clerk.open(f"/session/{sid}", clerk_token)
    wait_joined(clerk.page)
    reviewer.open(f"/session/{sid}", reviewer_token)
    participant_id(reviewer.page)

    # Nothing is recorded yet. The clerk has the button; the reviewer never does.
    button = clerk.by("toggle-recording")
    expect(button).to_be_visible()
    expect(button).to_have_text("开始录制")
    expect(button).to_have_attribute("data-recording", "0")
    for person in (clerk, reviewer):
        expect(person.by("recording-indicator")).to_be_hidden()
    expect(reviewer.by("toggle-recording")).to_be_hidden()
    expect(reviewer.page.get_by_role("button", name="开始录制")).to_have_count(0)

    # Start: everyone sees the indicator; the button now stops it.
    button.click()
    expect(reviewer.by("recording-indicator")).to_be_visible()
    expect(clerk.by("recording-indicator")).to_be_visible()
    expect(button).to_have_text("停止录制")
    expect(button).to_have_attribute("data-recording", "1")
    expect(button).to_be_enabled()
    eventually(lambda: recording_events(http, clerk_token) == ["recording.started"])

    # Stop: the indicator goes away everywhere.
    button.click()
    expect(reviewer.by("recording-indicator")).to_be_hidden()
    expect(clerk.by("recording-indicator")).to_be_hidden()
    expect(button).to_have_text("开始录制")
    expect(reviewer.by("toggle-recording")).to_be_hidden()
    eventually(
        lambda: recording_events(http, clerk_token) == ["recording.started", "recording.stopped"]
    )

    # Another staff member's toggle shows on the clerk's button (and in English too).
    admin = people("admin", lang="en")
    admin.open(f"/session/{sid}", admin_token)
    participant_id(admin.page)
    expect(admin.by("toggle-recording")).to_have_text("Start recording")
    admin.by("toggle-recording").click()
    expect(admin.by("toggle-recording")).to_have_text("Stop recording")
    expect(button).to_have_text("停止录制")
    expect(reviewer.by("recording-indicator")).to_be_visible()
    button.click()
    expect(admin.by("toggle-recording")).to_have_text("Start recording")
    expect(admin.by("recording-indicator")).to_be_hidden()
    expect(reviewer.by("recording-indicator")).to_be_hidden()


def test_a_refused_recording_request_is_shown(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    """The button waits for the server's answer, and says so when it is an error."""
    clerk_token = tokens.issue(sub="clerk-02", role="clerk", name="林静")
    body = {"applicant_name": "示例科技有限公司", "matter": "食品经营许可"}
    sid = http.call("POST", f"/api/cases/{CASE}-2/sessions", clerk_token, body)["session_id"]
    clerk = people("clerk")
    # Between the page and the server: hold recording.start back, answer it by hand.
    sockets: list[WebSocketRoute] = []
    held: list[str] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        sockets.append(ws)

        def from_page(message: str | bytes) -> None:
            msg = json.loads(message)
            if msg.get("type") == "recording.start":
                held.append(msg["ref"])
            else:
                server.send(message)

        ws.on_message(from_page)

    clerk.page.route_web_socket(re.compile(r"/ws$"), route)
    clerk.open(f"/session/{sid}", clerk_token)
    participant_id(clerk.page)
    button = clerk.by("toggle-recording")
    expect(button).to_be_visible()
    button.click()
    expect(button).to_be_disabled()
    expect(button).to_have_attribute("aria-busy", "true")
    assert len(held) == 1
    refusal = {
        "type": "error",
        "v": 1,
        "ref": held[0],
        "code": "recording_disabled",
        "message": "recording is turned off on this service",
    }
    sockets[-1].send(json.dumps(refusal))
    expect(clerk.by("toast")).to_contain_text("本服务已关闭录制")
    expect(button).to_be_enabled()
    expect(button).not_to_have_attribute("aria-busy", "true")
    expect(button).to_have_text("开始录制")
    expect(clerk.by("recording-indicator")).to_be_hidden()
    assert recording_events(http, clerk_token, f"{CASE}-2") == []
