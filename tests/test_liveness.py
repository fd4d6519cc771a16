"""When another node's media host counts as lost (``jointreview.liveness``): a pure
function, time passed in. A host silent past its TTL is only suspect; it is lost when a
check at least a grace (one heartbeat) after the first miss still finds it silent."""

from __future__ import annotations

import pytest

from jointreview.liveness import Verdict, judge

TTL, GRACE, NOW = 5.0, 1.0, 1000.0
A, S, L = Verdict.ALIVE, Verdict.SUSPECT, Verdict.LOST

# seen_at (None: no registry document), alive, suspect_since, now -> verdict, suspect_since
TABLE = [
    ("fresh report", NOW - 1, True, None, NOW, A, None),
    ("report exactly a TTL old", NOW - TTL, True, None, NOW, A, None),
    ("fresh report clears a suspicion", NOW - 0.1, True, NOW - 3, NOW, A, None),
    ("report a TTL old: first miss", NOW - TTL - 0.01, True, None, NOW, S, NOW),
    ("no document: first miss", None, True, None, NOW, S, NOW),
    ("still silent, under a grace later", None, True, NOW - 0.5, NOW, S, NOW - 0.5),
    ("still silent, a grace later", None, True, NOW - GRACE, NOW, L, NOW - GRACE),
    ("still silent, long after", None, True, NOW - 60, NOW, L, NOW - 60),
    ("stale report, a grace later", NOW - 7, True, NOW - 1.5, NOW, L, NOW - 1.5),
    ("reported dead: lost at once", NOW, False, None, NOW, L, NOW),
    ("reported dead, suspected before", NOW, False, NOW - 0.2, NOW, L, NOW - 0.2),
    ("suspected in the future (clock went back)", None, True, NOW + 5, NOW, S, NOW),
]


@pytest.mark.parametrize(
    ("seen_at", "alive", "since", "now", "verdict", "since_after"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_judge(
    seen_at: float | None,
    alive: bool,
    since: float | None,
    now: float,
    verdict: Verdict,
    since_after: float | None,
) -> None:
    got = judge(seen_at, alive, since, now, TTL, GRACE)
    assert (got.verdict, got.suspect_since) == (verdict, since_after)


def test_a_host_starved_for_less_than_a_heartbeat_past_its_ttl_is_never_lost() -> None:
    """Checks every second; the host beats every second but goes 5.8 s without (its loop was
    starved), then beats again: suspected once, never lost. Silent for good: lost at the
    second check after its TTL."""
    beats = [0.0, 1.0, 6.8, 7.8, 8.8]
    since: float | None = None
    seen = []
    for now in [t + 0.5 for t in range(10)]:
        last = max(b for b in beats if b <= now)
        got = judge(last, True, since, now, TTL, GRACE)
        since = got.suspect_since
        seen.append(got.verdict)
    assert L not in seen and seen.count(S) == 1
    since = None
    verdicts = []
    for now in [t + 0.5 for t in range(10)]:
        got = judge(1.0, True, since, now, TTL, GRACE)  # died after its beat at 1.0
        since = got.suspect_since
        verdicts.append(got.verdict)
    assert verdicts == [A] * 6 + [S, L, L, L]
