"""The case page (/case, 办件跟踪): a case of two joint reviews played through the API,
shown in order with their invitations, answers and opinions; the print action downloads
the opinion sheet sealed into the first one's case file (its text read back)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

from playwright.sync_api import expect
from pypdf import PdfReader

from signaling.auth import TokenService

from .conftest import Api, Person
from .helpers import axe_check

CASE = "GZ-TRACK-0007"


def test_the_case_page_tracks_every_session_and_prints_the_sheet(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    clerk = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    reviewer = tokens.issue(
        sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
    )
    other = tokens.issue(
        sub="rev-city-tax-1", role="reviewer", name="李娜", dept="city-tax", level="city"
    )
    body = {"applicant_name": "广州琶洲某贸易有限公司", "matter": "食品经营许可证变更"}
    first = http.call("POST", f"/api/cases/{CASE}/sessions", clerk, body)["session_id"]
    amr = http.call("POST", f"/api/sessions/{first}/invitations", clerk, {"dept": "city-amr"})
    tax = http.call("POST", f"/api/sessions/{first}/invitations", clerk, {"dept": "city-tax"})
    http.call("POST", f"/api/invitations/{amr['invitation_id']}/accept", reviewer)
    decline = {"reason": "非本局事项"}
    http.call("POST", f"/api/invitations/{tax['invitation_id']}/decline", other, decline)
    opinion = {"decision": "materials_missing", "missing": ["股东会决议原件"]}
    http.call("POST", f"/api/sessions/{first}/opinions", reviewer, opinion)
    http.call("POST", f"/api/sessions/{first}/end", clerk)
    second = http.call("POST", f"/api/cases/{CASE}/sessions", clerk, body)["session_id"]
    http.call("POST", f"/api/sessions/{second}/invitations", clerk, {"dept": "district-amr"})

    supervisor = people("supervisor")
    page = supervisor.open(f"/case?case={CASE}", tokens.issue(sub="sup-01", role="supervisor"))
    cards = supervisor.by("track-session")
    expect(cards).to_have_count(2)
    expect(cards.nth(0)).to_have_attribute("data-session-id", first)
    expect(cards.nth(1)).to_have_attribute("data-session-id", second)
    expect(cards.nth(1)).to_have_attribute("data-status", "active")
    one = cards.nth(0)
    rows = one.get_by_test_id("track-invitation")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-status", "accepted")
    expect(rows.nth(0)).to_contain_text("王建国")
    expect(rows.nth(1)).to_have_attribute("data-status", "declined")
    expect(rows.nth(1)).to_contain_text("非本局事项")
    filed = one.get_by_test_id("track-opinion")
    expect(filed).to_have_attribute("data-decision", "materials_missing")
    expect(filed).to_contain_text("股东会决议原件")
    expect(one.get_by_test_id("track-seal")).to_be_visible()
    supervisor.shot("case-track-zh")
    axe_check(page, "a case's track")

    with page.expect_download() as download:
        one.get_by_test_id("print-sheet").click()
    data = download.value.path().read_bytes()
    assert data.startswith(b"%PDF-")
    text = re.sub(r"\s+", "", "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages))
    assert CASE in text and "王建国" in text and "股东会决议原件" in text
    assert "草稿" not in text  # the sealed sheet of the case file
    assert download.value.suggested_filename == f"{CASE}_{first}_opinion_sheet.pdf"

    supervisor.set_lang("en")
    expect(cards.nth(0)).to_contain_text("Joint review 1")
    supervisor.shot("case-track-en")

    # A case never seen: said in the page, no failed request in the console.
    supervisor.by("track-case").fill("NO-SUCH-CASE-1")
    supervisor.by("track-case").press("Enter")
    expect(supervisor.by("track-empty")).to_be_visible()
    expect(cards).to_have_count(0)
