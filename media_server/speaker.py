"""Active-speaker detection from RFC 6464 audio levels (no decoding; time passed in)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Levels are -dBov: 0 is the loudest, 127 silence. Speech at a desk microphone sits
# around 20-45; room noise and silence mostly above 60.
SPEECH_LEVEL = 55
SMOOTHING = 0.15  # weight of each new packet (audio packets come every 20 ms)
ACTIVE_WINDOW = 0.5  # a participant is a candidate if they spoke within this
SWITCH_MARGIN = 6.0  # dB louder than the current speaker to take the floor
HOLD = 1.2  # keep the current speaker through pauses this long


@dataclass
class _Voice:
    loudness: float = 0.0  # smoothed 127 - level: larger is louder
    speech: float = 0.0  # the same over speech packets only: what talkers are compared by
    last_speech: float = -1e9


@dataclass
class SpeakerDetector:
    voices: dict[str, _Voice] = field(default_factory=dict)
    active: str | None = None

    def observe(self, who: str, level: int, now: float) -> None:
        voice = self.voices.setdefault(who, _Voice())
        loud = 127 - level
        voice.loudness += (loud - voice.loudness) * SMOOTHING
        if level <= SPEECH_LEVEL:
            voice.last_speech = now
            # A pause must not make the current speaker "quieter" than whoever talks
            # meanwhile: silence would drain ``loudness`` within ~100 ms, long before HOLD.
            voice.speech += (loud - voice.speech) * SMOOTHING

    def forget(self, who: str) -> None:
        # ``active`` is left as it is: the next poll() sees the speaker gone and reports
        # the change (clearing it here made poll() report "no change" and the room never
        # told anyone that the departed participant stopped speaking).
        self.voices.pop(who, None)

    def poll(self, now: float) -> tuple[bool, str | None]:
        """(changed, the active speaker or None)."""
        candidates = {
            who: v for who, v in self.voices.items() if now - v.last_speech <= ACTIVE_WINDOW
        }
        current = self.active
        new = current
        if candidates:
            best = max(candidates, key=lambda w: candidates[w].speech)
            if current is None or current not in self.voices:
                new = best
            elif current not in candidates:
                if now - self.voices[current].last_speech > HOLD:
                    new = best
            elif best != current and (
                candidates[best].speech > candidates[current].speech + SWITCH_MARGIN
            ):
                new = best
        elif current is not None and (
            current not in self.voices or now - self.voices[current].last_speech > HOLD
        ):
            new = None
        self.active = new
        return new != current, new

    def levels(self) -> dict[str, int]:
        return {who: round(v.loudness) for who, v in self.voices.items()}
