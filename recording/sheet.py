"""The joint-review opinion sheet (联审会办意见单): one session's facts as a printable PDF.

What it shows: the case, the matter, the applicant, the window and the clerk; each
invited department (or named reviewer) with when it was invited, who answered, how and
when; each reviewer's opinion (decision, missing materials, referral, note, time); and
the seal: the head of the session timeline's hash chain (``archive.chain``) over every
event up to sealing, with their count. The sheet is a file of the case file
(``opinion_sheet.pdf``), written while sealing before the manifest lists the files, so
the manifest vouches for it by its SHA-256 like any other file, and the hash it shows is
the one ``manifest.json``'s ``timeline.head`` holds (the manifest's own hash, in the
store's ``archive.sealed``, cannot be printed in a file the manifest lists).

A sheet made before sealing, on demand, is marked 草稿 DRAFT and shows no seal; one
made for a session sealed without a sheet is marked as not part of the case file.

Pure and blocking (fontTools and fpdf2, no asyncio): run it on a worker thread. The
facts come from the session's events as plain dictionaries, so nothing here imports the
signaling layer; department names come in as a mapping.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import sheet_font
from .sheet_font import FontMissing

NAME = "opinion_sheet.pdf"
TITLE = "联审会办意见单"
TITLE_EN = "Joint-Review Opinion Sheet"
DRAFT = "草稿 DRAFT：会办未结束或未封存，非案卷文件"
REPRINT = "补打 REPRINT：本单不在封存的案卷中，据封存的时间线生成"

DECISIONS = {
    "approve": "同意办理 Approve",
    "materials_missing": "材料不全，需补正 Materials missing",
    "refer": "建议转其他部门 Refer",
    "note": "仅作说明 Note",
}
ANSWERS = {
    "pending": "待通知 Pending",
    "ringing": "未应答 Not answered yet",
    "unanswered": "无人应答 Unanswered",
    "accepted": "已接受 Accepted",
    "declined": "已拒绝 Declined",
    "cancelled": "已取消 Cancelled",
}
LEVELS = {"city": "市级", "district": "区级"}
NEXT: dict[str, Any] = {"new_x": "LMARGIN", "new_y": "NEXT"}  # a paragraph, then the next line

__all__ = ["NAME", "FontMissing", "Sheet", "build", "facts", "render"]


@dataclass
class Opinion:
    author: str
    dept: str | None
    decision: str
    at: float | None
    missing: list[str] = field(default_factory=list)
    refer_to: str | None = None
    note: str | None = None
    author_sub: str | None = None


@dataclass
class Invited:
    target: str  # the department's name (and level), or the named reviewer
    invited_at: float | None
    status: str
    answered_at: float | None = None
    answered_by: str | None = None
    answerer_sub: str | None = None
    reason: str | None = None
    opinions: list[Opinion] = field(default_factory=list)


@dataclass
class Sheet:
    case_id: str
    session_id: str
    matter: str | None
    applicant: str | None
    window: str | None
    clerk: str | None
    started_at: float | None
    ended_at: float | None
    invited: list[Invited]
    chain_head: str | None  # None: not sealed (a draft)
    events: int
    mark: str | None = None  # DRAFT / REPRINT, or None for the sealed sheet


def _who(actor: Mapping[str, Any] | None) -> str | None:
    if not actor:
        return None
    name, sub = actor.get("name"), actor.get("sub")
    return f"{name}（{sub}）" if name and sub and name != sub else (name or sub)


def _dept(dept: str | None, level: str | None, names: Mapping[str, str]) -> str:
    label = names.get(dept or "", dept or "")
    return f"{label}（{LEVELS[level]}）" if level in LEVELS else label


def facts(
    session: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    chain_head: str | None,
    dept_names: Mapping[str, str] | None = None,
    mark: str | None = None,
) -> Sheet:
    """The sheet's facts from the session record and its events in log order."""
    names = dept_names or {}
    invited: dict[str, Invited] = {}
    opinions: list[Opinion] = []
    status = {"accepted", "declined", "cancelled", "unanswered"}
    for e in events:
        kind, data = str(e.get("type", "")), e.get("data") or {}
        iid = data.get("invitation_id")
        if kind == "invitation.created" and iid:
            if data.get("reviewer"):
                target = data.get("reviewer_name") or data["reviewer"]
            else:
                target = _dept(data.get("dept"), data.get("level"), names)
            invited[iid] = Invited(target, data.get("created_at") or e.get("ts"), "pending")
        elif kind == "invitation.rang" and iid in invited:
            invited[iid].status = "ringing"
        elif kind.startswith("invitation.") and kind.split(".", 1)[1] in status and iid in invited:
            inv = invited[iid]
            inv.status = kind.split(".", 1)[1]
            if inv.status != "unanswered":
                inv.answered_at = data.get("responded_at") or e.get("ts")
                inv.answered_by = _who(e.get("actor")) if inv.status != "cancelled" else None
                inv.answerer_sub = (e.get("actor") or {}).get("sub")
                inv.reason = data.get("reason")
        elif kind == "opinion.filed":
            actor = e.get("actor") or {}
            opinions.append(
                Opinion(
                    author=_who(actor) or "?",
                    dept=actor.get("dept"),
                    decision=str(data.get("decision")),
                    at=data.get("created_at") or e.get("ts"),
                    missing=list(data.get("missing") or []),
                    refer_to=_dept(data["refer_to"], None, names) if data.get("refer_to") else None,
                    note=data.get("note"),
                    author_sub=actor.get("sub"),
                )
            )
    rows = list(invited.values())
    for op in opinions:  # each under the invitation its author accepted
        home = next((i for i in rows if i.answerer_sub and i.answerer_sub == op.author_sub), None)
        if home is None:
            home = Invited(_dept(op.dept, None, names), None, "accepted", answered_by=op.author)
            home.answerer_sub = op.author_sub
            rows.append(home)
        home.opinions.append(op)
    created_by = session.get("created_by")
    return Sheet(
        case_id=str(session.get("case_id")),
        session_id=str(session.get("session_id")),
        matter=session.get("matter"),
        applicant=session.get("applicant_name"),
        window=session.get("window"),
        clerk=_who(created_by if isinstance(created_by, Mapping) else None),
        started_at=session.get("created_at"),
        ended_at=session.get("ended_at"),
        invited=rows,
        chain_head=chain_head,
        events=len(events),
        mark=mark,
    )


