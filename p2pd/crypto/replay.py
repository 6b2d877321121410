"""Sliding anti-replay window over 64-bit packet counters (RFC 6479 in spirit).

The window remembers the highest counter accepted so far and, as a bitmap held
in one Python integer, which of the ``size`` counters at or below it were seen.
``check`` has no side effects, so a packet is tested before decryption and
recorded with ``update`` only after it authenticates: a forged packet never
moves the window.
"""

from __future__ import annotations

COUNTER_LIMIT = 1 << 64  # counters are unsigned 64-bit values
DEFAULT_WINDOW = 2048


class ReplayWindow:
    __slots__ = ("_bits", "_mask", "_size", "_top")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1024:
            raise ValueError(f"replay window size {size} is below the minimum of 1024")
        self._size = size
        self._mask = (1 << size) - 1
        self._top = -1  # highest accepted counter; -1 before the first packet
        self._bits = 0  # bit i set: counter (top - i) was accepted

    @property
    def size(self) -> int:
        return self._size

    @property
    def highest(self) -> int:
        """Highest counter accepted so far, or -1."""
        return self._top

    def check(self, counter: int) -> bool:
        """True if ``counter`` is new and inside the window. Does not record it."""
        top = self._top
        if counter > top:
            return counter < COUNTER_LIMIT
        offset = top - counter
        if offset >= self._size:
            return False
        return not (self._bits >> offset) & 1

    def update(self, counter: int) -> None:
        """Record ``counter`` as accepted; call only after ``check`` and authentication."""
        top = self._top
        if counter > top:
            shift = counter - top
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self._size else 1
            self._top = counter
        else:
            self._bits |= 1 << (top - counter)
