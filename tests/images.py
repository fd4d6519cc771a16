"""Small real images for tests that upload document stills (the server decodes them)."""

from __future__ import annotations

import io

from PIL import Image


def tiny(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (40, 120, 200)).save(out, fmt)
    return out.getvalue()
