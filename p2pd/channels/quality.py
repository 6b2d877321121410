"""Adaptive quality (spec §3.3): how much of the position and effect rates a link gets.

When a link is short of budget or its path degrades (loss, RTT well above its
minimum), unreliable traffic is cut first: the controller steps the quality
factor down at most once per :attr:`QualityController.step_down_interval`,
and back up one step after :attr:`QualityController.recover_after` seconds
without a bad signal. Reliable data is never throttled by it. The controller
is pure: the caller hands it the signals and ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

LEVELS = (1.0, 0.7, 0.5, 0.3)  # factors applied to position_update_rate and effect_update_rate
REDUCED_DETAIL = 0.5  # at or below this factor, positions that keep the cell are not sent


@dataclass(frozen=True, slots=True)
class PathSignals:
    loss: float  # share of packets lost on the path (either direction's estimate)
    srtt: float | None  # smoothed RTT, seconds
    min_rtt: float | None
    budget_short: bool  # data had to wait for a send budget recently


class QualityController:
    __slots__ = ("_changed_at", "_last_bad", "level", "reason")

    loss_threshold = 0.05
    rtt_growth = 2.0  # srtt above rtt_growth * min_rtt + rtt_slack is "RTT growth"
    rtt_slack = 0.05
    step_down_interval = 1.0
    recover_after = 3.0

    def __init__(self) -> None:
        self.level = 0
        self._changed_at = float("-inf")
        self._last_bad = float("-inf")
        self.reason = ""  # what caused the last step down

    @property
    def factor(self) -> float:
        return LEVELS[self.level]

    def update(self, signals: PathSignals, now: float) -> float:
        """Feed the current signals; returns the quality factor to apply."""
        reason = self._bad_signal(signals)
        if reason:
            self._last_bad = now
            if self.level < len(LEVELS) - 1 and now - self._changed_at >= self.step_down_interval:
                self.level += 1
                self._changed_at = now
                self.reason = reason
        elif (self.level > 0 and now - self._last_bad >= self.recover_after
              and now - self._changed_at >= self.recover_after):
            self.level -= 1
            self._changed_at = now
        return LEVELS[self.level]

    def _bad_signal(self, signals: PathSignals) -> str:
        if signals.budget_short:
            return "budget"
        if signals.loss > self.loss_threshold:
            return "loss"
        if (signals.srtt is not None and signals.min_rtt is not None
                and signals.srtt > self.rtt_growth * signals.min_rtt + self.rtt_slack):
            return "rtt"
        return ""
