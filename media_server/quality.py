"""Sustained media trouble of a participant, as the SFU sees it, for the supervisors'
``media_quality`` exceptions (no I/O, time passed in).

The room hands ``QualityWatch.observe`` its health rows (``health.room``) about once a
second; the watch answers with the reports to file (``media.quality``). Two troubles:

- **loss**: what reaches the SFU from a participant loses at least ``loss`` (after
  repair) on average over the last ``window_s`` seconds of samples, and in at least
  half of them (one very bad second is a burst, not a link in trouble);
- **frozen**: the participant's camera has sent no frame for ``frozen_s`` seconds while
  still published (turning the camera off unpublishes it: that is no freeze).

Each trouble is reported once when it becomes sustained, then not again for that
participant and trouble until it has cleared and ``quiet_s`` has passed since the last
report, so a flapping link files a handful of events an hour, not one a second.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 10.0
QUIET_S = 60.0


@dataclass(frozen=True)
class Thresholds:
    loss: float = 0.05  # mean loss (0..1) over the window
    frozen_s: float = 3.0  # seconds without a camera frame
    window_s: float = WINDOW_S
    quiet_s: float = QUIET_S


@dataclass
class _Watched:
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (at, loss)
    lossy_since: float | None = None  # the first sample of the current lossy window
    loss_reported: bool = False
    frozen_reported: bool = False
    last_report: dict[str, float] = field(default_factory=dict)  # trouble -> when


class QualityWatch:
    """One room's participants, by id."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.t = thresholds
        self._people: dict[str, _Watched] = {}

    def observe(self, rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """``rows``: ``health.room`` now. Returns the reports due, each ``{participant_id,
        trouble, loss, fps, frozen_s, for_s}`` (``for_s``: how long it has lasted)."""
        out: list[dict[str, Any]] = []
        present = set()
        for row in rows:
            pid = str(row["participant_id"])
            present.add(pid)
            w = self._people.setdefault(pid, _Watched())
            out += self._loss(pid, w, row, now)
            out += self._frozen(pid, w, row, now)
        for gone in set(self._people) - present:
            del self._people[gone]
        return out

    def _quiet(self, w: _Watched, trouble: str, now: float) -> bool:
        last = w.last_report.get(trouble)
        return last is None or now - last >= self.t.quiet_s

    def _report(
        self, pid: str, w: _Watched, trouble: str, row: dict[str, Any], now: float, **data: Any
    ) -> dict[str, Any]:
        w.last_report[trouble] = now
        return {
            "participant_id": pid,
            "trouble": trouble,
            "fps": row.get("fps"),
            **data,
        }

    def _loss(self, pid: str, w: _Watched, row: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if not row.get("tracks"):  # publishes nothing: no loss to speak of
            w.samples.clear()
            return []
        w.samples.append((now, float(row.get("loss") or 0.0)))
        while w.samples and w.samples[0][0] <= now - self.t.window_s:
            w.samples.popleft()
        span = now - w.samples[0][0]
        # A full window (one sample a second: allow for a late tick).
        full = span >= self.t.window_s - 1.5
        mean = sum(x for _, x in w.samples) / len(w.samples)
        bad = sum(1 for _, x in w.samples if x >= self.t.loss) * 2 >= len(w.samples)
        if not full or mean < self.t.loss or not bad:
            if mean < self.t.loss:
                w.loss_reported = False
            return []
        if w.loss_reported or not self._quiet(w, "loss", now):
            return []
        w.loss_reported = True
        frozen = float(row.get("frozen_s") or 0.0)
        return [
            self._report(pid, w, "loss", row, now, loss=round(mean, 4), frozen_s=frozen, for_s=span)
        ]

    def _frozen(
        self, pid: str, w: _Watched, row: dict[str, Any], now: float
    ) -> list[dict[str, Any]]:
        frozen = float(row.get("frozen_s") or 0.0)
        if frozen < self.t.frozen_s:
            if frozen == 0.0:
                w.frozen_reported = False  # frames again: a new freeze is a new trouble
            return []
        if w.frozen_reported or not self._quiet(w, "frozen", now):
            return []
        w.frozen_reported = True
        loss = round(float(row.get("loss") or 0.0), 4)
        return [
            self._report(
                pid, w, "frozen", row, now, loss=loss, frozen_s=round(frozen, 1), for_s=frozen
            )
        ]
