"""The message catalogs (no browser): both languages have the same keys, every key the
pages use exists, and no Chinese text is written in the code outside the catalogs."""

from __future__ import annotations

import re
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "web_client" / "static"
KEY = r"[a-z_]+\.[a-z0-9_]+"
USES = [
    re.compile(rf'\b(?:t|tOr|toast)\(\s*"({KEY})"'),
    re.compile(rf'\b(?:i18n|aria|placeholder|title|key)\s*:\s*"({KEY})"'),
    re.compile(rf'data-i18n(?:-aria|-placeholder|-title)?="({KEY})"'),
    re.compile(rf'\b(?:i18n|key)\s*:\s*[^,}}]*\?\s*"({KEY})"\s*:\s*"({KEY})"'),
]
# Keys built at run time from a value the server sends (role, status, error code...).
DYNAMIC = {
    "role": ["clerk", "reviewer", "applicant", "supervisor", "admin"],
    "status": ["pending", "ringing", "unanswered", "accepted", "declined", "cancelled"],
    "conn": ["idle", "connecting", "open", "reconnecting", "closed"],
    "media.error": ["denied", "missing", "busy", "other"],
    "media.title": ["denied", "missing", "busy", "other"],
    "opinion.decision": ["approve", "materials_missing", "refer", "note"],
    "answers": ["accepted", "declined", "unanswered"],
    "quality": ["good", "fair", "poor", "unknown", "stalled", "paused"],
    "sup.tab": ["search", "stats", "exceptions", "live"],
    "exc.kind": [
        "invitation_unanswered",
        "invitation_declined",
        "long_wait",
        "session_broken_off",
        "no_opinion",
        "recording_failed",
        "recording_gap",
        "media_quality",
    ],
    "exc.status": ["open", "handled"],
    "exc.sum_broken": ["idle", "lost"],
    "live.state": ["joined", "disconnected"],
    "live.health": ["ok", "bad", "none"],
    "error": [
        "token_expired",
        "superseded",
        "forbidden",
        "session_not_found",
        "network",
        "session_live",
        "recording_sealing",
        "recording_disabled",
        "recording_required",
    ],
}


def catalog(name: str) -> set[str]:
    text = (STATIC / "i18n" / name).read_text(encoding="utf-8")
    return set(re.findall(r'^\s*"([^"]+)":', text, re.M))


def test_both_languages_have_the_same_keys() -> None:
    zh, en = catalog("zh-CN.js"), catalog("en.js")
    assert zh - en == set(), "missing in English"
    assert en - zh == set(), "missing in Chinese"


def test_every_key_in_use_is_in_the_catalogs() -> None:
    used: set[str] = set()
    for path in [*STATIC.glob("*.js"), *STATIC.glob("*.html")]:
        text = path.read_text(encoding="utf-8")
        for pattern in USES:
            for match in pattern.finditer(text):
                used.update(g for g in match.groups() if g)
    for prefix, values in DYNAMIC.items():
        sep = "_" if prefix.count(".") else "."
        used.update(f"{prefix}{sep}{v}" for v in values)
    assert len(used) > 150
    assert used - catalog("zh-CN.js") == set()


def test_no_chinese_text_in_the_code() -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for path in STATIC.glob("*.js"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("//", 1)[0]
            assert not cjk.search(code), f"{path.name}:{n}: UI text belongs in i18n/"
