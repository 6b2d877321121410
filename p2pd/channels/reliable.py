"""Reliable channels: sequence numbers, acks, retransmission, reassembly.

A :class:`ReliableSender` numbers the messages of one channel (u32 seqs, one
per datagram-sized part), keeps each part until the peer acknowledges it and
retransmits it when its retransmission timeout (RFC 6298, doubled per
retransmission) runs out or when three later acks passed it by (fast
retransmit). At most :data:`WINDOW` seqs are in flight beyond the oldest one
the peer has not acknowledged.

Two receivers sit on the other side:

- :class:`OrderedReceiver` (chat, AI interactions): delivers every message
  exactly once, in seq order, joining fragments.
- :class:`LatestValueReceiver` (environment, AI Legend): delivers a message
  as soon as it is complete unless a newer value of the same key was already
  delivered. Its sender gives up a superseded value instead of retransmitting
  it, and tells the receiver so with the *floor* (every seq below it is either
  acknowledged or given up), which lets the cumulative ack move on.

Nothing here touches a clock or a socket: times come in as ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from p2pd.channels.frames import (
    ACK,
    ACK_BITS,
    FRAGMENT,
    FRAGMENT_FLOOR,
    MAX_FRAGMENTS,
    MAX_KEY,
    SEQ,
    SEQ_FLOOR,
    TYPE_OF_CHANNEL,
    Channel,
    Fragment,
    encode_keyed,
    split_keyed_untrusted,
)
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.frames import FRAME_HEADER

SEQ_LIMIT = 0xFFFFFFFF  # the one u32 seq never used: next must stay a u32
WINDOW = 128  # seqs a receiver accepts beyond its cumulative ack; a sender's flight
FAST_RETRANSMIT_ACKS = 3  # acks that pass a part by before it is sent again
MAX_KEYS = 4096  # latest-value keys a receiver remembers
MAX_PARTIALS = 16  # latest-value messages being reassembled at once
PARTIAL_TIMEOUT = 10.0  # seconds a latest-value message may take to complete
_pack_frame_header = FRAME_HEADER.pack


class SendQueueFull(Exception):
    """The channel holds as much unsent data as it may; the caller should slow down."""


class _Part:
    """One seq of a channel: a whole message or one fragment of it."""

    __slots__ = ("content", "count", "due", "first_sent", "index", "key", "last_sent",
                 "message", "missed", "sends", "seq")

    def __init__(self, seq: int, content: bytes, index: int, count: int, key: bytes | None,
                 message: bytes) -> None:
        self.seq = seq
        self.content = content
        self.message = message  # the whole payload the part belongs to (shared, not copied)
        self.index = index
        self.count = count
        self.key = key
        self.first_sent = 0.0
        self.last_sent = 0.0
        self.sends = 0
        self.missed = 0
        self.due = 0.0


class ReliableSender:
    """The sending half of one reliable channel."""

    __slots__ = ("_by_key", "_earliest_due", "_flight", "_latest_value", "_max_queued_bytes",
                 "_next_seq", "_part_size", "_queue", "_queued_bytes", "_rto", "_rto_max",
                 "_type", "channel", "messages", "retransmissions", "sends", "superseded")

    def __init__(self, channel: Channel, *, part_size: int, max_queued_bytes: int,
                 rto: Callable[[], float], rto_max: float) -> None:
        self.channel = channel
        self._type = int(TYPE_OF_CHANNEL[channel])
        self._latest_value = channel is Channel.ENVIRONMENT
        self._part_size = part_size
        self._max_queued_bytes = max_queued_bytes
        self._rto = rto
        self._rto_max = rto_max
        self._next_seq = 0
        self._queue: list[_Part] = []  # numbered, never sent
        self._queued_bytes = 0
        self._flight: dict[int, _Part] = {}  # sent, not acknowledged; in seq order
        # latest value: the parts of each key (made with the first key)
        self._by_key: dict[bytes, list[_Part]] | None = None
        self._earliest_due: float | None = None
        # counters
        self.messages = 0
        self.sends = 0  # transmissions of parts, first ones and retransmissions
        self.retransmissions = 0
        self.superseded = 0

    # -- queueing ------------------------------------------------------------

    def _content(self, payload: bytes, key: bytes | None) -> tuple[bytes, int]:
        """What the parts carry, and how many parts; raises as queue() does."""
        if self._latest_value:
            if key is None:
                raise ValueError("a latest-value message needs a key")
            content = encode_keyed(key, payload)
        else:
            content = payload
        if self._queued_bytes + len(content) > self._max_queued_bytes:
            raise SendQueueFull(
                f"channel {self.channel.name.lower()} already holds {self._queued_bytes} unsent"
                f" bytes (limit {self._max_queued_bytes})"
            )
        count = max(1, -(-len(content) // self._part_size))
        if count > MAX_FRAGMENTS:
            raise ValueError(f"message of {len(payload)} bytes needs more than"
                             f" {MAX_FRAGMENTS} fragments")
        return content, count

    def check(self, payload: bytes, key: bytes | None = None) -> None:
        """Raise what queue() would raise, queueing nothing."""
        self._content(payload, key)

    def queue(self, payload: bytes, key: bytes | None = None) -> None:
        """Number ``payload`` (split into parts when it does not fit one datagram).
        Raises SendQueueFull, or ValueError for a message that cannot travel."""
        content, count = self._content(payload, key)
        size = self._part_size
        if key is not None:
            self._supersede(key)
        parts = []
        for index in range(count):
            part = _Part(self._next_seq, content[index * size:(index + 1) * size], index, count,
                         key, payload)
            self._next_seq += 1
            parts.append(part)
        self._queue.extend(parts)
        self._queued_bytes += len(content)
        self.messages += 1
        if key is not None:
            by_key = self._by_key
            if by_key is None:
                by_key = self._by_key = {}
            by_key[key] = parts

    def _supersede(self, key: bytes) -> None:
        if self._by_key is None:
            return
        old = self._by_key.pop(key, None)
        if not old:
            return
        dropped = False
        for part in old:
            if self._flight.pop(part.seq, None) is not None:
                dropped = True
            elif part in self._queue:
                self._queue.remove(part)
                self._queued_bytes -= len(part.content)
                dropped = True
        if dropped:
            self.superseded += 1

    def unacked(self) -> list[tuple[bytes, bytes | None]]:
        """Every message not yet wholly acknowledged, oldest first, as
        (payload, key): what a successor of this channel must send again."""
        seen: set[int] = set()
        out = []
        for part in (*self._flight.values(), *self._queue):
            first = part.seq - part.index
            if first not in seen:
                seen.add(first)
                out.append((first, part.message, part.key))
        out.sort(key=lambda item: item[0])
        return [(message, key) for _, message, key in out]

    def set_rto(self, rto: Callable[[], float]) -> None:
        self._rto = rto

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def in_flight(self) -> int:
        return len(self._flight)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing waiting for an ack."""
        return not self._queue and not self._flight

    def _queue_head(self) -> int:
        return self._queue[0].seq if self._queue else self._next_seq

    def floor(self) -> int:
        """Every seq below this is acknowledged or given up."""
        if self._flight:
            return next(iter(self._flight))
        return self._queue[0].seq if self._queue else self._next_seq

    # -- building frames -----------------------------------------------------

    def _frame(self, part: _Part) -> bytes:
        if part.count == 1:
            if self._latest_value:
                body = SEQ_FLOOR.pack(part.seq, self.floor()) + part.content
            else:
                body = SEQ.pack(part.seq) + part.content
            return _pack_frame_header(self._type, len(body)) + body
        if self._latest_value:
            header = FRAGMENT_FLOOR.pack(self._type, part.seq, part.index, part.count,
                                         self.floor())
        else:
            header = FRAGMENT.pack(self._type, part.seq, part.index, part.count)
        body = header + part.content
        return _pack_frame_header(0x0015, len(body)) + body

    def has_due(self, now: float) -> bool:
        due = self._earliest_due
        return due is not None and now >= due

    def take_retransmissions(self, now: float, room: int, out: list[bytes]) -> int:
        """Append due retransmissions that fit in ``room`` bytes; returns bytes used."""
        used = 0
        earliest: float | None = None
        for part in self._flight.values():
            if part.due <= now:
                frame = self._frame(part)
                if used + len(frame) <= room:
                    out.append(frame)
                    used += len(frame)
                    self._sent(part, now)
                    self.retransmissions += 1
            if earliest is None or part.due < earliest:
                earliest = part.due
        self._earliest_due = earliest
        return used

    def can_send_new(self) -> bool:
        if not self._queue:
            return False
        if not self._flight:
            return True
        return self._queue[0].seq - next(iter(self._flight)) < WINDOW

    def take_new(self, now: float, room: int, out: list[bytes]) -> int:
        """Append new parts that fit in ``room`` bytes (within the window)."""
        used = 0
        queue = self._queue
        flight = self._flight
        taken = 0
        for part in queue:  # the parts taken leave the queue at the end, at once
            if flight and part.seq - next(iter(flight)) >= WINDOW:
                break
            frame = self._frame(part)  # its floor: the first in flight, else this part
            if used + len(frame) > room:
                break
            taken += 1
            self._queued_bytes -= len(part.content)
            out.append(frame)
            used += len(frame)
            part.first_sent = now
            flight[part.seq] = part
            self._sent(part, now)
        if taken:
            del queue[:taken]
        return used

    def next_frame_size(self) -> int:
        """Bytes the next new frame needs (0 when none is sendable)."""
        if not self.can_send_new():
            return 0
        return len(self._frame(self._queue[0]))

    def _sent(self, part: _Part, now: float) -> None:
        self.sends += 1
        part.sends += 1
        part.last_sent = now
        part.missed = 0
        backoff = self._rto() * (1 << min(part.sends - 1, 16))
        part.due = now + min(backoff, self._rto_max)
        if self._earliest_due is None or part.due < self._earliest_due:
            self._earliest_due = part.due

    def next_due(self) -> float | None:
        return self._earliest_due

    # -- acknowledgements ----------------------------------------------------

    def on_ack(self, next_seq: int, bits: int, now: float) -> list[float]:
        """Apply an ACK; returns RTT samples from parts sent only once (Karn)."""
        flight = self._flight
        if not flight:
            return []
        samples: list[float] = []
        newest_acked = (-1.0, -1)  # (last sent, seq) of the newest part acked now
        acked: list[int] = [seq for seq in flight if seq < next_seq]
        while bits:
            low = bits & -bits
            seq = next_seq + low.bit_length()  # bit i is seq next + 1 + i
            if seq in flight:
                acked.append(seq)
            bits ^= low
        for seq in acked:
            part = flight.pop(seq)
            if part.sends == 1:
                samples.append(now - part.first_sent)
            newest_acked = max(newest_acked, (part.last_sent, part.seq))
            by_key = self._by_key
            if part.key is not None and by_key is not None:
                parts = by_key.get(part.key)
                if parts is not None and parts[-1].seq < self._queue_head() and all(
                        p.seq not in flight for p in parts):
                    del by_key[part.key]  # the newest value is through
        if not flight:
            flight.clear()  # all acknowledged: give back the table (links idle at length)
        if acked:
            earliest: float | None = None
            for part in flight.values():
                if (part.last_sent, part.seq) < newest_acked:  # sent before it, still missing
                    part.missed += 1
                    if part.missed >= FAST_RETRANSMIT_ACKS:
                        part.due = now
                        part.missed = 0
                if earliest is None or part.due < earliest:
                    earliest = part.due
            self._earliest_due = earliest
        return samples