def zone(name: str | None) -> tzinfo | None:
    """The time zone the sheet's times are printed in (None: the server's own)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _time(t: float | None, tz: tzinfo | None) -> str:
    if t is None:
        return "—"
    return datetime.fromtimestamp(float(t), tz).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _offset(tz: tzinfo | None) -> str:
    stamp = datetime.now(tz).astimezone(tz).strftime("%z")  # +0800
    return f"UTC{stamp[:3]}:{stamp[3:]}"


def _opinion_text(op: Opinion, tz: tzinfo | None) -> str:
    lines = [f"{DECISIONS.get(op.decision, op.decision)}（{op.author}，{_time(op.at, tz)}）"]
    if op.missing:
        lines.append("需补正：" + "；".join(op.missing))
    if op.refer_to:
        lines.append(f"建议转交：{op.refer_to}")
    if op.note:
        lines.append(f"说明：{op.note}")
    return "\n".join(lines)


def _answer_text(inv: Invited, tz: tzinfo | None) -> str:
    parts = [ANSWERS.get(inv.status, inv.status)]
    if inv.answered_at is not None:
        parts.append(_time(inv.answered_at, tz))
    if inv.reason:
        parts.append(f"理由：{inv.reason}")
    return "\n".join(parts)


def _rows(sheet: Sheet, tz: tzinfo | None) -> tuple[list[tuple[str, str]], list[list[str]]]:
    info = [
        ("办件编号 Case No.", sheet.case_id),
        ("办理事项 Matter", sheet.matter or "—"),
        ("申请人 Applicant", sheet.applicant or "—"),
        ("受理窗口 Window", sheet.window or "—"),
        ("窗口工作人员 Clerk", sheet.clerk or "—"),
        ("会办会话 Session", sheet.session_id),
        ("开始 Started", _time(sheet.started_at, tz)),
        ("结束 Ended", _time(sheet.ended_at, tz)),
    ]
    depts = []
    for inv in sheet.invited:
        answer = [f"邀请：{_time(inv.invited_at, tz)}", _answer_text(inv, tz)]
        if inv.answered_by:
            answer.insert(1, f"审批人员：{inv.answered_by}")
        opinions = "\n\n".join(_opinion_text(o, tz) for o in inv.opinions) or "—"
        depts.append([inv.target, "\n".join(answer), opinions])
    return info, depts


DEPT_HEADINGS = ["部门 Department", "邀请与应答 Invitation and answer", "会办意见 Opinion"]
SECTION_DEPTS = "各部门会办情况 Departments and opinions"
SECTION_SEAL = "封存 Seal"
NOT_SEALED = "未封存 Not sealed"
SEAL_LABEL = "时间线哈希链头 Timeline chain head (SHA-256)："
FOOTER = "{where}　第 {page} 页 共 {pages} 页"


def render(sheet: Sheet, font: sheet_font.GlyphSource, tz: tzinfo | None = None) -> bytes:
    """The sheet as PDF bytes, its font a subset of ``font`` embedded."""
    from fpdf.enums import VAlign, WrapMode
    from fpdf.fonts import FontFace

    info, depts = _rows(sheet, tz)
    seal = [SEAL_LABEL, sheet.chain_head] if sheet.chain_head else [NOT_SEALED]
    seal += [f"事件数 Events：{sheet.events}", f"时间 Times：{_offset(tz)}"]
    where = f"{sheet.case_id} · {sheet.session_id}"
    # Every character the page shows, so the font holds each one.
    texts = [TITLE, TITLE_EN, sheet.mark or "", SECTION_DEPTS, SECTION_SEAL, *seal, *DEPT_HEADINGS]
    texts += [v for row in info for v in row] + [v for row in depts for v in row]
    texts += [FOOTER.format(where=where, page="0123456789", pages="")]
    ttf = font.subset_ttf("".join(texts))
    pdf = _SheetPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_margins(15, 15, 15)
    pdf.set_title(f"{TITLE} {sheet.case_id} {sheet.session_id}")
    pdf.set_creator("jointreview")
    pdf.set_subject(sheet.chain_head or "draft")
    pdf.footer_text = where
    heading = FontFace(emphasis="", fill_color=(232, 236, 242))
    table_style: dict[str, Any] = {
        "text_align": "LEFT",
        "v_align": VAlign.T,
        "wrapmode": WrapMode.CHAR,
        "padding": 1.5,
    }
    with tempfile.TemporaryDirectory(prefix="jr-sheet-") as tmp:
        path = os.path.join(tmp, "sheet-font.ttf")
        Path(path).write_bytes(ttf)
        pdf.add_font("cjk", fname=path)
        pdf.set_font("cjk", size=10)
        pdf.add_page()
        _head(pdf, sheet)
        with pdf.table(
            col_widths=(45, 135), first_row_as_headings=False, line_height=6, **table_style
        ) as table:
            for label, value in info:
                row = table.row()
                row.cell(label, style=heading)
                row.cell(value)
        pdf.ln(5)
        _section(pdf, SECTION_DEPTS)
        with pdf.table(
            col_widths=(40, 60, 80), headings_style=heading, line_height=5, **table_style
        ) as table:
            table.row(DEPT_HEADINGS)
            for cells in depts or [["—"] * 3]:
                table.row(cells)
        pdf.ln(5)
        _section(pdf, SECTION_SEAL)
        for line in seal:
            pdf.multi_cell(0, 5, line, align="L", wrapmode=WrapMode.CHAR, **NEXT)
        return bytes(pdf.output())


class _SheetPDF:  # a subclass is made lazily, so importing this module loads no fpdf2
    def __new__(cls, **kwargs: Any) -> Any:
        from fpdf import FPDF

        class SheetPDF(FPDF):
            footer_text = ""

            def footer(self) -> None:
                self.set_y(-12)
                self.set_font(size=8)
                self.set_text_color(110)
                text = FOOTER.format(where=self.footer_text, page=self.page_no(), pages="{nb}")
                self.cell(0, 5, text, align="C")
                self.set_text_color(0)

        return SheetPDF(**kwargs)


def _head(pdf: Any, sheet: Sheet) -> None:
    pdf.set_font(size=18)
    pdf.cell(0, 10, TITLE, align="C", **NEXT)
    pdf.set_font(size=10)
    pdf.set_text_color(90)
    pdf.cell(0, 6, TITLE_EN, align="C", **NEXT)
    pdf.set_text_color(0)
    if sheet.mark:
        pdf.set_text_color(190, 30, 30)
        pdf.set_font(size=11)
        pdf.multi_cell(0, 6, sheet.mark, align="C", **NEXT)
        pdf.set_text_color(0)
        pdf.set_font(size=10)
    pdf.ln(3)


def _section(pdf: Any, title: str) -> None:
    pdf.set_font(size=12)
    pdf.cell(0, 8, title, **NEXT)
    pdf.set_font(size=9)


def build(
    sheet: Sheet, font_path: str | os.PathLike[str] | None = None, tz_name: str | None = None
) -> bytes:
    """The PDF of ``sheet``; ``FontMissing`` when no CJK font can draw it."""
    return render(sheet, sheet_font.source(font_path), zone(tz_name))


def write(directory: Path, data: bytes) -> Path:
    """Put the sheet into the session's folder, whole or not at all."""
    path = directory / NAME
    tmp = directory / f"{NAME}.part"  # never listed (archive.content_files)
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
