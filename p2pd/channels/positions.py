"""The position channel: unreliable, sequenced, delta-coded against acked states.

The sender keeps only the newest position not yet sent (an older one is
superseded, never queued behind it), numbers what it sends with a 16-bit seq
and remembers the last :data:`HISTORY` states sent. The receiver delivers a
position only when its seq is newer than every one delivered before (a late
update never overwrites a newer one) and acknowledges the newest seq it got
(POSITION_ACK, piggybacked). The sender codes each update against the newest
state the peer acknowledged, or sends a full state when it has none recent
enough.
"""

from __future__ import annotations

from collections import OrderedDict

from p2pd.channels.frames import POSITION_ACK, POSITION_HEADER, seq16_newer
from p2pd.channels.position_codec import PositionState, decode_position_untrusted, encode_position
from p2pd.wire.frames import FRAME_HEADER
from p2pd.wire.types import PacketType

HISTORY = 64  # states remembered on each side, by seq
MAX_BASELINE_AGE = 48  # seqs; an older acknowledged state is not used as a baseline
_POSITION = int(PacketType.POSITION_UPDATE)
_POSITION_ACK = 0x0014
_pack_frame_header = FRAME_HEADER.pack


class PositionSender:
    """What is not sent: an update that only advances the clock of the last one
    sent, and a walking player's update while the peer's dead reckoning from the
    last one sent stays within ``error_budget`` cells and that one is younger
    than ``refresh_ms`` (by the player's clock, ``tick``). Both hold only while
    the last one sent is acknowledged, or younger than ``resend_ms``: past that
    without an ack it may be lost, and the next update goes out. With
    ``error_budget`` None every update goes out (a fixed-rate stream).
    :meth:`repeat` sends the last one sent once more while the peer has not
    acknowledged it (the daemon does so for a stop or a turn: see
    :class:`p2pd.sync.requests.SyncApi`)."""

    __slots__ = ("_baseline", "_history", "_last_sent", "_seq", "bytes_sent", "error_budget",
                 "full_states", "pending", "predicted", "refresh_ms", "repeated", "resend_ms",
                 "sent", "superseded", "unchanged")

    def __init__(self, error_budget: int | None = 1, refresh_ms: int = 1000,
                 resend_ms: int = 1000) -> None:
        self.error_budget = error_budget
        self.refresh_ms = refresh_ms
        self.resend_ms = resend_ms
        self._seq = 0
        self.pending: PositionState | None = None
        self._history: OrderedDict[int, PositionState] = OrderedDict()
        self._baseline: tuple[int, PositionState] | None = None
        self.sent = 0
        self.superseded = 0  # queued updates replaced by a newer one before going out
        self.full_states = 0
        self.bytes_sent = 0  # position bytes after the channel header
        self.unchanged = 0  # updates not sent: the peer already has this place
        self.predicted = 0  # updates not sent: the peer's prediction is close enough
        self.repeated = 0  # updates sent again by repeat()
        self._last_sent: PositionState | None = None

    def queue(self, state: PositionState, *, fresh: bool = False) -> None:
        """The newest position; an unsent older one is superseded. A position that
        only advances the clock of the last one sent, once the peer acknowledged
        that one, carries no news and is not sent, nor one the peer predicts
        (``error_budget``), unless it replaces one not sent yet. ``fresh``: sent
        whatever the peer has (it dropped it: a hidden player shown again)."""
        if self.pending is not None:
            # what replaces one about to go goes in its place: it carries the same
            # news or newer (the pending one may be a course change, a repeat of
            # one, or fresh), though compared with the last sent it may look old
            self.superseded += 1
            self.pending = None
            fresh = True
        last = self._last_sent
        baseline = self._baseline
        if not fresh and last is not None and self.error_budget is not None and (
            (baseline is not None and baseline[1] is last)  # the peer has it
            or 0 <= state.tick - last.tick < self.resend_ms  # or its ack may be on the way
        ):
            if _same_place(state, last):
                self.unchanged += 1
                return
            if self._predictable(last, state):
                self.predicted += 1
                return
        self.pending = state

    def repeat(self) -> bool:
        """Send the last state sent once more, under a new seq, unless the peer
        acknowledged it or a newer one waits; True when it is queued."""
        last = self._last_sent
        if last is None or self.pending is not None:
            return False
        baseline = self._baseline
        if baseline is not None and baseline[1] is last:
            return False
        self.pending = last
        self.repeated += 1
        return True

    def _predictable(self, last: PositionState, state: PositionState) -> bool:
        """The peer, walking ``last`` on, would be within the error budget of ``state``."""
        if not (last.moving and state.moving and state.dir == last.dir
                and state.speed == last.speed and state.map == last.map):
            return False
        elapsed = state.tick - last.tick
        if not 0 <= elapsed < self.refresh_ms:
            return False
        x, y = predict(last, state.tick)
        budget = self.error_budget
        assert budget is not None
        return abs(state.x - x) <= budget and abs(state.y - y) <= budget

    def frame_size(self) -> int:
        """Bytes the pending update will take (0 when there is none)."""
        if self.pending is None:
            return 0
        return len(self._encode(self.pending)[1]) + FRAME_HEADER.size + POSITION_HEADER.size

    def _encode(self, state: PositionState) -> tuple[int, bytes]:
        seq = self._seq
        baseline = self._baseline
        if baseline is not None:
            if (seq - baseline[0]) & 0xFFFF <= MAX_BASELINE_AGE:
                return baseline[0], encode_position(state, baseline[1])
            self._baseline = None  # too old, for good: 16-bit ages wrap around
        return seq, encode_position(state, None)

    def take(self) -> bytes | None:
        """The frame of the pending update, which is then sent."""
        state = self.pending
        if state is None:
            return None
        self.pending = None
        base_seq, coded = self._encode(state)
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFF
        if base_seq == seq:
            self.full_states += 1
        self._history[seq] = state
        self._last_sent = state
        if len(self._history) > HISTORY:
            self._history.popitem(last=False)
        self.sent += 1
        self.bytes_sent += len(coded)
        body = POSITION_HEADER.pack(seq, base_seq) + coded
        return _pack_frame_header(_POSITION, len(body)) + body

    def on_ack(self, seq: int) -> None:
        state = self._history.get(seq)
        if state is None:
            return
        if self._baseline is None or seq16_newer(seq, self._baseline[0]):
            self._baseline = (seq, state)


