"""Where each participant goes in the composite, and their burned-in name.

The layout is fixed for a whole export (a tile per person and source, in order of first
appearance): tiles that never move are what lets the renderer skip the unchanged ones,
and a viewer finds each person in the same place throughout. With a document (or
screen) track, the first one gets the large area on the left and the people a column on
the right; otherwise the people share a grid. Every rectangle is on even pixels: the
canvas is yuv420p, whose chroma planes are half size.

Names are drawn once per tile with Pillow into a small luma bitmap and an alpha mask,
then blended into the canvas (luma and chroma) whenever the tile is redrawn: no RGB
anywhere. The font is a CJK-capable one found on the system (names are Chinese first);
without Pillow or any font, tiles have no names.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

DOCUMENT_SOURCES = ("document", "screen")
FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Medium.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
FONT_GLOBS = ("/usr/share/fonts/**/*CJK*.tt[cf]", "/usr/share/fonts/**/*CJK*.otf")
LATIN_FALLBACK = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


def _even(v: float) -> int:
    return int(v) // 2 * 2


def fit(src_w: int, src_h: int, box: Rect) -> Rect:
    """The largest rectangle of the source's shape inside ``box``, centred (letterbox:
    a case file shows the whole picture, never a crop)."""
    scale = min(box.w / max(src_w, 1), box.h / max(src_h, 1))
    w, h = max(2, _even(src_w * scale)), max(2, _even(src_h * scale))
    return Rect(box.x + _even((box.w - w) / 2), box.y + _even((box.h - h) / 2), w, h)


def _grid(n: int, x: int, y: int, w: int, h: int, gap: int) -> list[Rect]:
    """``n`` equal cells in a ``w`` x ``h`` area, the column count that makes them largest
    for 4:3 pictures."""
    if n <= 0:
        return []
    best, best_cols = -1.0, 1
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        cw, ch = (w - gap * (cols - 1)) / cols, (h - gap * (rows - 1)) / rows
        area = min(cw, ch * 4 / 3) * min(ch, cw * 3 / 4)
        if area > best:
            best, best_cols = area, cols
    cols = best_cols
    rows = math.ceil(n / cols)
    cw, ch = _even((w - gap * (cols - 1)) / cols), _even((h - gap * (rows - 1)) / rows)
    cells = []
    for i in range(n):
        r, c = divmod(i, cols)
        in_row = min(cols, n - r * cols)  # a short last row is centred
        x0 = x + _even((w - in_row * cw - (in_row - 1) * gap) / 2) + c * (cw + gap)
        y0 = y + _even((h - rows * ch - (rows - 1) * gap) / 2) + r * (ch + gap)
        cells.append(Rect(_even(x0), _even(y0), cw, ch))
    return cells


def plan(sources: list[str], width: int, height: int, gap: int = 4) -> list[Rect]:
    """A rectangle per tile (``sources``: each tile's source, in tile order)."""
    docs = [i for i, s in enumerate(sources) if s in DOCUMENT_SOURCES]
    if not docs:
        return _grid(len(sources), 0, 0, width, height, gap)
    main = docs[0]
    others = [i for i in range(len(sources)) if i != main]
    cols = 1 if len(others) <= 4 else 2
    side = _even(width / 4) * cols if others else 0
    rects: list[Rect | None] = [None] * len(sources)
    rects[main] = Rect(0, 0, _even(width - side - (gap if side else 0)), height)
    cells = _grid(len(others), width - side, 0, side, height, gap) if others else []
    for i, cell in zip(others, cells, strict=True):
        rects[i] = cell
    return [r for r in rects if r is not None]


# -- names --------------------------------------------------------------------------------


def find_font(explicit: str | None = None) -> str | None:
    """A font that can draw Chinese names; Latin-only DejaVu as a last resort."""
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    for path in FONT_CANDIDATES:
        if os.path.isfile(path):
            return path
    for pattern in FONT_GLOBS:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[0]
    return LATIN_FALLBACK if os.path.isfile(LATIN_FALLBACK) else None


def _load_font(path: str, size: int) -> Any:
    from PIL import ImageFont

    font = ImageFont.truetype(path, size)
    if path.endswith(".ttc"):
        # A CJK collection holds one face per region (JP, KR, SC, TC, HK): names here are
        # Simplified Chinese first.
        for index in range(8):
            try:
                face = ImageFont.truetype(path, size, index=index)
            except OSError:
                break
            if " SC" in " ".join(str(part) for part in face.getname()):
                return face
    return font


@dataclass
class Label:
    """A name bar for one tile: blend ``alpha``/``premul`` into the tile's bottom rows."""

    y: int  # canvas rows [y, y + h)
    x: int
    alpha: np.ndarray  # uint16 0..256, luma size
    premul: np.ndarray  # uint16, luma colour * alpha (0..256 scale)
    alpha_c: np.ndarray  # uint16 0..256, chroma size

    def draw(self, y_plane: np.ndarray, u_plane: np.ndarray, v_plane: np.ndarray) -> None:
        h, w = self.alpha.shape
        region = y_plane[self.y : self.y + h, self.x : self.x + w]
        region[:] = (region * (256 - self.alpha) + self.premul) >> 8
        ch, cw = self.alpha_c.shape
        cy, cx = self.y // 2, self.x // 2
        keep = 256 - self.alpha_c
        grey = 128 * self.alpha_c
        for plane in (u_plane, v_plane):
            part = plane[cy : cy + ch, cx : cx + cw]
            part[:] = (part * keep + grey) >> 8


class Labeler:
    """Renders name bars with one font (or none: ``draw`` returns None)."""

    def __init__(self, font_path: str | None) -> None:
        self.font_path = font_path
        self._fonts: dict[int, Any] = {}
        try:
            import PIL  # noqa: F401
        except ImportError:  # no Pillow: an export without names beats no export
            self.font_path = None

    @property
    def enabled(self) -> bool:
        return self.font_path is not None

    def _font(self, size: int) -> Any:
        if size not in self._fonts:
            assert self.font_path is not None
            self._fonts[size] = _load_font(self.font_path, size)
        return self._fonts[size]

    def label(self, text: str, tile: Rect) -> Label | None:
        if not self.enabled or not text:
            return None
        from PIL import Image, ImageDraw

        size = max(10, min(28, tile.h // 14))
        bar_h = _even(size * 1.6)
        font = self._font(size)
        pad = size // 2
        room = tile.w - 2 * pad
        while len(text) > 1 and font.getlength(text) > room:
            text = text[:-2] + "…"  # too long for the tile: cut with an ellipsis
        glyphs = Image.new("L", (tile.w, bar_h), 0)
        ImageDraw.Draw(glyphs).text((pad, bar_h // 2), text, fill=255, font=font, anchor="lm")
        g = np.asarray(glyphs, dtype=np.float32) / 255.0
        box = 0.55  # the bar darkens what is under it; the text is opaque white
        a = 1 - (1 - box) * (1 - g)
        premul = 16 * box * (1 - g) + 235 * g
        ac = a.reshape(bar_h // 2, 2, tile.w // 2, 2).mean(axis=(1, 3))
        return Label(
            y=tile.y + tile.h - bar_h,
            x=tile.x,
            alpha=np.round(a * 256).astype(np.uint16),
            premul=np.round(premul * 256).astype(np.uint16),
            alpha_c=np.round(ac * 256).astype(np.uint16),
        )
