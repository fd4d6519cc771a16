"""``jointreview verify --audit``: does each audit chain under ``<data_dir>/audit`` still
hold together? (The chain's rules: ``signaling.audit``.)

Each problem names the file, the line and the seq: ``hash mismatch`` (an entry edited),
``broken link`` (an entry's ``prev`` is not the hash of the one before it: an entry
edited with its hash recomputed, or replaced), ``missing seq a-b`` (entries removed; at a
file boundary, a day file removed outside retention), ``out of order`` (entries moved),
``not an entry`` (a line that is not an entry).

Not problems, but notes: the oldest files deleted by retention (the oldest kept file's
first ``prev`` is the last hash an ``audit.retention`` entry recorded for them), a torn
last line (a write a crash cut short, which the next start ends and names in an
``audit.torn`` entry), and a torn line so named. Removing whole entries from the end of
a chain leaves no trace in it: compare the head this prints with one kept elsewhere
(the node logs ``audit: chain … head …`` every hour).

Sans-IO: ``verify_chain`` takes the files' bytes; ``verify_root`` reads them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit import day_files, entry_hash, genesis


@dataclass
class AuditReport:
    chain: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: int = 0
    files: int = 0
    first_seq: int | None = None
    head_seq: int | None = None
    head: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Line:
    file: str
    n: int  # 1-based line number in its file
    entry: dict[str, Any] | None
    raw: bytes
    torn: bool = False  # the very last bytes of the chain, without their newline

    @property
    def where(self) -> str:
        seq = f" (seq {self.entry.get('seq')})" if self.entry is not None else ""
        return f"{self.file} line {self.n}{seq}"


def _lines(files: list[tuple[str, bytes]]) -> list[_Line]:
    out: list[_Line] = []
    for i, (name, data) in enumerate(files):
        pieces = data.split(b"\n")
        tail = pieces.pop()  # b"" when the file ends with a newline
        for n, raw in enumerate(pieces, start=1):
            if raw.strip():
                out.append(_Line(name, n, _parse(raw), raw))
        if tail:
            last = i == len(files) - 1
            out.append(_Line(name, len(pieces) + 1, _parse(tail), tail, torn=last))
    return out


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    ok = isinstance(entry, dict) and isinstance(entry.get("seq"), int)
    return entry if ok and all(isinstance(entry.get(k), str) for k in ("prev", "hash")) else None


def _span(a: int, b: int) -> str:
    return f"seq {a}" if a == b else f"seq {a}-{b}"


def verify_chain(chain: str, files: list[tuple[str, bytes]]) -> AuditReport:
    """``files``: the chain's day files in order, each ``(name, content)``."""
    report = AuditReport(chain, files=len(files))
    lines = _lines(files)
    entries = [x for x in lines if x.entry is not None]
    seqs = {int(x.entry["seq"]) for x in entries if x.entry is not None}
    torn_named: set[tuple[str, Any, Any]] = set()
    retained: dict[int, dict[str, Any]] = {}  # last_seq of a deleted file -> its facts
    for x in entries:
        assert x.entry is not None
        detail = x.entry.get("detail") or {}
        if x.entry.get("action") == "audit.torn":
            torn_named.add((str(x.entry.get("object")), detail.get("line"), detail.get("sha256")))
        if x.entry.get("action") == "audit.retention":
            for facts in detail.get("deleted") or []:
                if isinstance(facts, dict) and isinstance(facts.get("last_seq"), int):
                    retained[facts["last_seq"]] = facts
    names = {name for name, _ in files}
    expected: int | None = None
    prev: _Line | None = None
    for x in lines:
        if x.entry is None:
            digest = hashlib.sha256(x.raw).hexdigest()
            if (x.file, x.n, digest) in torn_named:
                report.notes.append(f"{x.file} line {x.n}: a torn write, named at a restart")
            elif x.torn:
                report.notes.append(
                    f"{x.file} line {x.n}: torn last line (a write cut short by a crash, "
                    "or being written now); not tampering"
                )
            else:
                report.problems.append(f"{x.where}: not an entry")
            continue
        e = x.entry
        seq = int(e["seq"])
        report.entries += 1
        body = {k: v for k, v in e.items() if k not in ("prev", "hash")}
        if entry_hash(str(e["prev"]), body) != e["hash"]:
            report.problems.append(f"{x.where}: hash mismatch (the entry was edited)")
        if expected is None:
            report.first_seq = seq
            _check_start(report, x, seq, chain, retained, names)
        elif seq == expected:
            if prev is not None and prev.entry is not None and e["prev"] != prev.entry["hash"]:
                report.problems.append(
                    f"{x.where}: broken link (prev is not the hash of {prev.where}: "
                    "an entry replaced, or edited and its hash recomputed)"
                )
        elif seq > expected and not any(s in seqs for s in range(expected, seq)):
            gap = _span(expected, seq - 1)
            if prev is not None and prev.file != x.file:
                report.problems.append(
                    f"{x.where}: missing {gap} between {prev.file} and {x.file} "
                    "(entries or a day file removed outside retention)"
                )
            else:
                report.problems.append(f"{x.where}: missing {gap} (entries removed)")
        else:
            after = f" after seq {expected - 1}" if expected > 1 else ""
            report.problems.append(f"{x.where}: out of order (seq {seq}{after})")
        expected = max(expected or 0, seq + 1)
        prev = x
        report.head_seq, report.head = seq, str(e["hash"])
    return report


def _check_start(
    report: AuditReport,
    x: _Line,
    seq: int,
    chain: str,
    retained: dict[int, dict[str, Any]],
    names: set[str],
) -> None:
    assert x.entry is not None
    if seq == 1:
        if x.entry["prev"] != genesis(chain):
            report.problems.append(f"{x.where}: broken link (the chain's first entry)")
        return
    facts = retained.get(seq - 1)
    if facts is not None and facts.get("last_hash") == x.entry["prev"]:
        report.notes.append(
            f"seq 1-{seq - 1} deleted by retention (up to {facts.get('file')}); "
            f"the chain starts at {x.where}"
        )
        still = [f for f in (facts.get("file"),) if f in names]
        if still:
            report.notes.append(f"{still[0]}: listed as deleted by retention, still present")
        return
    below = [n for n in retained if n < seq - 1]
    start = max(below) + 1 if below else 1
    report.problems.append(
        f"{x.where}: missing {_span(start, seq - 1)} before the oldest file "
        "(file(s) removed outside retention)"
    )


def chains(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def verify_root(root: Path, chain: str) -> AuditReport:
    """One chain's directory under ``root`` (``<data_dir>/audit``). Blocking I/O."""
    files = [(p.name, p.read_bytes()) for p in day_files(root / chain)]
    return verify_chain(chain, files)
