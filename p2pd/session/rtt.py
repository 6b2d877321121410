"""Round-trip time estimation (RFC 6298 smoothing)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RECENT_SAMPLES = 256  # kept for percentiles


@dataclass(frozen=True, slots=True)
class RttSnapshot:
    samples: int
    latest: float | None
    smoothed: float | None
    variance: float | None
    min: float | None
    max: float | None
    p50: float | None = None  # over the most recent RECENT_SAMPLES samples
    p99: float | None = None


class RttEstimator:
    """RFC 6298 smoothing, and the last ``history`` samples for percentiles (kept
    from the first sample on; 0: none, and the snapshot has no percentiles)."""

    __slots__ = ("_history", "_recent", "latest", "max", "min", "samples", "smoothed",
                 "variance")

    def __init__(self, history: int = RECENT_SAMPLES) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        self._history = history
        self.samples = 0
        self.latest: float | None = None
        self.smoothed: float | None = None
        self.variance: float | None = None
        self.min: float | None = None
        self.max: float | None = None
        self._recent: deque[float] | None = None

    def add_sample(self, rtt: float) -> None:
        if rtt < 0:
            return
        self.samples += 1
        self.latest = rtt
        recent = self._recent
        if recent is None and self._history:
            recent = self._recent = deque(maxlen=self._history)
        if recent is not None:
            recent.append(rtt)
        if self.smoothed is None or self.variance is None:
            self.smoothed = rtt
            self.variance = rtt / 2
        else:
            self.variance = 0.75 * self.variance + 0.25 * abs(self.smoothed - rtt)
            self.smoothed = 0.875 * self.smoothed + 0.125 * rtt
        self.min = rtt if self.min is None else min(self.min, rtt)
        self.max = rtt if self.max is None else max(self.max, rtt)

    def recent(self) -> list[float]:
        """The most recent samples (at most ``history``), oldest first."""
        return list(self._recent) if self._recent is not None else []

    def snapshot(self) -> RttSnapshot:
        ordered = sorted(self._recent) if self._recent is not None else []
        return RttSnapshot(
            self.samples, self.latest, self.smoothed, self.variance, self.min, self.max,
            percentile(ordered, 0.50), percentile(ordered, 0.99),
        )


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(rank) - 1]
