"""Sliding anti-replay window over 64-bit packet counters (RFC 6479).

The window accepts a counter that is new and no more than ``size - 1`` below
the highest counter accepted so far. As in RFC 6479 it is a ring of 64-bit
words, one bit per counter: counter ``c`` is bit ``c % 64`` of word
``(c // 64) % words``, and the ring has ``size // 64 + 2`` words, so that
every counter inside the window has its own bit (the word of the highest
counter is partly the future, the oldest word partly the past beyond the
window). When the highest counter moves into a new word, the words it passes
are cleared before they are used again. It is exact: it accepts what a set of
every counter accepted would, no false drop and no replay. One bit a counter:
272 bytes for a window of 2048, 32 for 128. The last 64-bit value, 2^64 - 1,
is never accepted; senders stop far below.

The size is the receiver's choice (docs/protocol.md 5.3): enough counters to
cover the reordering its peer's packet rate can bring. Sessions between
daemons keep 2048 (at least 1024: half a second at 2000 packets a second);
a coordinator's sessions, a few packets a second each, keep 128, the
floor (:data:`MIN_WINDOW`).

``check`` has no side effects, so a packet is tested before decryption and
recorded with ``update`` only after it authenticates: a forged packet never
moves the window.
"""

from __future__ import annotations

from array import array

COUNTER_LIMIT = (1 << 64) - 1  # counters are unsigned 64-bit values below this
DEFAULT_WINDOW = 2048
MIN_WINDOW = 128


class ReplayWindow:
    __slots__ = ("_count", "_size", "_words", "highest")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < MIN_WINDOW:
            raise ValueError(f"replay window size {size} is below the minimum of {MIN_WINDOW}")
        self._size = size
        self._count = size // 64 + 2  # words in the ring
        self._words = array("Q", bytes(8 * self._count))  # zeros: nothing seen yet
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
        return not self._words[(counter >> 6) % self._count] >> (counter & 63) & 1

    def update(self, counter: int) -> None:
        """Record ``counter`` as accepted; call only after ``check`` and authentication."""
        block = counter >> 6
        if counter > self.highest:
            if block != self.highest >> 6:
                self._advance(block)
            self.highest = counter
        self._words[block % self._count] |= 1 << (counter & 63)

    def _advance(self, block: int) -> None:
        """The highest counter moves on to word ``block``: clear the words it passes
        (all of them after a jump of a whole ring) for the counters to come."""
        words, count = self._words, self._count
        passed = block - (self.highest >> 6)
        for old in range(block - min(passed, count) + 1, block + 1):
            words[old % count] = 0
