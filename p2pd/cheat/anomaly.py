"""The anomaly score of one peer (spec 5.1, 5.2): offences weighed, decaying.

Each offence adds its weight to the score; the score halves every
``half_life`` seconds, so that rare mishaps of an honest peer (a packet
corrupted in a way that still authenticates is impossible, but a move judged
on a bad path, a warp the server has not confirmed yet) fade, while a cheat
that keeps cheating climbs past ``threshold``. Crossing it is reported once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum


class Offence(StrEnum):
    INVALID_PACKET = "invalid_packet"  # an event that did not decode or is impossible
    REJECTED_MOVE = "rejected_move"  # a position refused by the move checks
    RATE_EXCESS = "rate_excess"  # events beyond what the peer may send
    FAILED_CHECK = "failed_check"  # line of sight, a claim the server rejected
    DISAGREEMENT = "disagreement"  # its position far from the server's


def _default_weights() -> dict[Offence, float]:
    return {Offence.INVALID_PACKET: 2.0, Offence.REJECTED_MOVE: 3.0, Offence.RATE_EXCESS: 1.0,
            Offence.FAILED_CHECK: 4.0, Offence.DISAGREEMENT: 3.0}


@dataclass(frozen=True, slots=True)
class AnomalyRules:
    threshold: float = 20.0
    half_life: float = 30.0  # seconds
    weights: dict[Offence, float] = field(default_factory=_default_weights)


class AnomalyScore:
    __slots__ = ("_score", "_stamp", "counts", "flagged", "rules")

    def __init__(self, rules: AnomalyRules = AnomalyRules()) -> None:
        self.rules = rules
        self._score = 0.0
        self._stamp = 0.0
        self.counts: Counter[str] = Counter()
        self.flagged = False

    def value(self, now: float) -> float:
        if now > self._stamp:
            self._score *= 0.5 ** ((now - self._stamp) / self.rules.half_life)
            self._stamp = now
        return self._score

    def add(self, offence: Offence, now: float, times: int = 1) -> bool:
        """Count ``times`` offences; True exactly when this crosses the threshold."""
        self.counts[offence.value] += times
        score = self.value(now) + self.rules.weights[offence] * times
        self._score = score
        if not self.flagged and score >= self.rules.threshold:
            self.flagged = True
            return True
        return False
