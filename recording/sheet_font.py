"""The CJK font of the opinion sheet: a small TrueType font holding just the characters
of one sheet, made from Debian's Noto Sans CJK (``fonts-noto-cjk``).

Noto Sans CJK is an OpenType collection with CFF (PostScript) outlines. A PDF can embed
those as they are (CIDFontType0), but common text extractors then read the sheet badly
(pypdf spaces every character apart, pdfminer.six reads nothing), and an approval
system indexes the sheets it fetches. So each glyph the sheet needs is converted once
per process to TrueType quadratic outlines (fontTools' cu2qu, within 1/1000 em) and the
sheet gets a TrueType font of exactly its characters, which fpdf2 embeds as a subset
(CIDFontType2 with a ToUnicode map): the PDF renders on a machine without any font,
and its text extracts as written.

No font installed is ``FontMissing`` with what to install, never a crash or a silently
empty sheet.
"""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# fonts-noto-cjk; Regular first. A collection holds one face per region: SC is picked.
CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Medium.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
)
GLOBS = ("/usr/share/fonts/**/NotoSansCJK*.tt[cf]", "/usr/share/fonts/**/NotoSansCJK*.otf")
FACE = "SC"  # Simplified Chinese glyph forms
INSTALL_HINT = "install the Debian package fonts-noto-cjk (apt-get install fonts-noto-cjk)"


class FontMissing(RuntimeError):
    """No CJK font to draw the sheet with: what to install, or which file is wrong."""

    code = "font_unavailable"


def find_font(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The CJK font file to use (``explicit``: the configured one, which must exist)."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FontMissing(
                f"the opinion sheet's font {path} does not exist; set opinion_sheet_font to "
                f"a Noto Sans CJK file, or leave it empty and {INSTALL_HINT}"
            )
        return path
    for candidate in CANDIDATES:
        if os.path.isfile(candidate):
            return Path(candidate)
    for pattern in GLOBS:
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return Path(found[0])
    raise FontMissing(f"no CJK font for the opinion sheet (Noto Sans CJK): {INSTALL_HINT}")


@dataclass
class _Glyph:
    program: Any  # fontTools Glyph (TrueType outlines)
    advance: int
    lsb: int


class GlyphSource:
    """One face of a CJK font, opened lazily and never changed; its glyphs converted to
    TrueType as sheets ask for them (cached: a sheet of known characters costs little)."""

    def __init__(self, path: Path) -> None:
        from fontTools.ttLib import TTFont, TTLibError

        self.path = path
        try:
            self.font = TTFont(str(path), fontNumber=_face_index(path), lazy=True)
            self.cmap: dict[int, str] = self.font.getBestCmap() or {}
        except (OSError, TTLibError) as exc:
            raise FontMissing(f"the opinion sheet's font {path} is not readable: {exc}") from exc
        head, hhea = self.font["head"], self.font["hhea"]
        self.upem = int(head.unitsPerEm)
        self.ascent, self.descent = int(hhea.ascent), int(hhea.descent)
        self.family = _family(self.font)
        self._glyphs: dict[str, _Glyph] = {}
        self._lock = threading.Lock()  # sheets are built on worker threads

    def _convert(self, name: str) -> _Glyph:
        from fontTools.pens.cu2quPen import Cu2QuPen
        from fontTools.pens.ttGlyphPen import TTGlyphPen

        glyphs = self.font.getGlyphSet()
        pen = TTGlyphPen(None)
        # CFF contours run counter-clockwise, TrueType's clockwise.
        glyphs[name].draw(Cu2QuPen(pen, self.upem / 1000, reverse_direction=True))
        advance, lsb = self.font["hmtx"][name]
        return _Glyph(pen.glyph(), int(advance), int(lsb))

    def subset_ttf(self, text: str) -> bytes:
        """A TrueType font with the glyphs of ``text`` (characters the font lacks are
        left out: fpdf2 then draws nothing for them, and says so in its log)."""
        from fontTools.fontBuilder import FontBuilder

        chars = sorted({ord(c) for c in text if ord(c) in self.cmap} | {0x20})
        names = [".notdef", *sorted({self.cmap[c] for c in chars} - {".notdef"})]
        with self._lock:
            for name in names:
                if name not in self._glyphs:
                    self._glyphs[name] = self._convert(name)
            picked = {n: self._glyphs[n] for n in names}
        fb = FontBuilder(self.upem, isTTF=True)
        fb.setupGlyphOrder(names)
        fb.setupCharacterMap({c: self.cmap[c] for c in chars})
        fb.setupGlyf({n: g.program for n, g in picked.items()})
        fb.setupHorizontalMetrics({n: (g.advance, g.lsb) for n, g in picked.items()})
        fb.setupHorizontalHeader(ascent=self.ascent, descent=self.descent)
        fb.setupNameTable({"familyName": self.family, "styleName": "Regular"})
        fb.setupOS2(
            sTypoAscender=self.ascent,
            sTypoDescender=self.descent,
            usWinAscent=self.ascent,
            usWinDescent=-self.descent,
            fsType=0,  # the font's licence (SIL OFL) allows embedding
        )
        fb.setupPost()
        from io import BytesIO

        out = BytesIO()
        fb.save(out)
        return out.getvalue()


def _face_index(path: Path) -> int:
    """The Simplified Chinese face of a collection (0 for a single font)."""
    if path.suffix.lower() not in (".ttc", ".otc"):
        return 0
    from fontTools.ttLib import TTCollection

    collection = TTCollection(str(path), lazy=True)
    try:
        for index, face in enumerate(collection.fonts):
            if _family(face).endswith(f" {FACE}"):
                return index
    finally:
        collection.close()
    return 0


def _family(font: Any) -> str:
    name = font["name"].getDebugName(1) or "NotoSansCJK"
    return str(name)


_sources: dict[Path, GlyphSource] = {}
_sources_lock = threading.Lock()


def source(explicit: str | os.PathLike[str] | None = None) -> GlyphSource:
    """The process's glyph source for the configured (or found) font."""
    path = find_font(explicit)
    with _sources_lock:
        found = _sources.get(path)
        if found is None:
            found = _sources[path] = GlyphSource(path)
        return found
