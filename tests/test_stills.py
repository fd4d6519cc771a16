"""Document stills: only a whole image of the declared type is kept, within bounds, and
it is served so that no browser takes it for anything else."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from .conftest import Tokens, auth
from .test_signaling_flow import start_session

STILL_MAX_SIDE = 8192  # as in signaling/casefile.py (the test states the promise itself)

Client = TestClient[Any, Any]


def image(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    picture = Image.new("RGB", size, (200, 30, 30))
    picture.paste((10, 10, 220), (0, 0, size[0] // 2, size[1] // 2))
    picture.save(out, fmt)
    return out.getvalue()


def png_claiming(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose header says width × height (8-bit grey) and whose data is ``idat``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def bomb() -> bytes:
    """~20 MB that claim 100,000 × 100,000 pixels (10 GB decoded): rows of zeros,
    compressed; padded to the upload limit with more zero rows stored uncompressed."""
    squeezed = zlib.compressobj(1)
    zero = bytes(64 * 1024 * 1024)
    idat = squeezed.compress(zero) + squeezed.compress(zero)
    idat += squeezed.flush(zlib.Z_FULL_FLUSH)
    filler = zlib.compressobj(0)
    idat += filler.compress(bytes(19 * 1024 * 1024))[2:]  # raw deflate, no second header
    return png_claiming(100_000, 100_000, idat)


JPEG = image("JPEG")
PNG = image("PNG")
WEBP = image("WEBP")

GOOD = [
    pytest.param("image/jpeg", JPEG, id="jpeg"),
    pytest.param("image/png", PNG, id="png"),
    pytest.param("image/webp", WEBP, id="webp"),
    pytest.param("image/jpeg", image("JPEG", (4032, 3024)), id="phone-photo"),
]


@pytest.mark.parametrize(("ctype", "data"), GOOD)
async def test_a_real_image_is_kept_and_served_as_itself(
    client: Client, tok: Tokens, ctype: str, data: bytes
) -> None:
    sid = await start_session(client, tok)
    res = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=data,
        headers={**auth(tok.clerk()), "Content-Type": ctype},
    )
    assert res.status == 201, await res.text()
    snap = await res.json()
    got = await client.get(snap["url"], headers=auth(tok.clerk()))
    assert got.status == 200 and await got.read() == data
    assert got.headers["Content-Type"] == ctype
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in got.headers["Content-Security-Policy"]


HTML = b"<html><script>alert(document.cookie)</script></html>"
BAD = [
    pytest.param("image/webp", b"RIFF" + HTML, "invalid_image", id="riff-then-html"),
    pytest.param(
        "image/webp",
        b"RIFF" + struct.pack("<I", len(HTML) + 4) + b"WEBP" + HTML,
        "invalid_image",
        id="riff-webp-polyglot",
    ),
    pytest.param("image/jpeg", b"\xff\xd8\xff\xe0" + HTML, "invalid_image", id="jpeg-magic-html"),
    pytest.param("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "invalid_image", id="png-magic"),
    pytest.param("image/jpeg", JPEG[: len(JPEG) // 2], "invalid_image", id="truncated-jpeg"),
    pytest.param("image/png", PNG[:-20], "invalid_image", id="truncated-png"),
    pytest.param("image/webp", WEBP[: len(WEBP) - 10], "invalid_image", id="truncated-webp"),
    pytest.param(
        "image/png", PNG[:40] + bytes([PNG[40] ^ 0xFF]) + PNG[41:], "invalid_image", id="png-crc"
    ),
    pytest.param("image/png", JPEG, "invalid_image", id="jpeg-sent-as-png"),
    pytest.param("image/jpeg", WEBP, "invalid_image", id="webp-sent-as-jpeg"),
    pytest.param(
        "image/png", image("PNG", (STILL_MAX_SIDE + 1, 8)), "invalid_image", id="too-wide"
    ),
    pytest.param(
        "image/png",
        png_claiming(7000, 7000, zlib.compress(bytes(7001 * 64))),
        "invalid_image",
        id="too-many-pixels",
    ),
    pytest.param("image/gif", b"GIF89a" + b"\x00" * 32, "unsupported_media_type", id="gif"),
    pytest.param("text/html", HTML, "unsupported_media_type", id="html"),
]


@pytest.mark.parametrize(("ctype", "data", "code"), BAD)
async def test_what_is_not_a_whole_image_of_its_type_is_refused(
    client: Client, tok: Tokens, ctype: str, data: bytes, code: str
) -> None:
    sid = await start_session(client, tok)
    url = f"/api/sessions/{sid}/snapshots"
    res = await client.post(url, data=data, headers={**auth(tok.clerk()), "Content-Type": ctype})
    assert res.status == (415 if code == "unsupported_media_type" else 400), await res.text()
    assert (await res.json())["error"]["code"] == code
    listed = await client.get(url, headers=auth(tok.clerk()))
    assert (await listed.json())["snapshots"] == []


async def test_a_decompression_bomb_is_refused_before_it_is_decoded(
    client: Client, tok: Tokens
) -> None:
    data = bomb()
    assert 19 * 1024 * 1024 < len(data) <= 20 * 1024 * 1024
    sid = await start_session(client, tok)
    url = f"/api/sessions/{sid}/snapshots"
    res = await client.post(
        url, data=data, headers={**auth(tok.clerk()), "Content-Type": "image/png"}
    )
    assert res.status == 400, await res.text()
    body = await res.json()
    assert body["error"]["code"] == "invalid_image"
    assert "pixels" in body["error"]["message"]
    # The node is still serving (nothing decoded 10 GB).
    res = await client.post(
        url, data=PNG, headers={**auth(tok.clerk()), "Content-Type": "image/png"}
    )
    assert res.status == 201
