"""Watermarked viewing (issue #18): a replay marks every tile with its viewer's name,
department and the running time (web_client/static/watermark.js), faint, diagonal,
hidden from assistive technology and from the pointer; the identity comes from the
server's replay description. Screenshot: docs/screenshots/replay-watermark.png."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from signaling.auth import TokenService
from tests.conftest import ServerProcess

from .conftest import Person
from .test_replay import SETTLED_JS, record, server  # noqa: F401 (that module's server)

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


def test_every_replayed_tile_names_its_viewer(
    people: Callable[..., Person],
    tokens: TokenService,
    server: ServerProcess,  # noqa: F811 (test_replay's fixture)
) -> None:
    sid = record(server, tokens)["sid"]
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
