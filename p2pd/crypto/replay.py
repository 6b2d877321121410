"""Sliding anti-replay window over 64-bit packet counters (RFC 6479 in spirit).

The window accepts a counter that is new and no more than ``size - 1`` below
the highest counter accepted so far. Instead of RFC 6479's bitmap it keeps a
ring of ``size`` slots: slot ``c % size`` holds the *generation* ``c // size``
of the last counter recorded there, as ``generation % 65535 + 1`` in 16 bits
(0: never used). A counter inside the window was seen exactly when its slot
holds its own generation: a newer occupant of the slot would be ``size`` or
more above it, outside the window, and an older one is of an older
generation. Two generations share a stored value only 65535 generations
apart (134 million counters with the default size); a slot last written that
long ago can make a new counter look seen (a false drop, never a replay let
through), which only a sender that skips that many counters at once could
cause, and p2pd senders renew their keys after 2^20. In Python this ring is
several times faster than shifting a 2048-bit integer, at 2 bytes a slot
(4 KiB for the default window). The last 64-bit value, 2^64 - 1, is never
accepted; senders stop far below.

The size is the receiver's choice (docs/protocol.md 5.3): enough counters to
cover the reordering its peer's packet rate can bring. Sessions between
daemons keep 2048 (at least 1024: half a second at 2000 packets a second);
a coordinator's sessions, a few packets a second each, keep 128.
:data:`MIN_WINDOW` keeps the ring exact for every counter a keypair can use:
a stored generation aliases only 65535 generations later, 65535 * 128 =
8,388,480 counters on, beyond reject_after_messages (2^22).

``check`` has no side effects, so a packet is tested before decryption and
recorded with ``update`` only after it authenticates: a forged packet never
moves the window.
"""

from __future__ import annotations

from array import array

COUNTER_LIMIT = (1 << 64) - 1  # counters are unsigned 64-bit values below this
DEFAULT_WINDOW = 2048
MIN_WINDOW = 128
_PERIOD = 65535  # generations stored as 1..65535 in a 16-bit slot


class ReplayWindow:
    __slots__ = ("_size", "_slots", "highest")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < MIN_WINDOW:
            raise ValueError(f"replay window size {size} is below the minimum of {MIN_WINDOW}")
        self._size = size
        self._slots = array("H", [0]) * size  # zeros: nothing seen yet
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
        size = self._size
        if top - counter >= size:
            return False
        return self._slots[counter % size] != counter // size % _PERIOD + 1

    def update(self, counter: int) -> None:
        """Record ``counter`` as accepted; call only after ``check`` and authentication."""
        size = self._size
        self._slots[counter % size] = counter // size % _PERIOD + 1
        if counter > self.highest:  # noqa: PLR1730 (max() is a slower call here)
            self.highest = counter
