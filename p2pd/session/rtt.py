"""Round-trip time estimation (RFC 6298 smoothing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RttSnapshot:
    samples: int
    latest: float | None
    smoothed: float | None
    variance: float | None
    min: float | None
    max: float | None


class RttEstimator:
    __slots__ = ("latest", "max", "min", "samples", "smoothed", "variance")

    def __init__(self) -> None:
        self.samples = 0
        self.latest: float | None = None
        self.smoothed: float | None = None
        self.variance: float | None = None
        self.min: float | None = None
        self.max: float | None = None

    def add_sample(self, rtt: float) -> None:
        if rtt < 0:
            return
        self.samples += 1
        self.latest = rtt
        if self.smoothed is None or self.variance is None:
            self.smoothed = rtt
            self.variance = rtt / 2
        else:
            self.variance = 0.75 * self.variance + 0.25 * abs(self.smoothed - rtt)
            self.smoothed = 0.875 * self.smoothed + 0.125 * rtt
        self.min = rtt if self.min is None else min(self.min, rtt)
        self.max = rtt if self.max is None else max(self.max, rtt)

    def snapshot(self) -> RttSnapshot:
        return RttSnapshot(
            self.samples, self.latest, self.smoothed, self.variance, self.min, self.max
        )
