"""Sliding anti-replay window over 64-bit packet counters (RFC 6479 in spirit).

The window accepts a counter that is new and no more than ``size - 1`` below
the highest counter accepted so far. Instead of RFC 6479's bitmap it keeps a
ring of ``size`` slots in which slot ``c % size`` holds one more than the last
counter recorded there (0: never used): a counter inside the window was seen
exactly when its slot holds it plus one (a newer occupant of the slot would be
``size`` or more above it, which puts it outside the window). In Python this
is several times faster than shifting a 2048-bit integer, for 8 bytes a slot.
The last 64-bit value, 2^64 - 1, is never accepted; senders stop far below.

``check`` has no side effects, so a packet is tested before decryption and
recorded with ``update`` only after it authenticates: a forged packet never
moves the window.
"""

from __future__ import annotations

from array import array

COUNTER_LIMIT = (1 << 64) - 1  # counters are unsigned 64-bit values below this
DEFAULT_WINDOW = 2048


class ReplayWindow:
    __slots__ = ("_size", "_slots", "highest")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1024:
            raise ValueError(f"replay window size {size} is below the minimum of 1024")
        self._size = size
        self._slots = array("Q", [0]) * size  # zeros: nothing seen yet
        # Highest counter accepted so far, -1 before the first. Public so that a
        # caller can skip check() for the common in-order packet: a counter
        # above it is always new.
        self.highest = -1

    @property
    def size(self) -> int:
        return self._size

    def check(self, counter: int) -> bool:
        """True if ``counter`` is new and inside the window. Does not record it."""
        top = self.highest
        if counter > top:
            return counter < COUNTER_LIMIT
        if top - counter >= self._size:
            return False
        return self._slots[counter % self._size] != counter + 1

    def update(self, counter: int) -> None:
        """Record ``counter`` as accepted; call only after ``check`` and authentication."""
        self._slots[counter % self._size] = counter + 1
        if counter > self.highest:  # noqa: PLR1730 (max() is a slower call here)
            self.highest = counter
