"""The department directory in and out of files an operator edits: CSV (one row per
department or user, e.g. from a spreadsheet) and JSON (the TOML file's shape), each
checked with errors that name the line and the field; the directory written back as the
TOML file the server reads (signaling/directory.py), and out again as CSV or JSON.

CSV columns (a header line first; UTF-8, a spreadsheet's byte-order mark allowed):
``kind,id,name,name_en,level,role,dept,window``. ``kind`` is ``department`` (``id``,
``name``, ``level``, optional ``name_en``) or ``user`` (``id`` is the user's ``sub``;
``name``, ``role``, and ``dept`` for a reviewer; optional ``window`` for a clerk). Only
``kind``, ``id`` and ``name`` must be present as columns.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import json.scanner
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .auth import DEPARTMENTAL
from .directory import Department, Directory, DirectoryUser

COLUMNS = ("kind", "id", "name", "name_en", "level", "role", "dept", "window")
REQUIRED_COLUMNS = ("kind", "id", "name")
DEPT_FIELDS = {"id": "id", "name": "name", "name_en": "name_en", "level": "level"}
USER_FIELDS = {"id": "sub", "name": "name", "role": "role", "dept": "dept", "window": "window"}


class DirectoryInputError(Exception):
    """The input is not a valid directory; ``problems`` each name where (file, line and
    field) and what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Change:
    """How one directory differs from another, by id."""

    added: list[str]
    removed: list[str]
    changed: list[str]

    def __str__(self) -> str:
        return f"+{len(self.added)} -{len(self.removed)} ~{len(self.changed)}"


