"""Watermarked viewing (issue #18): a replay marks every tile with its viewer's name,
department and the running time (web_client/static/watermark.js), faint, diagonal,
hidden from assistive technology and from the pointer; the identity comes from the
server's replay description. Screenshot: docs/screenshots/replay-watermark.png.

Then the composite, with ``export_watermark`` on (the server restarted so): the button
starts the person's copy on the server, the panel shows it being made with its percent,
then offers its link, without reloading; what the link downloads is not the sealed file
and the download is audited with the watermark's text. A reloaded page offers the copy
made at once.
Screenshot: docs/screenshots/supervise-watermarked-export.png."""

from __future__ import annotations

import concurrent.futures
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from recording.compose import Options
from recording.export import export_session
from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Api, Person
from .test_replay import CASE, SETTLED_JS, record, server  # noqa: F401 (that module's server)

TEXTS_JS = """() => [...document.querySelectorAll("[data-testid=replay-tile]")].map((tile) => {
  const layer = tile.querySelector(":scope > .watermark");
  if (!layer) return null;
  const style = getComputedStyle(layer), text = layer.querySelector(".watermark-text");
  const box = layer.getBoundingClientRect(), tbox = tile.getBoundingClientRect();
  return {
    hidden: layer.getAttribute("aria-hidden"), pointer: style.pointerEvents,
    copies: layer.querySelectorAll(".watermark-text").length, text: text.textContent,
    alpha: getComputedStyle(text).color,
    covers: box.width === tbox.width && box.height === tbox.height,
  };
})"""


# The progress line's texts as the page shows them, from the click on.
SEEN_JS = """() => {
  window.wmSeen = [];
  const root = document.querySelector("[data-testid=casefile]");
  new MutationObserver(() => {
    const line = document.querySelector("[data-testid=casefile-wm-progress]");
    if (line) window.wmSeen.push(line.textContent);
  }).observe(root, { subtree: true, childList: true, characterData: true });
}"""


@pytest.fixture(scope="module")
def recorded(server: ServerProcess, tokens: TokenService) -> str:  # noqa: F811
    """One recorded session for this module's tests."""
    return str(record(server, tokens)["sid"])


def test_every_replayed_tile_names_its_viewer(
    people: Callable[..., Person],
    tokens: TokenService,
    recorded: str,
) -> None:
    sid = recorded
    sup = people("supervisor")
    token = tokens.issue(sub="sup-02", role="supervisor", name="郑监督", dept="city-amr")
    page = sup.open(f"/supervise?session={sid}", token)
    expect(sup.by("replay-tile")).to_have_count(3)
    expect(sup.by("watermark")).to_have_count(3)
    viewer = page.evaluate("window.jr.player.desc.viewer")
    assert viewer["sub"] == "sup-02" and viewer["dept_name"] == "市市场监督管理局"
    marks = page.evaluate(TEXTS_JS)
    first = marks[0]["text"]
    assert first.startswith("郑监督 · 市市场监督管理局 · 20"), first
    for mark in marks:
        assert mark["hidden"] == "true" and mark["pointer"] == "none" and mark["covers"]
        assert mark["copies"] >= 20 and mark["text"] == first
        assert mark["alpha"].startswith("rgba(255, 255, 255, 0.2"), mark["alpha"]
    # The time runs: the seconds change under the viewer's eyes.
    page.wait_for_function(
        "(t) => document.querySelector('.watermark-text').textContent !== t", arg=first
    )
    # Clicks go through the mark: the timeline still answers under a watermarked tile.
    tile = sup.by("replay-tile").first
    hit = "(b) => document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2)"
    assert page.evaluate(hit + ".closest('.watermark')", tile.bounding_box()) is None
    page.evaluate("window.jr.player.seek(4)")  # every tile showing its picture
    page.wait_for_function(SETTLED_JS, arg=4)
    sup.shot("replay-watermark")


def test_a_watermarked_export_is_made_then_offered(
    people: Callable[..., Person],
    tokens: TokenService,
    server: ServerProcess,  # noqa: F811
    recorded: str,
    http: Api,
) -> None:
    sid = recorded
    server.stop()
    server.env["JR_EXPORT_WATERMARK"] = "true"
    server.start()
    options = Options(width=640, height=360, fps=15)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        archive = server.data_dir / "archive"
        made = pool.submit(export_session, archive, CASE, sid, options).result(timeout=120)
    token = tokens.issue(sub="sup-03", role="supervisor", name="郑监督", dept="city-amr")
    sup = people("supervisor")
    page = sup.open(f"/supervise?session={sid}", token)
    button = sup.by("casefile-export")
    expect(button).to_have_text("下载合成视频")
    expect(sup.by("casefile-wm")).to_contain_text("水印")
    page.evaluate(SEEN_JS)
    button.click()
    link = sup.by("casefile-wm-ready")
    expect(link).to_have_text("下载带水印的导出", timeout=60_000)
    seen: list[str] = page.evaluate("window.wmSeen")
    assert seen and all(t.startswith("正在生成带水印的导出…") and t.endswith("%") for t in seen)
    expect(sup.by("casefile-wm-progress")).to_have_count(0)
    expect(sup.by("casefile-wm-error")).to_have_count(0)
    sup.shot("supervise-watermarked-export")
    with page.expect_download() as info:
        link.click()
    data = Path(info.value.path()).read_bytes()
    assert info.value.suggested_filename == f"{CASE}_合成录像.mp4"
    link_size = link.get_attribute("data-size")
    assert len(data) == int(link_size or 0) > 0
    assert hashlib.sha256(data).hexdigest() != made["sha256"]  # the person's own copy
    events: list[dict[str, Any]] = http.call("GET", f"/api/cases/{CASE}", token)["events"]
    [event] = [e for e in events if e["type"] == "casefile.downloaded"]
    assert event["data"]["watermark"].startswith("导出 · 郑监督 · 市市场监督管理局 · ")
    sup.set_lang("en")
    expect(link).to_have_text("Download your watermarked export")
    sup.set_lang("zh-CN")
    # A reloaded page offers the copy made, without asking again (no click, no new job).
    page.reload()
    again = sup.by("casefile-wm-ready")
    expect(again).to_have_text("下载带水印的导出")
    assert again.get_attribute("data-size") == link_size
