"""Taking a case file away, in a real browser: a session recorded through the SFU (the
replay test's own recording, on its server, which runs no export job), opened for replay
on /supervise by a supervisor. The "case file" panel beside the replay lists every sealed
file by kind, with its size and the start of its SHA-256, each a download link (a grant
URL, followed without the Bearer token). Before the composite video is made the panel
says it comes later; once made (``export_session``, as the export job would), its link
shows its size and what it downloads hashes to the export's SHA-256, also after the
grants ran out (the page asks for the index again). An index that can't be read is one
short line beside a replay that plays as ever; a session in progress shows no panel, and
once ended is shown being sealed, then sealed, with no failed request in the console.

Screenshots: docs/screenshots/supervise-casefile-*.png (zh-CN and English).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from recording.compose import Options
from recording.export import COMPOSITE, export_session
from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Api, Person
from .helpers import start_session
from .test_replay import CASE, record, server  # noqa: F401  (its server: no export job)

MB = 1024 * 1024
KINDS = {"manifest", "timeline", "track", "still"}

# A link's target fetched as a plain link would be (no Bearer header), hashed in the page.
FETCH_JS = """async (href) => {
  const res = await fetch(href);
  const bytes = await res.arrayBuffer();
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return {
    status: res.status,
    disposition: res.headers.get("content-disposition"),
    size: bytes.byteLength,
    sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
  };
}"""

ROWS_JS = """() => [...document.querySelectorAll("[data-testid=casefile-file]")]
  .map((li) => [li.dataset.path, li.dataset.kind])"""


def _megabytes(size: int) -> str:
    n = size / MB
    return f"{n:.{2 if n < 0.1 else 1}f} MB"


def _download(page: Any, link: Any) -> tuple[str, str]:
    """Click a download link: (the file's name as offered, the SHA-256 of its bytes)."""
    with page.expect_download() as info:
        link.click()
    download = info.value
    data = Path(download.path()).read_bytes()
    return download.suggested_filename, hashlib.sha256(data).hexdigest()


def test_a_session_in_progress_shows_no_case_file(
    people: Callable[..., Person], tokens: TokenService, http: Api
) -> None:
    clerk = tokens.issue(sub="clerk-01", role="clerk", name="陈晓")
    sid = start_session(http, clerk, "SUP-LIVE-0001")
    sup = people("supervisor")
    token = tokens.issue(sub="sup-01", role="supervisor", name="郑监督")
    page = sup.open(f"/supervise?session={sid}", token)
    expect(sup.by("replay-live")).to_be_visible()
    page.wait_for_function("() => window.jr && window.jr.caseFile.quiet === 'session_live'")
    expect(sup.by("casefile")).to_be_hidden()
    expect(sup.by("casefile-error")).to_have_count(0)
    # The index is not asked for while the session runs: no 409 in the console (the
    # people fixture fails the test on any console error).

    # Ended, and opened at once: "being sealed" while it is (the page asks the case's
    # track, not the routes that answer 409 meanwhile), then the replay and its case file.
    http.call("POST", f"/api/sessions/{sid}/end", clerk)
    page.reload()
    expect(sup.by("casefile")).to_be_visible(timeout=30_000)
    expect(sup.by("replay-live")).to_have_count(0)
    expect(sup.by("casefile-error")).to_have_count(0)


def test_a_supervisor_takes_the_case_file_away(
    people: Callable[..., Person],
    tokens: TokenService,
    server: ServerProcess,  # noqa: F811
    http: Api,
) -> None:
    sid = record(server, tokens)["sid"]
    token = tokens.issue(sub="sup-01", role="supervisor", name="郑监督")
    sup = people("supervisor")
    page = sup.open(f"/supervise?session={sid}", token)
    expect(sup.by("replay-video")).to_have_count(3)

    # Before the composite is made: the panel says it comes later, and lists the files.
    panel = sup.by("casefile")
    expect(panel).to_be_visible()
    expect(sup.by("casefile-export-pending")).to_be_visible()
    expect(sup.by("casefile-export-pending")).to_contain_text("合成视频在案卷封存后自动生成")
    expect(sup.by("casefile-export")).to_have_count(0)
    index = http.call("GET", f"/api/sessions/{sid}/casefile", token)
    assert index["export"] is None
    expect(sup.by("casefile-file")).to_have_count(len(index["files"]))
    rows = {path: kind for path, kind in page.evaluate(ROWS_JS)}
    assert rows == {f["path"]: f["kind"] for f in index["files"]}
    assert set(rows.values()) >= KINDS
    sup.by("casefile-toggle").click()
    expect(sup.by("casefile-toggle")).to_have_text(f"全部文件（{len(index['files'])} 个）")
    expect(panel.locator(".casefile-kind[data-kind=track]")).to_have_text("音视频轨")
    expect(panel.locator(".casefile-kind[data-kind=still]")).to_have_text("截图")
    for f in index["files"]:
        row = panel.locator(f"[data-testid=casefile-file][data-path='{f['path']}']")
        expect(row).to_be_visible()
        link = row.get_by_test_id("casefile-download")
        expect(link).to_have_attribute("href", re.compile(r"^/api/casefile/[\w-]+\.[\w-]+$"))
        # Saved under the name people read (the case, who, department, source).
        expect(link).to_have_attribute("download", f["name"])
        if f["sha256"] is None:  # the manifest: its hash is in the store's timeline
            expect(row.locator(".casefile-hash")).to_contain_text("—")
        else:
            code = row.locator(".casefile-hash code")
            expect(code).to_have_text(f["sha256"][:12])
            expect(code).to_have_attribute("title", f["sha256"])

    # A still's link gives the sealed bytes, without the Bearer header.
    still = next(f for f in index["files"] if f["kind"] == "still")
    href = panel.locator(
        f"[data-testid=casefile-file][data-path='{still['path']}'] [data-testid=casefile-download]"
    ).get_attribute("href")
    got = page.evaluate(FETCH_JS, href)
    assert got["status"] == 200 and got["sha256"] == still["sha256"], got
    assert got["disposition"].startswith("attachment;"), got

    # The composite, made as the export job would: offered once the page is opened again.
    archive = server.data_dir / "archive"
    options = Options(width=320, height=180, fps=10)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        made = pool.submit(export_session, archive, CASE, sid, options).result(timeout=120)
    page.reload()
    composite = sup.by("casefile-export")
    expect(composite).to_be_visible()
    expect(composite).to_have_text("下载合成视频")
    expect(composite).to_have_attribute("data-size", str(made["size"]))
    expect(sup.by("casefile-export-size")).to_have_text(_megabytes(made["size"]))
    expect(panel.locator(".casefile-composite")).to_contain_text("时长")
    expect(sup.by("casefile-export-pending")).to_have_count(0)
    rows = {path: kind for path, kind in page.evaluate(ROWS_JS)}
    assert rows[COMPOSITE] == "export" and rows["exports.json"] == "addendum", rows
    name, digest = _download(page, composite)
    assert name == f"{CASE}_合成录像.mp4"  # the name people read (#16), not the stored one
    assert digest == made["sha256"]
    got = page.evaluate(FETCH_JS, composite.get_attribute("href"))
    assert (got["status"], got["size"], got["sha256"]) == (200, made["size"], made["sha256"])
    sup.by("casefile-toggle").click()
    expect(panel.locator(".casefile-kind[data-kind=export]")).to_be_visible()
    sup.shot("supervise-casefile-zh")

    # After the grants ran out, a click asks for the index again and follows the new link.
    page.evaluate("window.jr.caseFile.index.grants_expire_at = 0")
    with page.expect_request(lambda r: r.url.endswith(f"/api/sessions/{sid}/casefile")):
        _, digest = _download(page, composite)
    assert digest == made["sha256"]  # the same file, through the fresh grant
    assert page.evaluate("window.jr.caseFile.index.grants_expire_at > Date.now() / 1000")

    # In English, in place.
    sup.set_lang("en")
    expect(panel.locator("h2")).to_have_text("Case file")
    expect(composite).to_have_text("Download composite video")
    expect(sup.by("casefile-toggle")).to_have_text(f"All files ({len(rows)})")
    expect(panel.locator(".casefile-kind[data-kind=track]")).to_have_text("Audio and video tracks")
    expect(panel.locator(".casefile-composite")).to_contain_text("Length")
    expect(panel.get_by_test_id("casefile-download").first).to_have_text(
        f"Download {CASE}_合成录像.mp4"  # the file's name is for screen readers
    )
    sup.shot("supervise-casefile-en")
    sup.set_lang("zh-CN")

    # An index that can't be read: one short line, and the replay as ever.
    page.route(
        f"**/api/sessions/{sid}/casefile",
        lambda route: route.fulfill(status=500, json={"error": {"code": "internal_error"}}),
    )
    page.reload()
    expect(sup.by("casefile-error")).to_have_text("案卷文件列表未能载入，请稍后刷新。")
    expect(sup.by("casefile-file")).to_have_count(0)
    expect(sup.by("replay-video")).to_have_count(3)
    expect(sup.by("replay-marker")).not_to_have_count(0)
    # Provoked: the test's route answers 500, and Chromium logs the failed request.
    sup.allow_errors("status of 500", "an index made to fail", count=1)

    # Every download is in the case's timeline, once per viewer and file.
    events = http.call("GET", f"/api/cases/{CASE}", token)["events"]
    taken = {e["data"]["path"] for e in events if e["type"] == "casefile.downloaded"}
    assert taken == {still["path"], COMPOSITE}, taken
