"""How many refusals of one kind from one address the audit trail writes in full.

A flood of refused requests (a wrong token in a loop, a scanner) would otherwise write
~500 bytes a request to disk: 1,000 requests a second fill a gigabyte in half an hour.
So per ``(action, address, code)`` the first ``burst`` refusals of each ``window_s`` are
written as they come, and the rest are counted and written as one ``audit.suppressed``
entry when the window ends: the trail still says who was refused how often, from where
and why. Sans-IO: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Key = tuple[str, str | None, str | None]  # action, address, code


@dataclass
class _Window:
    start: float
    seen: int = 1
    suppressed: int = 0
    last: float = 0.0


class Coalescer:
    def __init__(self, burst: int = 20, window_s: float = 60.0, keys_max: int = 10_000) -> None:
        self.burst = burst
        self.window_s = window_s
        self.keys_max = keys_max
        self._windows: dict[Key, _Window] = {}
        self._swept = 0.0

    def admit(self, key: Key, now: float) -> tuple[bool, list[dict[str, Any]]]:
        """Whether to write this refusal in full, and the summaries now due (a window
        that ended, or the oldest one pushed out when too many kinds are tracked)."""
        due = self.due(now)
        w = self._windows.get(key)
        if w is None:
            if len(self._windows) >= self.keys_max:
                oldest = next(iter(self._windows))
                due += self._summary(oldest, self._windows.pop(oldest))
            self._windows[key] = _Window(now, last=now)
            return True, due
        w.seen += 1
        w.last = now
        if w.seen <= self.burst:
            return True, due
        w.suppressed += 1
        return False, due

    def due(self, now: float, everything: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not everything and now - self._swept < 1.0:
            return out  # (a sweep costs one look at every kind tracked: once a second)
        self._swept = now
        for key in [
            k for k, w in self._windows.items() if everything or now - w.start >= self.window_s
        ]:
            out += self._summary(key, self._windows.pop(key))
        return out

    @staticmethod
    def _summary(key: Key, w: _Window) -> list[dict[str, Any]]:
        if not w.suppressed:
            return []
        action, address, code = key
        return [
            {
                "address": address,
                "code": code,
                "detail": {
                    "action": action,
                    "count": w.suppressed,
                    "from": w.start,
                    "until": w.last,
                },
            }
        ]
