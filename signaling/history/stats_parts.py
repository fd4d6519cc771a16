"""The parts of ``GET /api/stats``'s answer, made from the period's counts and ranks
(``stats.Stats`` reads them): totals, departments, windows and matters."""

from __future__ import annotations

from typing import Any

from .stats_tally import SessionCount

DECISIONS = ("approve", "materials_missing", "refer", "note")
INVITATION_STATUSES = ("accepted", "declined", "unanswered", "cancelled")


def invitation_totals(rows: list[tuple[str | None, str | None, str, int]]) -> dict[str, int]:
    out = {"total": sum(n for *_, n in rows)}
    for status in INVITATION_STATUSES:
        out[status] = sum(n for _, _, s_, n in rows if s_ == status)
    return out


def departments(
    counts: list[tuple[str | None, str | None, str, int]],
    answers: dict[Any, tuple[float | None, float | None]],
    opinions: list[Any],
) -> list[dict[str, Any]]:
    depts: dict[str, dict[str, Any]] = {}

    def dept(name: str) -> dict[str, Any]:
        if name not in depts:
            depts[name] = {
                "dept": name,
                "level": None,
                "invited": 0,
                **{k: 0 for k in ("accepted", "declined", "unanswered")},
                "answer_s_p50": None,
                "answer_s_p90": None,
                "opinions": {d: 0 for d in DECISIONS},
            }
        return depts[name]

    for name, level, outcome, n in counts:
        if name is None:  # a named reviewer's invitation: in the totals only
            continue
        d = dept(name)
        d["level"] = d["level"] or level
        d["invited"] += n
        if outcome in ("accepted", "declined", "unanswered"):
            d[outcome] += n
    for name, (p50, p90) in answers.items():
        dept(name)["answer_s_p50"], dept(name)["answer_s_p90"] = p50, p90
    for r in opinions:
        if r.decision in DECISIONS:
            dept(r.author_dept)["opinions"][r.decision] += r.n
    return [depts[k] for k in sorted(depts)]


def breakdown(
    counts: list[Any], key: str, ranks: dict[Any, tuple[float | None, float | None]] | None
) -> list[dict[str, Any]]:
    """Sessions per window (with their durations' percentiles) or per matter, most first."""
    out: dict[Any, dict[str, Any]] = {}
    for r in counts:
        name = getattr(r, key)
        row = out.setdefault(name, {key: name, "sessions": 0, "ended": 0, "broken_off": 0})
        row["sessions"] += r.total
        row["ended"] += r.ended
        row["broken_off"] += r.broken_off
    if ranks is not None:
        for name, row in out.items():
            row["duration_s_p50"], row["duration_s_p90"] = ranks.get(name, (None, None))
    return sorted(out.values(), key=lambda r: (-r["sessions"], str(r[key])))


def merged(rows: list[SessionCount]) -> list[SessionCount]:
    """One row per (window, matter): the tables' and the edges' added up."""
    out: dict[tuple[Any, Any], SessionCount] = {}
    for r in rows:
        have = out.get((r.window, r.matter))
        if have is not None:
            r = SessionCount(
                r.window,
                r.matter,
                have.total + r.total,
                have.ended + r.ended,
                have.broken_off + r.broken_off,
            )
        out[r.window, r.matter] = r
    return list(out.values())


def sum_into(out: dict[str, int], row: dict[str, int]) -> None:
    for k, n in row.items():
        out[k] += n
