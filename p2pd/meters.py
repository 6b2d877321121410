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

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate from ``now`` on (tokens earned so far are kept)."""
        if rate <= 0:
            raise ValueError(f"rate ({rate}) must be positive")
        self.take(0, now)
        self._rate = rate

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are enough; never spends part of them."""
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


class Allowance:
    """What a peer may send (spec 5.1): ``packet_rate`` packets and ``byte_rate``
    bytes per second, with bursts of one second's worth of each; two token
    buckets refilled together, so that a packet costs one check."""

    __slots__ = ("_byte_rate", "_bytes", "_packet_rate", "_packets", "_stamp")

    def __init__(self, packet_rate: float, byte_rate: float, now: float) -> None:
        if packet_rate <= 0 or byte_rate <= 0:
            raise ValueError(f"rates ({packet_rate}, {byte_rate}) must be positive")
        self._packet_rate = packet_rate
        self._byte_rate = byte_rate
        self._packets = packet_rate
        self._bytes = byte_rate
        self._stamp = now

    def take(self, size: int, now: float) -> bool:
        """One packet of ``size`` bytes, if both buckets allow it. A packet the byte
        bucket refuses still spends its packet token (as two buckets asked in turn)."""
        elapsed = now - self._stamp
        if elapsed > 0:
            packets = self._packets + elapsed * self._packet_rate
            self._packets = packets if packets < self._packet_rate else self._packet_rate
            size_tokens = self._bytes + elapsed * self._byte_rate
            self._bytes = size_tokens if size_tokens < self._byte_rate else self._byte_rate
            self._stamp = now
        if self._packets < 1:
            return False
        self._packets -= 1
        if self._bytes < size:
            return False
        self._bytes -= size
        return True


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


class ByteBudget(TokenBucket):
    """A sending allowance in bytes per second, for a hard cap over every window.

    Tokens refill at ``rate`` up to ``burst``. A sender may start a datagram
    whenever the balance is positive and pays its full size, going at most one
    datagram into debt; control traffic pays too, even from a negative
    balance. Over any window of T seconds the bytes sent stay below
    ``burst + rate * T`` plus one datagram plus the control traffic: see
    :func:`budget_for_limit`. (A token bucket whose balance may go negative.)
    """

    __slots__ = ()

    @property
    def rate(self) -> float:
        return self._rate

    def balance(self, now: float) -> float:
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        return self._tokens

    def spend(self, amount: int, now: float) -> None:
        self.balance(now)
        self._tokens -= amount

    def time_until_positive(self, now: float) -> float:
        """Seconds until the balance is above zero (a tiny margin past it)."""
        tokens = self.balance(now)
        if tokens > 0:
            return 0.0
        return (1.0 - tokens) / self._rate


CONTROL_SHARE = 0.05  # of a limit, kept for acks, pings and handshakes


def budget_for_limit(limit: float, datagram: int, now: float) -> ByteBudget:
    """A budget whose data never takes a one-second window past ``limit`` bytes:
    burst (5%) + rate + one datagram of debt stay below 95% of it, the last 5%
    being left for control traffic."""
    burst = CONTROL_SHARE * limit
    rate = max((1 - 2 * CONTROL_SHARE) * limit - datagram, 0.25 * limit)
    return ByteBudget(rate, burst, now)
