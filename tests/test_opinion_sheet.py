"""The joint-review opinion sheet (联审会办意见单) and a case's process tracking, through
the real API: a played history, its sheet's text extracted (pypdf) and compared with the
case's data, the sealed sheet in the case file checked by ``jointreview verify`` (and its
tampering found), a missing font reported, and ``GET /api/cases/{case}/track``."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pypdf import PdfReader

from jointreview import cli
from jointreview.app import create_app
from recording import sheet
from signaling.config import Config

from .conftest import Tokens, auth, make_config
from .images import tiny

Client = TestClient[Any, Any]
CASE = "GZ-2026-0815"
APPLICANT = "广州琶洲某贸易有限公司"
MATTER = "食品经营许可证变更"
WINDOW = "琶洲 3 号窗口"
MISSING = ["股东会决议原件", "法定代表人身份证复印件"]


def pdf_text(data: bytes) -> str:
    """The PDF's text, whitespace removed (a table cell wraps where it likes)."""
    assert data.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", "", "".join(page.extract_text() for page in reader.pages))


def embedded_fonts(data: bytes) -> list[dict[str, Any]]:
    """Every font of the PDF with its embedded file: the sheet needs no installed font."""
    reader = PdfReader(io.BytesIO(data))
    out = []
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            desc = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
            out.append({"base": str(font["/BaseFont"]), "file": "/FontFile2" in desc})
    return out


async def _post(client: Client, path: str, token: str, body: Any = None) -> dict[str, Any]:
    r = await client.post(path, json=body, headers=auth(token))
    assert r.status in (200, 201), await r.text()
    return dict(await r.json())


async def _played(client: Client, tok: Tokens, case: str = CASE) -> str:
    """A session: two departments invited, one accepts and files an opinion, the other
    declines with a reason; a still shown."""
    body = {"applicant_name": APPLICANT, "matter": MATTER, "window": WINDOW}
    sid = str((await _post(client, f"/api/cases/{case}/sessions", tok.clerk(), body))["session_id"])
    amr = await _post(client, f"/api/sessions/{sid}/invitations", tok.clerk(), {"dept": "city-amr"})
    tax = await _post(client, f"/api/sessions/{sid}/invitations", tok.clerk(), {"dept": "city-tax"})
    reviewer = tok.svc.issue(
        sub="rev-city-amr-1", role="reviewer", name="王建国", dept="city-amr", level="city"
    )
    other = tok.svc.issue(
        sub="rev-city-tax-1", role="reviewer", name="李娜", dept="city-tax", level="city"
    )
    await _post(client, f"/api/invitations/{amr['invitation_id']}/accept", reviewer)
    await _post(
        client, f"/api/invitations/{tax['invitation_id']}/decline", other, {"reason": "非本局事项"}
    )
    opinion = {"decision": "materials_missing", "missing": MISSING, "note": "补正后再受理"}
    await _post(client, f"/api/sessions/{sid}/opinions", reviewer, opinion)
    r = await client.post(
        f"/api/sessions/{sid}/snapshots",
        data=tiny("PNG"),
        headers={**auth(tok.clerk()), "Content-Type": "image/png"},
    )
    assert r.status == 201
    return sid


async def _sheet(client: Client, sid: str, token: str, status: int = 200) -> bytes:
    r = await client.get(f"/api/sessions/{sid}/opinion-sheet", headers=auth(token))
    assert r.status == status, await r.text()
    return await r.read()


async def _verify(config: Config, capsys: pytest.CaptureFixture[str], sid: str) -> tuple[int, str]:
    capsys.readouterr()
    args = ["verify", CASE, sid, "--data-dir", str(config.data_dir)]
    code = await asyncio.to_thread(cli.main, args)
    return code, capsys.readouterr().out


def _has_case_data(text: str) -> None:
    for fact in (CASE, APPLICANT, MATTER, WINDOW.replace(" ", ""), "陈晓", "王建国", "李娜"):
        assert fact in text, fact
    depts = ("市市场监督管理局", "市税务局")
    for fact in (*depts, "材料不全", "非本局事项", "补正后再受理", *MISSING):
        assert fact in text, fact
    assert "已接受" in text and "已拒绝" in text