class OrderedReceiver:
    """Receiving half of an ordered channel: exactly once, in order."""

    __slots__ = ("_buffer", "_max_message", "ack_pending", "beyond_window", "channel",
                 "duplicates", "next")

    def __init__(self, channel: Channel, max_message: int) -> None:
        self.channel = channel
        self._max_message = max_message
        self.next = 0
        # parts that arrived early: None while there are none (the common case)
        self._buffer: dict[int, bytes | Fragment] | None = None
        self.ack_pending = False
        self.duplicates = 0
        self.beyond_window = 0

    def receive(self, seq: int, item: bytes | Fragment, deliver: Callable[[bytes], None]) -> None:
        if seq >= SEQ_LIMIT:
            raise BadPacket(DropReason.MALFORMED, f"seq {seq} out of range")
        self.ack_pending = True
        if seq == self.next and not self._buffer and isinstance(item, bytes):
            self.next = seq + 1  # the common case: the next message, whole, nothing held
            deliver(item)
            return
        buffer = self._buffer
        if seq < self.next or (buffer is not None and seq in buffer):
            self.duplicates += 1
            return
        if seq >= self.next + WINDOW:
            self.beyond_window += 1
            return
        if buffer is None:
            buffer = self._buffer = {}
        buffer[seq] = item
        if self.next in buffer:  # the next message, or a part of it, is here
            self._drain(buffer, deliver)

    def receive_typed(self, seq: int, item: bytes | Fragment, packet_type: int,
                      deliver: Callable[[int, bytes], None]) -> None:
        """:meth:`receive`, delivering ``(packet_type, message)``: the next whole
        message, the common case, without a closure or the buffer."""
        if seq == self.next and seq < SEQ_LIMIT and not self._buffer and isinstance(item, bytes):
            self.ack_pending = True
            self.next = seq + 1
            deliver(packet_type, item)
            return
        self.receive(seq, item, lambda message: deliver(packet_type, message))

    def _drain(self, buffer: dict[int, bytes | Fragment],
               deliver: Callable[[bytes], None]) -> None:
        """Deliver every complete message from ``next`` on. A message that cannot be
        delivered (inconsistent fragments, too large) is dropped whole, its seqs
        passed, and the draining goes on; then BadPacket names the first problem."""
        problem = ""
        while self.next in buffer:
            item = buffer[self.next]
            if isinstance(item, bytes):
                del buffer[self.next]
                self.next += 1
                deliver(item)
                continue
            if item.index != 0:
                del buffer[self.next]
                self.next += 1
                problem = problem or f"fragment {item.index} of {item.count} opens a message"
                continue
            last = self.next + item.count
            if any(seq not in buffer for seq in range(self.next + 1, last)):
                break  # wait for the rest
            parts: list[bytes] = []
            for index, seq in enumerate(range(self.next, last)):
                piece = buffer.pop(seq)
                if (not isinstance(piece, Fragment) or piece.index != index
                        or piece.count != item.count):
                    problem = problem or f"seq {seq} does not continue the message at {item.seq}"
                else:
                    parts.append(piece.part)
            self.next = last
            if len(parts) != item.count:
                continue
            message = b"".join(parts)
            if len(message) > self._max_message:
                problem = problem or f"reassembled message of {len(message)} bytes"
                continue
            deliver(message)
        if not buffer and self._buffer is buffer:
            self._buffer = None  # nothing held any more
        if problem:
            raise BadPacket(DropReason.MALFORMED, f"{self.channel.name.lower()}: {problem}")

    def ack_frame(self) -> bytes:
        self.ack_pending = False
        return _ack_frame(self.channel, self.next, self._buffer if self._buffer is not None else ())

    @property
    def buffered(self) -> int:
        return len(self._buffer) if self._buffer is not None else 0


