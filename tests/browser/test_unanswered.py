"""Nobody answers within the ring timeout: the counter sees it and re-invites or
escalates (this module's server rings for 2 s only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import expect

from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Api, Person
from .helpers import wait_joined


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]', "JR_RING_TIMEOUT_S": "2"}
    proc = ServerProcess(tmp_path_factory.mktemp("jr-ring") / "data", env=env).start()
    yield proc
    if proc.proc is not None:
        proc.stop()


def test_unanswered_invitation_can_be_repeated_or_escalated(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    token = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    body = {"applicant_name": "示例会展服务有限公司", "matter": "展品进境备案"}
    sid = http.call("POST", "/api/cases/GZ-EDGE-RING/sessions", token, body)["session_id"]
    clerk = people("clerk", lang="en")
    clerk.open(f"/session/{sid}", token)
    wait_joined(clerk.page)
    clerk.by("invite-dept-city-customs").check()
    clerk.by("invite").click()
    row = clerk.by("invitation-status")
    expect(row).to_have_attribute("data-status", "pending")
    expect(row).to_have_attribute("data-status", "unanswered")  # after the 2 s ring timeout
    expect(row).to_contain_text("No answer")
    clerk.by("toast").filter(has_text="no answer").first.wait_for()

    row.get_by_test_id("reinvite").click()
    rows = clerk.by("invitation-status")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_have_attribute("data-dept", "city-customs")

    rows.nth(0).get_by_test_id("escalate").click()
    clerk.by("escalate-target").select_option(label="赵海")  # the named customs reviewer
    clerk.by("escalate-confirm").click()
    expect(rows).to_have_count(3)
    expect(rows.nth(2)).to_have_attribute("data-reviewer", "rev-city-customs-1")
    rows.nth(0).scroll_into_view_if_needed()
    clerk.shot("unanswered-en")
