"""When another node's media host counts as lost, so that its sessions are taken over.

Sans-IO, time passed in (as ``placement``). A host's registry document is renewed every
``media_heartbeat_s`` and expires after ``media_host_ttl_s``. A document that is gone, or
older than the TTL, makes its host *suspect*, not lost: a node whose event loop was
starved for a moment (a loaded machine, a long pause) misses a renewal while it is alive
and still forwarding, and taking its sessions then would have two hosts run them. The
host is *lost* only when a later check, at least ``grace_s`` (one heartbeat) after the
first miss, still finds it silent; a fresh report in between clears the suspicion. A host
whose own report says it is dead (``alive: false``, a worker its node saw die) is lost
at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"  # silent at this check: lost if still silent a grace later
    LOST = "lost"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    suspect_since: float | None  # when this checker first found the host silent


def judge(
    seen_at: float | None,
    alive: bool,
    suspect_since: float | None,
    now: float,
    ttl_s: float,
    grace_s: float,
) -> Judgement:
    """The host's state at ``now``, given its registry report (``seen_at`` None: no
    document) and when this checker first found it silent (None: it has not)."""
    if seen_at is not None and not alive:
        return Judgement(Verdict.LOST, suspect_since if suspect_since is not None else now)
    if seen_at is not None and now - seen_at <= ttl_s:
        return Judgement(Verdict.ALIVE, None)
    if suspect_since is None or suspect_since > now:
        return Judgement(Verdict.SUSPECT, now)  # the first miss (or a clock that went back)
    if now - suspect_since >= grace_s:
        return Judgement(Verdict.LOST, suspect_since)
    return Judgement(Verdict.SUSPECT, suspect_since)