async def test_the_sheet_is_sealed_into_the_case_file_and_verified(
    client: Client, tok: Tokens, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = await _played(client, tok)
    draft = await _sheet(client, sid, tok.clerk())
    text = pdf_text(draft)
    _has_case_data(text)
    assert "草稿DRAFT" in text and "未封存" in text
    # The applicant's link opens no sheet; a reviewer of another department none either.
    await _sheet(client, sid, tok.applicant(sid, CASE), 403)
    outsider = tok.reviewer("rev-district-planning-1", "district-planning", "district")
    await _sheet(client, sid, outsider, 404)

    await _post(client, f"/api/sessions/{sid}/end", tok.clerk())
    directory = config.data_dir / "archive" / CASE / sid
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    listed = {f["path"]: f for f in manifest["files"]}
    assert sheet.NAME in listed  # hashed in the manifest like every file of the case file
    r = await client.get(f"/api/sessions/{sid}/casefile", headers=auth(tok.supervisor()))
    entry = next(f for f in (await r.json())["files"] if f["path"] == sheet.NAME)
    assert entry["kind"] == "sheet" and entry["content_type"] == "application/pdf"
    assert entry["sha256"] == listed[sheet.NAME]["sha256"]
    sealed = await _sheet(client, sid, tok.supervisor())
    assert sealed == (directory / sheet.NAME).read_bytes()
    text = pdf_text(sealed)
    _has_case_data(text)
    head = manifest["timeline"]["head"]
    assert head in text and "草稿" not in text  # the seal: the sealed timeline's chain head
    assert embedded_fonts(sealed) == [{"base": "/MPDFAA+NotoSansCJKSC", "file": True}]
    # The reviewer who took part prints it too.
    assert await _sheet(client, sid, tok.reviewer()) == sealed

    code, out = await _verify(config, capsys, sid)
    assert code == 0, out
    # A sheet changed after sealing (the same size: a decision rewritten) is found.
    data = bytearray(sealed)
    at = data.index(b"/Title")
    data[at + 8] ^= 1
    (directory / sheet.NAME).write_bytes(bytes(data))
    code, out = await _verify(config, capsys, sid)
    assert code == 1 and f"{sheet.NAME}: SHA-256 differs from the manifest" in out, out


async def test_without_a_font_the_case_file_is_sealed_and_says_so(
    tmp_path: Path, tok: Tokens, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, opinion_sheet_font=tmp_path / "NotoSansCJK-Regular.ttc")
    tok = Tokens(tok.svc.__class__(config))
    async with TestClient(TestServer(create_app(config))) as client:
        sid = await _played(client, tok)
        r = await client.get(f"/api/sessions/{sid}/opinion-sheet", headers=auth(tok.clerk()))
        assert r.status == 503
        error = (await r.json())["error"]
        assert error["code"] == "font_unavailable" and "fonts-noto-cjk" in error["message"]
        await _post(client, f"/api/sessions/{sid}/end", tok.clerk())
        directory = config.data_dir / "archive" / CASE / sid
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        assert sheet.NAME not in {f["path"] for f in manifest["files"]}
        code, out = await _verify(config, capsys, sid)
        assert code == 0, out  # sealed all the same
        r = await client.get(f"/api/cases/{CASE}/track", headers=auth(tok.supervisor()))
        (tracked,) = (await r.json())["sessions"]
        (failed,) = [e for e in tracked["exceptions"] if e["type"] == "opinion_sheet.failed"]
        assert failed["type"] == "opinion_sheet.failed"
        assert failed["data"]["code"] == "font_unavailable"
        assert "fonts-noto-cjk" in failed["data"]["message"]
        assert tracked["sealed_at"] is not None and tracked["sheet_filed"] is False
    # The font installed afterwards: the sheet is printed from the sealed timeline, marked
    # as not part of the case file, with the seal's chain head.
    async with TestClient(TestServer(create_app(make_config(tmp_path)))) as client:
        text = pdf_text(await _sheet(client, sid, tok.clerk()))
        _has_case_data(text)
        assert "补打REPRINT" in text and manifest["timeline"]["head"] in text


async def test_the_track_lists_every_session_in_order(client: Client, tok: Tokens) -> None:
    first = await _played(client, tok)
    await _post(client, f"/api/sessions/{first}/end", tok.clerk())
    body = {"applicant_name": APPLICANT, "matter": MATTER}
    second = (await _post(client, f"/api/cases/{CASE}/sessions", tok.clerk(), body))["session_id"]
    await _post(client, f"/api/sessions/{second}/invitations", tok.clerk(), {"dept": "city-tax"})

    r = await client.get(f"/api/cases/{CASE}/track", headers=auth(tok.supervisor()))
    assert r.status == 200, await r.text()
    track = await r.json()
    assert [s["session"]["session_id"] for s in track["sessions"]] == [first, second]
    one, two = track["sessions"]
    answers = {i["dept"]: i for i in one["invitations"]}
    assert answers["city-amr"]["status"] == "accepted"
    assert answers["city-amr"]["responded_by"]["name"] == "王建国"
    assert answers["city-tax"]["status"] == "declined"
    assert answers["city-tax"]["reason"] == "非本局事项"
    assert all(i["responded_at"] >= i["created_at"] for i in one["invitations"])
    (opinion,) = one["opinions"]
    assert opinion["decision"] == "materials_missing" and opinion["missing"] == MISSING
    assert len(one["snapshots"]) == 1
    # The decline's exception, once the record has raised it (filed a moment after).
    assert all(
        e["type"] == "exception.raised" and e["data"]["kind"] == "invitation_declined"
        for e in one["exceptions"]
    )
    assert one["sealed_at"] is not None and one["sheet_filed"] is True and one["chain_head"]
    assert one["sheet_url"] == f"/api/sessions/{first}/opinion-sheet"
    assert two["session"]["status"] == "active" and two["sealed_at"] is None
    assert [i["status"] for i in two["invitations"]] == ["pending"]

    # A page at a time, oldest first.
    r = await client.get(f"/api/cases/{CASE}/track?limit=1", headers=auth(tok.clerk()))
    page = await r.json()
    assert [s["session"]["session_id"] for s in page["sessions"]] == [first]
    q = {"cursor": page["next_cursor"]}
    r = await client.get(f"/api/cases/{CASE}/track", params=q, headers=auth(tok.clerk()))
    page = await r.json()
    assert [s["session"]["session_id"] for s in page["sessions"]] == [second]
    assert page["next_cursor"] is None

    # A reviewer sees the sessions their department was invited to, nobody else's.
    reviewer = tok.reviewer()
    r = await client.get(f"/api/cases/{CASE}/track", headers=auth(reviewer))
    assert [s["session"]["session_id"] for s in (await r.json())["sessions"]] == [first]
    outsider = tok.reviewer("rev-district-planning-1", "district-planning", "district")
    r = await client.get(f"/api/cases/{CASE}/track", headers=auth(outsider))
    assert r.status == 404 and (await r.json())["error"]["code"] == "case_not_found"
    r = await client.get(f"/api/cases/{CASE}/track", headers=auth(tok.applicant(first, CASE)))
    assert r.status == 403
