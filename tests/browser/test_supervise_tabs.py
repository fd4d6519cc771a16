"""The supervisor's Statistics, Exceptions and Live tabs (issue #15 item 6) in Chromium.

A small known history is played once through the real API on this module's server
(ring timeout 1.5 s):

- case SUPV-A (1号窗口, 食品经营许可): city-amr accepts and files no opinion (no_opinion
  at the end), district-amr declines with a reason holding a comma, quotes and a line
  break (invitation_declined), city-tax rings out (invitation_unanswered); ended;
- case SUPV-C (2号窗口, 税务登记变更): city-tax accepts and approves; ended.

So: 2 sessions, 4 invitations (2 accepted, 1 declined, 1 unanswered), 3 open exceptions.
The tests read the figures, the charts' SVG bars, the CSV files back, open an exception's
replay at its moment, handle one (and a second handling shows "already handled"), see a
new one arrive over the socket, and watch a running session in the Live tab.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import SCREENSHOTS, Api, Person, eventually
from .helpers import axe_check, wait_joined

VIEW = {"width": 1280, "height": 800}
REASON = '非本局事项, 请转"区税务"\n第二行'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"JR_MEDIA_LISTEN_IPS": '["127.0.0.1"]', "JR_RING_TIMEOUT_S": "1.5"}
    proc = ServerProcess(tmp_path_factory.mktemp("jr-sup") / "data", env=env).start()
    yield proc
    if proc.proc is not None:
        proc.stop()


class History:
    def __init__(self, http: Api, tokens: TokenService) -> None:
        self.http, self.tokens = http, tokens
        self.clerk = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
        self.sup = tokens.issue(sub="sup-01", role="supervisor", name="周监督")
        self.amr = self.reviewer("rev-city-amr-1", "王建国", "city-amr", "city")
        self.tax = self.reviewer("rev-city-tax-1", "李敏", "city-tax", "city")
        self.district = self.reviewer("rev-district-amr-1", "黄丽", "district-amr", "district")

    def reviewer(self, sub: str, name: str, dept: str, level: str) -> str:
        return self.tokens.issue(sub=sub, role="reviewer", name=name, dept=dept, level=level)

    def session(self, case: str, window: str, matter: str) -> str:
        body = {"applicant_name": "示例科技有限公司", "matter": matter, "window": window}
        return str(
            self.http.call("POST", f"/api/cases/{case}/sessions", self.clerk, body)["session_id"]
        )

    def invite(self, sid: str, dept: str) -> str:
        path = f"/api/sessions/{sid}/invitations"
        return str(self.http.call("POST", path, self.clerk, {"dept": dept})["invitation_id"])

    def answer(self, token: str, iid: str, reason: str | None = None) -> None:
        how, body = ("decline", {"reason": reason}) if reason else ("accept", None)
        self.http.call("POST", f"/api/invitations/{iid}/{how}", token, body)

    def status(self, sid: str, iid: str) -> str:
        found = self.http.call("GET", f"/api/sessions/{sid}/invitations", self.clerk)
        return str(next(i["status"] for i in found["invitations"] if i["invitation_id"] == iid))

    def exceptions(self, **q: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in q.items())
        return list(self.http.call("GET", f"/api/exceptions?{query}", self.sup)["exceptions"])

    def play(self) -> None:
        a = self.session("SUPV-A", "1号窗口", "食品经营许可")
        amr, tax, district = (self.invite(a, d) for d in ("city-amr", "city-tax", "district-amr"))
        self.answer(self.amr, amr)
        self.answer(self.district, district, REASON)
        eventually(lambda: self.status(a, tax) == "unanswered", timeout=10)
        self.http.call("POST", f"/api/sessions/{a}/end", self.clerk)
        c = self.session("SUPV-C", "2号窗口", "税务登记变更")
        self.answer(self.tax, self.invite(c, "city-tax"))
        body = {"decision": "approve", "note": "同意"}
        self.http.call("POST", f"/api/sessions/{c}/opinions", self.tax, body)
        self.http.call("POST", f"/api/sessions/{c}/end", self.clerk)
        self.a = a
        eventually(lambda: len(self.exceptions()) == 3, timeout=10)


@pytest.fixture(scope="module")
def history(http: Api, tokens: TokenService) -> History:
    h = History(http, tokens)
    h.play()
    return h


def shot(person: Person, name: str) -> None:
    """The whole page (these pages scroll): for docs/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    person.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], f"horizontal scroll: {width}"


def axe_clean(page: Page) -> None:
    """No axe-core violation at all (WCAG 2 A/AA and best practices), whatever its impact."""
    axe_check(page, page.url, strict=True)