STEPS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
"""Cell step of each facing direction 0-7 (0 north, counter-clockwise), as the
game's client and server use them."""
DIAGONAL_COST = 1.4  # a diagonal step takes this many times the speed (DOMAIN.md)


def predict(state: PositionState, tick: int) -> tuple[int, int]:
    """Dead reckoning: the cell a player in ``state`` reaches by ``tick`` walking
    straight on (the cell it is on, when it stands)."""
    if not state.moving or tick <= state.tick:
        return state.x, state.y
    dx, dy = STEPS[state.dir]
    step_ms = state.speed * (DIAGONAL_COST if dx and dy else 1.0)
    steps = int((tick - state.tick) // step_ms)
    return state.x + dx * steps, state.y + dy * steps


def _same_place(a: PositionState, b: PositionState) -> bool:
    """Equal but for the clock."""
    return (a.x == b.x and a.y == b.y and a.dir == b.dir and a.moving == b.moving
            and a.map == b.map and a.speed == b.speed)


class PositionReceiver:
    __slots__ = ("_newest", "_states", "ack_pending", "no_baseline", "stale")

    def __init__(self) -> None:
        self._newest: int | None = None
        self._states: OrderedDict[int, PositionState] = OrderedDict()
        self.ack_pending = False
        self.stale = 0  # arrived after a newer one (or twice)
        self.no_baseline = 0  # coded against a state this side no longer has

    def receive(self, seq: int, base_seq: int, coded: bytes) -> PositionState | None:
        """The position to deliver, or None when it is stale or undecodable.
        Raises BadPacket for malformed bytes."""
        newest = self._newest
        if newest is not None and not seq16_newer(seq, newest):
            self.stale += 1
            self.ack_pending = True
            return None
        if base_seq == seq:
            state = decode_position_untrusted(coded, None)
        else:
            baseline = self._states.get(base_seq)
            if baseline is None:
                self.no_baseline += 1
                return None
            state = decode_position_untrusted(coded, baseline)
        self._newest = seq
        self._states[seq] = state
        if len(self._states) > HISTORY:
            self._states.popitem(last=False)
        self.ack_pending = True
        return state

    def ack_frame(self) -> bytes | None:
        self.ack_pending = False
        if self._newest is None:
            return None
        return _pack_frame_header(_POSITION_ACK, POSITION_ACK.size) + POSITION_ACK.pack(
            self._newest)