class _Partial:
    __slots__ = ("count", "parts", "size", "started")

    def __init__(self, count: int, started: float) -> None:
        self.count = count
        self.started = started
        self.parts: dict[int, bytes] = {}
        self.size = 0


class LatestValueReceiver:
    """Receiving half of a latest-value channel."""

    __slots__ = ("_latest", "_max_message", "_partials", "_seen", "ack_pending",
                 "beyond_window", "channel", "duplicates", "expired", "next", "stale")

    def __init__(self, channel: Channel, max_message: int) -> None:
        self.channel = channel
        self._max_message = max_message
        self.next = 0
        self._seen: set[int] = set()  # seqs >= next that arrived
        self._latest: OrderedDict[bytes, int] = OrderedDict()  # key -> seq delivered
        self._partials: OrderedDict[int, _Partial] = OrderedDict()  # first seq -> parts
        self.ack_pending = False
        self.duplicates = 0
        self.beyond_window = 0
        self.stale = 0  # older values that arrived after a newer one
        self.expired = 0  # partial messages given up

    def receive(self, seq: int, floor: int, item: bytes | Fragment, now: float,
                deliver: Callable[[bytes, bytes], None]) -> None:
        if seq >= SEQ_LIMIT or floor >= SEQ_LIMIT:
            raise BadPacket(DropReason.MALFORMED, f"seq {seq} or floor {floor} out of range")
        self.ack_pending = True
        if seq < self.next or seq in self._seen:
            self.duplicates += 1
            return
        if seq >= max(self.next, floor) + WINDOW:
            self.beyond_window += 1
            return
        self._seen.add(seq)
        if floor > self.next:
            self._seen = {s for s in self._seen if s >= floor}
            self.next = floor
        while self.next in self._seen:
            self._seen.discard(self.next)
            self.next += 1
        if isinstance(item, bytes):
            self._complete(seq, item, deliver)
            return
        self._expire(now)
        first = item.first_seq
        partial = self._partials.get(first)
        if partial is None:
            if len(self._partials) >= MAX_PARTIALS:
                self._partials.popitem(last=False)
                self.expired += 1
            partial = self._partials[first] = _Partial(item.count, now)
        if item.count != partial.count:
            del self._partials[first]
            raise BadPacket(DropReason.MALFORMED, f"fragment counts differ at seq {first}")
        if item.index not in partial.parts:
            partial.parts[item.index] = item.part
            partial.size += len(item.part)
        if partial.size > self._max_message + 1 + MAX_KEY:  # the key travels in the content
            del self._partials[first]
            raise BadPacket(DropReason.MALFORMED, f"message at seq {first} exceeds the limit")
        if len(partial.parts) == partial.count:
            del self._partials[first]
            self._complete(first, b"".join(partial.parts[i] for i in range(partial.count)),
                           deliver)

    def _complete(self, seq: int, content: bytes, deliver: Callable[[bytes, bytes], None]) -> None:
        key, payload = split_keyed_untrusted(content)
        last = self._latest.get(key)
        if last is not None and last > seq:
            self.stale += 1
            return
        self._latest[key] = seq
        self._latest.move_to_end(key)
        if len(self._latest) > MAX_KEYS:
            self._latest.popitem(last=False)
        deliver(key, payload)

    def _expire(self, now: float) -> None:
        while self._partials:
            first, partial = next(iter(self._partials.items()))
            if now - partial.started < PARTIAL_TIMEOUT:
                return
            del self._partials[first]
            self.expired += 1

    def ack_frame(self) -> bytes:
        self.ack_pending = False
        return _ack_frame(self.channel, self.next, self._seen)

    @property
    def buffered(self) -> int:
        return sum(len(p.parts) for p in self._partials.values())


def _ack_frame(channel: Channel, next_seq: int, received: Iterable[int]) -> bytes:
    bits = 0
    limit = next_seq + 1 + ACK_BITS
    for seq in received:
        if next_seq < seq < limit:
            bits |= 1 << (seq - next_seq - 1)
    return _pack_frame_header(0x0013, ACK.size) + ACK.pack(channel, next_seq, bits)