def read_csv(download: Any) -> tuple[str, list[list[str]]]:
    raw = Path(download.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), raw[:10]
    text = raw.decode("utf-8-sig")
    return download.suggested_filename, list(csv.reader(io.StringIO(text, newline="")))


def chart_bars(page: Page, testid: str) -> dict[str, dict[str, float]]:
    return dict(
        page.evaluate(
            """(id) => Object.fromEntries(
              [...document.querySelectorAll(`[data-testid=${id}] g[data-label]`)].map((g) => [
                g.dataset.label,
                Object.fromEntries([...g.querySelectorAll("rect.bar")].map(
                  (r) => [r.dataset.series, Number(r.dataset.value)])),
              ]))""",
            testid,
        )
    )


def test_statistics_show_the_history_in_figures_charts_and_csv(
    people: Callable[..., Person], history: History
) -> None:
    sup = people("supervisor", viewport=VIEW)
    page = sup.open("/supervise?tab=stats", history.sup)
    expect(sup.by("tab-stats")).to_have_attribute("aria-selected", "true")
    expect(sup.by("stat-sessions-total")).to_have_attribute("data-value", "2")
    for testid, value in (("invitations-total", 4), ("accepted", 2), ("declined", 1)):
        expect(sup.by(f"stat-{testid}")).to_have_attribute("data-value", str(value))
    expect(sup.by("stat-unanswered")).to_have_attribute("data-value", "1")
    assert chart_bars(page, "chart-answers") == {
        "city-amr": {"accepted": 1},
        "city-tax": {"accepted": 1, "unanswered": 1},
        "district-amr": {"declined": 1},
    }
    answers = sup.by("chart-answers")
    expect(answers).to_contain_text("市税务局")
    bar = answers.locator("rect.bar[data-series=unanswered]")
    expect(bar).to_have_attribute("aria-label", "市税务局 · 无人应答: 1")
    bar.focus()  # the value is shown on focus (and hover) too
    expect(answers.locator(".chart-tip")).to_have_text("市税务局 · 无人应答: 1")
    times = chart_bars(page, "chart-answer-time")
    assert set(times) == {"city-amr", "city-tax", "district-amr"}
    assert all(v["answer_s_p50"] >= 0 for v in times.values())
    days = chart_bars(page, "chart-days")
    assert sum(v.get("sessions", 0) for v in days.values()) == 2
    expect(sup.by("stats-departments-row")).to_have_count(5)  # every department
    expect(sup.by("stats-windows-row")).to_have_count(2)
    no_horizontal_scroll(page)
    axe_clean(page)
    shot(sup, "supervise-stats-zh")

    with page.expect_download() as got:
        sup.by("stats-departments-csv").click()
    name, rows = read_csv(got.value)
    assert re.fullmatch(r"统计_部门_\d{4}-\d\d-\d\d_\d{4}-\d\d-\d\d\.csv", name), name
    assert rows[0][:6] == ["部门", "层级", "被邀请", "已接受", "已拒绝", "无人应答"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["市税务局"][1:6] == ["市级", "2", "1", "0", "1"]
    assert by_name["海珠区市场监督管理局"][2:5] == ["1", "0", "1"]

    # The department filter, and the tabs by keyboard.
    sup.by("stats-dept").select_option("city-tax")
    sup.by("stats-submit").click()
    expect(sup.by("stat-invitations-total")).to_have_attribute("data-value", "2")
    sup.by("tab-stats").focus()
    page.keyboard.press("ArrowRight")
    expect(sup.by("tab-exceptions")).to_be_focused()
    expect(sup.by("tab-exceptions")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowLeft")
    sup.by("stats-dept").select_option("")
    sup.by("stats-submit").click()
    sup.set_lang("en")
    expect(sup.by("chart-answers")).to_contain_text("Answers per department")
    expect(sup.by("stat-sessions-total")).to_contain_text("Sessions")
    shot(sup, "supervise-stats-en")


def test_exceptions_open_the_replay_at_their_moment_and_are_handled(
    people: Callable[..., Person], history: History
) -> None:
    sup = people("supervisor", viewport=VIEW)
    page = sup.open("/supervise?tab=exceptions", history.sup)
    rows = sup.by("exc-row")
    expect(rows).to_have_count(3)
    kinds = sorted(rows.evaluate_all("(rs) => rs.map((r) => r.dataset.kind)"))
    assert kinds == ["invitation_declined", "invitation_unanswered", "no_opinion"]
    declined = page.locator("[data-testid=exc-row][data-kind=invitation_declined]")
    expect(declined).to_contain_text("黄丽 拒绝")
    no_horizontal_scroll(page)
    axe_clean(page)
    shot(sup, "supervise-exceptions-zh")

    # CSV: every row, the reason's comma, quotes and line break intact.
    with page.expect_download() as got:
        sup.by("exc-csv").click()
    name, table = read_csv(got.value)
    assert name.startswith("异常_") and name.endswith(".csv"), name
    assert len(table) == 4
    assert any(REASON in cell for row in table for cell in row)

    # The replay at the exception's moment.
    exc = next(x for x in history.exceptions() if x["kind"] == "invitation_declined")
    declined.get_by_test_id("exc-replay").click()
    expect(sup.by("replay")).to_be_visible()
    assert f"t={exc['offset_s']:.1f}" in page.url
    page.wait_for_function(
        "(t) => Math.abs(Number(document.querySelector('[data-testid=replay-time]')"
        "?.dataset.t) - t) < 0.3",
        arg=exc["offset_s"],
    )
    # The event at that moment is in the details: the decline and its reason.
    expect(sup.by("replay-detail")).to_contain_text("第二行")
    sup.by("replay-back").click()
    expect(sup.by("tab-exceptions")).to_have_attribute("aria-selected", "true")

    # Handle it; a second handling (someone else's, here through the API) is "already handled".
    row = sup.by("exc-row").and_(page.locator(f"[data-exception-id={exc['exception_id']}]"))
    row.get_by_test_id("exc-handle").click()
    sup.by("exc-handle-confirm").click()
    expect(sup.by("exc-handle-error")).to_contain_text("请填写")
    sup.by("exc-note").fill("已电话联系区市场监管局")
    sup.by("exc-handle-confirm").click()
    expect(sup.by("exc-dialog")).to_be_hidden()
    expect(row).to_have_attribute("data-status", "handled")
    other = next(x for x in history.exceptions(status="open") if x["kind"] == "no_opinion")
    orow = sup.by("exc-row").and_(page.locator(f"[data-exception-id={other['exception_id']}]"))
    orow.get_by_test_id("exc-handle").click()
    history.http.call(
        "POST", f"/api/exceptions/{other['exception_id']}/handle", history.sup, {"note": "先处理"}
    )
    sup.by("exc-note").fill("再处理")
    sup.by("exc-handle-confirm").click()
    expect(sup.by("exc-already-handled")).to_be_visible()
    # Provoked: the test handles from a stale page what was handled meanwhile, and
    # Chromium logs the refused POST (409) whatever the page does with the answer.
    sup.allow_errors("status of 409", "a second handling, refused", count=1)
    sup.by("exc-handle-cancel").click()
    expect(orow).to_have_attribute("data-status", "handled")

    # A new exception arrives over the socket while the tab is open.
    sid = history.session("SUPV-D", "1号窗口", "食品经营许可")
    history.answer(history.district, history.invite(sid, "district-amr"), "不属于本部门")
    fresh = sup.by("exc-row").and_(page.locator("[data-new='1']"))
    expect(fresh).to_have_count(1)
    expect(fresh).to_have_attribute("data-kind", "invitation_declined")
    history.http.call("POST", f"/api/sessions/{sid}/end", history.clerk)
    sup.set_lang("en")
    expect(sup.by("exc-row").first).to_contain_text("黄丽 declined: 不属于本部门")
    shot(sup, "supervise-exceptions-en")


def test_live_lists_the_running_session_and_who_is_in(
    people: Callable[..., Person], history: History
) -> None:
    sid = history.session("SUPV-L", "3号窗口", "展品进境备案")
    history.invite(sid, "city-customs")  # rings out after 1.5 s: listed with the session
    clerk = people("clerk")
    clerk.open(f"/session/{sid}", history.clerk)
    pid = wait_joined(clerk.page)
    sup = people("supervisor", viewport=VIEW)
    page = sup.open("/supervise?tab=live", history.sup)
    card = sup.by("live-session").and_(page.locator(f"[data-session-id={sid}]"))
    expect(card).to_contain_text("SUPV-L")
    who = card.get_by_test_id("live-participant").and_(page.locator(f"[data-participant-id={pid}]"))
    expect(who).to_contain_text("陈晓")
    expect(who).to_have_attribute("data-health", re.compile("ok|bad"), timeout=10_000)
    expect(card.get_by_test_id("live-invitation")).to_have_count(1)
    expect(card.get_by_test_id("live-watch")).to_have_attribute("href", f"/session/{sid}")
    no_horizontal_scroll(page)
    axe_clean(page)
    shot(sup, "supervise-live-zh")
    sup.set_lang("en")
    expect(card).to_contain_text("Watch")
    shot(sup, "supervise-live-en")
    card.get_by_test_id("live-watch").click()
    page.wait_for_function("() => document.body.dataset.observing === '1'")
    history.http.call("POST", f"/api/sessions/{sid}/end", history.clerk)
