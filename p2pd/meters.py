"""Rate limits and rate meters, driven by ``now`` (no clock inside)."""

from __future__ import annotations

from collections import deque


class TokenBucket:
    """Allows ``rate`` units per second with bursts of up to ``burst`` units."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"rate ({rate}) and burst ({burst}) must be positive")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are enough; never spends part of them."""
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


class RateMeter:
    """Totals and per-second rates over whole seconds of ``now``, last ``history`` seconds kept."""

    __slots__ = ("_current", "_second", "history", "total")

    def __init__(self, history: int = 60) -> None:
        self.total = 0
        self._second = 0
        self._current = 0
        self.history: deque[tuple[int, int]] = deque(maxlen=history)  # (second, amount)

    def add(self, amount: int, now: float) -> None:
        self._roll(now)
        self._current += amount
        self.total += amount

    def per_second(self, now: float) -> int:
        """The amount counted in the last complete second."""
        self._roll(now)
        if self.history and self.history[-1][0] == self._second - 1:
            return self.history[-1][1]
        return 0

    def _roll(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            if self._current:
                self.history.append((self._second, self._current))
            self._second = second
            self._current = 0