def read_file(path: Path) -> Directory:
    """A CSV (``.csv``) or JSON (``.json``) file, checked whole: every problem at once."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DirectoryInputError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DirectoryInputError(
            [f"{path}:{line}: not UTF-8 (save the file as UTF-8, e.g. 'CSV UTF-8')"]
        ) from exc
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_csv(text, str(path))
    if suffix == ".json":
        return parse_json(text, str(path))
    raise DirectoryInputError([f"{path}: expected a .csv or .json file"])


# -- CSV --------------------------------------------------------------------------------


def parse_csv(text: str, name: str = "<csv>") -> Directory:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = next(reader, None)
    if header is None:
        raise DirectoryInputError([f"{name}:1: empty file; expected a header line"])
    header = [h.strip().lower() for h in header]
    problems = [
        f"{name}:1: unknown column {h!r} (columns: {', '.join(COLUMNS)})"
        for h in header
        if h not in COLUMNS
    ]
    problems += [f"{name}:1: missing column {c!r}" for c in REQUIRED_COLUMNS if c not in header]
    if problems:
        raise DirectoryInputError(problems)
    depts: list[tuple[int, dict[str, Any]]] = []
    users: list[tuple[int, dict[str, Any]]] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines between sections
        if len(row) > len(header):
            problems.append(f"{name}:{line}: {len(row)} fields, the header has {len(header)}")
            continue
        cells = {h: row[i].strip() for i, h in enumerate(header) if i < len(row)}
        kind = cells.get("kind", "").lower()
        fields = DEPT_FIELDS if kind == "department" else USER_FIELDS
        if kind not in ("department", "user"):
            problems.append(f"{name}:{line}: column 'kind': {kind!r} is not department or user")
            continue
        for column, value in cells.items():
            if value and column != "kind" and column not in fields:
                problems.append(f"{name}:{line}: column {column!r}: not used for a {kind}")
        doc = {field: cells[col] for col, field in fields.items() if cells.get(col)}
        (depts if kind == "department" else users).append((line, doc))
    return _build(
        depts,
        users,
        lambda line, _i: f"{name}:{line}",
        lambda field: f"column {_column(field)!r}",
        problems,
    )


def _column(field: str) -> str:
    return "id" if field == "sub" else field


# -- JSON -------------------------------------------------------------------------------


def parse_json(text: str, name: str = "<json>") -> Directory:
    lines: dict[int, int] = {}
    try:
        doc = _LineDecoder(text, lines).decode(text)
    except json.JSONDecodeError as exc:
        raise DirectoryInputError([f"{name}:{exc.lineno}: not valid JSON: {exc.msg}"]) from exc
    if not isinstance(doc, dict):
        raise DirectoryInputError([f"{name}: expected an object with departments and users"])
    problems = [
        f"{name}:{lines.get(id(doc), 1)}: unknown key {k!r} (keys: departments, users)"
        for k in doc
        if k not in ("departments", "users")
    ]
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {"departments": [], "users": []}
    for key, items in groups.items():
        value = doc.get(key, [])
        if not isinstance(value, list):
            problems.append(f"{name}: {key}: expected a list")
            continue
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                problems.append(f"{name}: {key}[{i}]: expected an object")
                continue
            items.append((lines.get(id(item), 0), item))
    return _build(
        groups["departments"],
        groups["users"],
        lambda line, where: f"{name}:{line}: {where}",
        lambda field: f"field {field!r}",
        problems,
    )


class _LineDecoder(json.JSONDecoder):
    """json that remembers the line each object starts on (by the object's id), through
    the pure-Python scanner (the C one takes no hook)."""

    def __init__(self, text: str, lines: dict[int, int]) -> None:
        super().__init__()
        starts = [i for i, c in enumerate(text) if c == "\n"]
        parse: Any = vars(self)["parse_object"]  # set by JSONDecoder.__init__

        def parse_object(s_and_end: tuple[str, int], *args: Any) -> Any:
            obj, end = parse(s_and_end, *args)
            lines[id(obj)] = bisect.bisect_left(starts, s_and_end[1]) + 1
            return obj, end

        self.parse_object = parse_object
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]


# -- both -------------------------------------------------------------------------------


def _build(
    depts: list[tuple[int, dict[str, Any]]],
    users: list[tuple[int, dict[str, Any]]],
    where: Any,
    field_name: Any,
    problems: list[str],
) -> Directory:
    """Validate row by row, then across rows (unique ids, reviewers' departments)."""
    good_depts: list[Department] = []
    good_users: list[DirectoryUser] = []
    first: dict[str, int] = {}
    for i, (line, doc) in enumerate(depts):
        at = where(line, f"departments[{i}]")
        try:
            good_depts.append(Department.model_validate(doc))
        except ValidationError as exc:
            problems += [f"{at}: {m}" for m in _messages(exc, field_name)]
            continue
        key = good_depts[-1].id
        if key in first:
            problems.append(f"{at}: department {key!r} again (first on line {first[key]})")
        first.setdefault(key, line)
    ids = {d.id for d in good_depts}
    subs: dict[str, int] = {}
    for i, (line, doc) in enumerate(users):
        at = where(line, f"users[{i}]")
        try:
            user = DirectoryUser.model_validate(doc)
        except ValidationError as exc:
            problems += [f"{at}: {m}" for m in _messages(exc, field_name)]
            continue
        if user.sub in subs:
            problems.append(f"{at}: user {user.sub!r} again (first on line {subs[user.sub]})")
        subs.setdefault(user.sub, line)
        if user.role in DEPARTMENTAL and user.dept not in ids:
            said = f"{user.dept!r} is not a department above" if user.dept else "missing"
            problems.append(f"{at}: {field_name('dept')}: a {user.role} needs one: {said}")
        good_users.append(user)
    if problems:
        raise DirectoryInputError(sorted(problems, key=_line_of))  # stable: in file order
    return Directory(departments=good_depts, users=good_users)


def _line_of(problem: str) -> int:
    found = re.search(r":(\d+): ", problem)
    return int(found.group(1)) if found else 0


def _messages(exc: ValidationError, field_name: Any) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        label = field_name(loc) if loc else "row"
        if err["type"] == "extra_forbidden":
            out.append(f"{label}: unknown field")
            continue
        given = err.get("input")
        got = f" (got {given!r})" if isinstance(given, str) else ""
        out.append(f"{label}: {err['msg']}{got}")
    return out


# -- out --------------------------------------------------------------------------------


def to_toml(d: Directory) -> str:
    """The server's directory file (TOML); JSON string escapes are valid TOML ones."""
    out = ["# The department directory (written by `jointreview directory import`)."]
    for table, items in (("departments", d.departments), ("users", d.users)):
        for item in items:
            out += ["", f"[[{table}]]"]
            for key, value in item.model_dump(exclude_none=True).items():
                if value == "" and key == "name_en":
                    continue
                out.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(out) + "\n"


def to_csv(d: Directory) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for dept in d.departments:
        writer.writerow(["department", dept.id, dept.name, dept.name_en, dept.level, "", "", ""])
    for u in d.users:
        writer.writerow(["user", u.sub, u.name, "", "", u.role, u.dept or "", u.window or ""])
    return buf.getvalue()


def to_json(d: Directory) -> str:
    return json.dumps(d.model_dump(exclude_none=True), ensure_ascii=False, indent=2) + "\n"


def digest(d: Directory) -> str:
    """A short fingerprint of the content: nodes that loaded the same directory agree."""
    return hashlib.sha256(to_json(d).encode()).hexdigest()[:16]


def changes(old: Directory, new: Directory) -> tuple[Change, Change]:
    """(departments, users) added, removed and changed from ``old`` to ``new``."""

    def diff(a: dict[str, Any], b: dict[str, Any]) -> Change:
        return Change(
            added=sorted(b.keys() - a.keys()),
            removed=sorted(a.keys() - b.keys()),
            changed=sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
        )

    return (
        diff({x.id: x for x in old.departments}, {x.id: x for x in new.departments}),
        diff({u.sub: u for u in old.users}, {u.sub: u for u in new.users}),
    )
