"""A peer's clock as seen from here, its jitter, and the playout delay.

Positions and effects carry the sending client's millisecond clock (``tick``,
``start_ms``). :class:`PeerClock` maps that clock onto local time by the
smallest *transit* (arrival here minus the sender's clock) among the last
:data:`WINDOW` samples: ``local = tick / 1000 + offset``, which puts a sample
at the time it would have arrived with no queueing (the sender's clock offset
and the path's least one-way delay together). The extra transit of each
sample beyond that minimum is its jitter; the playout delay (the jitter
buffer) is ``intervals`` update intervals plus the 95th percentile of the
recent extra transits, within ``[min_delay, max_delay]``, so it grows on a
jittery path and shrinks on a steady one. ``jitter`` is RFC 3550's smoothed
mean deviation of successive transits (seconds), for the move checks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 64  # transit samples kept per peer


@dataclass(frozen=True, slots=True)
class PlayoutRules:
    interval: float = 0.2  # seconds between updates: 1 / position_update_rate
    intervals: float = 3.0  # render this many intervals in the past, plus jitter
    min_delay: float = 0.1
    max_delay: float = 1.0
    max_extrapolation: float = 2.0  # seconds past the newest sample, at most


class PeerClock:
    __slots__ = ("_excess_sorted_cache", "_last_transit", "_transits", "jitter", "rules",
                 "samples")

    def __init__(self, rules: PlayoutRules = PlayoutRules()) -> None:
        self.rules = rules
        self._transits: deque[float] = deque(maxlen=WINDOW)
        self._last_transit: float | None = None
        self._excess_sorted_cache: float | None = None
        self.jitter = 0.0
        self.samples = 0

    @property
    def known(self) -> bool:
        return bool(self._transits)

    def observe(self, tick_ms: int, now: float) -> None:
        """A sample stamped ``tick_ms`` by the peer arrived at ``now``."""
        transit = now - tick_ms / 1000.0
        last = self._last_transit
        if last is not None:
            self.jitter += (abs(transit - last) - self.jitter) / 16.0
        self._last_transit = transit
        self._transits.append(transit)
        self._excess_sorted_cache = None
        self.samples += 1

    @property
    def offset(self) -> float:
        """Local time minus the peer's clock, in seconds (least transit)."""
        return min(self._transits) if self._transits else 0.0

    def to_local(self, tick_ms: int) -> float:
        return tick_ms / 1000.0 + self.offset

    def to_tick(self, local: float) -> float:
        """The peer's clock (ms, fractional) at local time ``local``."""
        return (local - self.offset) * 1000.0

    def spread(self) -> float:
        """95th percentile of the recent transits beyond the least one (s)."""
        cached = self._excess_sorted_cache
        if cached is not None:
            return cached
        transits = sorted(self._transits)
        if not transits:
            return 0.0
        value = transits[min(len(transits) - 1, int(0.95 * len(transits)))] - transits[0]
        self._excess_sorted_cache = value
        return value

    def playout_delay(self) -> float:
        rules = self.rules
        delay = rules.intervals * rules.interval + self.spread()
        return min(max(delay, rules.min_delay), rules.max_delay)
