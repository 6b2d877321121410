"""The channel layer (p2pd/channels/): reliable and latest-value channels, positions,
frame parsers, adaptive quality and how ChannelLink fills a datagram.

Everything runs in virtual time with seeded randomness: no sleeps, no clock.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
import struct
from collections.abc import Callable, Iterable

import pytest

from p2pd.channels import reliable
from p2pd.channels.frames import (
    MAX_FRAGMENTS,
    MAX_KEY,
    SEQ,
    SEQ_FLOOR,
    Channel,
    Fragment,
    encode_keyed,
    parse_ack_untrusted,
    parse_fragment_untrusted,
    parse_position_ack_untrusted,
    parse_position_header_untrusted,
    parse_seq_floor_untrusted,
    parse_seq_untrusted,
    seq16_newer,
    split_keyed_untrusted,
)
from p2pd.channels.link import ACK_RESERVE, MAX_EFFECTS, ChannelLink
from p2pd.channels.position_codec import PositionState, encode_position
from p2pd.channels.positions import MAX_BASELINE_AGE, PositionReceiver, PositionSender
from p2pd.channels.quality import LEVELS, PathSignals, QualityController
from p2pd.channels.reliable import (
    FAST_RETRANSMIT_ACKS,
    MAX_PARTIALS,
    PARTIAL_TIMEOUT,
    WINDOW,
    LatestValueReceiver,
    OrderedReceiver,
    ReliableSender,
    SendQueueFull,
)
from p2pd.wire.errors import BadPacket
from p2pd.wire.frames import decode_frames_untrusted
from p2pd.wire.types import PacketType

CHAT = int(PacketType.CHAT_MESSAGE)
AI = int(PacketType.AI_INTERACTION)
ENV = int(PacketType.ENVIRONMENTAL)
EFFECT = int(PacketType.VISUAL_EFFECT)
POSITION = int(PacketType.POSITION_UPDATE)
ACK_TYPE = int(PacketType.ACK)
POSITION_ACK_TYPE = int(PacketType.POSITION_ACK)
FRAGMENT_TYPE = int(PacketType.FRAGMENT)
PING = int(PacketType.PING)
DISCONNECT = int(PacketType.DISCONNECT)

BIG_ROOM = 1 << 20  # room that never limits a direct sender test


# -- helpers -----------------------------------------------------------------


def one_frame(frame: bytes) -> tuple[int, bytes]:
    """(type, body) of one encoded frame, parsed by the wire layer's frame-list parser."""
    frames = decode_frames_untrusted(frame)
    assert len(frames) == 1
    frame_type, body = frames[0]
    return int(frame_type), body


def frame_types(frames: Iterable[bytes]) -> list[int]:
    return [one_frame(f)[0] for f in frames]


def make_sender(channel: Channel = Channel.CHAT, *, part_size: int = 1000,
                max_queued_bytes: int = 1 << 20, rto: float = 0.5,
                rto_max: float = 4.0) -> ReliableSender:
    return ReliableSender(channel, part_size=part_size, max_queued_bytes=max_queued_bytes,
                          rto=lambda: rto, rto_max=rto_max)


def take_all_new(sender: ReliableSender, now: float, room: int = BIG_ROOM) -> list[bytes]:
    out: list[bytes] = []
    sender.take_new(now, room, out)
    return out


def take_due(sender: ReliableSender, now: float, room: int = BIG_ROOM) -> list[bytes]:
    out: list[bytes] = []
    sender.take_retransmissions(now, room, out)
    return out


def seq_of(frame: bytes) -> int:
    """The channel seq carried by a reliable data frame or a FRAGMENT."""
    frame_type, body = one_frame(frame)
    if frame_type == FRAGMENT_TYPE:
        return parse_fragment_untrusted(body).seq
    return parse_seq_untrusted(body)[0]


def apply_ack(sender: ReliableSender, ack_frame: bytes, now: float) -> list[float]:
    frame_type, body = one_frame(ack_frame)
    assert frame_type == ACK_TYPE
    channel, next_seq, bits = parse_ack_untrusted(body)
    assert channel is sender.channel
    return sender.on_ack(next_seq, bits, now)


def ack_of(channel: Channel, next_seq: int, acked: Iterable[int] = ()) -> tuple[int, int]:
    """(next, bits) of an ACK saying every seq < next_seq and the seqs of ``acked`` arrived."""
    bits = 0
    for seq in acked:
        bits |= 1 << (seq - next_seq - 1)
    return next_seq, bits


class OrderedEnd:
    """The receiving side of an ordered channel, dispatching as ChannelLink.on_frame does."""

    def __init__(self, channel: Channel = Channel.CHAT, max_message: int = 1 << 20) -> None:
        self.receiver = OrderedReceiver(channel, max_message)
        self.delivered: list[bytes] = []

    def feed(self, frame: bytes) -> None:
        frame_type, body = one_frame(frame)
        if frame_type == FRAGMENT_TYPE:
            fragment = parse_fragment_untrusted(body)
            self.receiver.receive(fragment.seq, fragment, self.delivered.append)
        else:
            seq, payload = parse_seq_untrusted(body)
            self.receiver.receive(seq, payload, self.delivered.append)


class LatestEnd:
    """The receiving side of a latest-value channel, dispatching as ChannelLink.on_frame does."""

    def __init__(self, max_message: int = 1 << 20) -> None:
        self.receiver = LatestValueReceiver(Channel.ENVIRONMENT, max_message)
        self.delivered: list[tuple[bytes, bytes]] = []

    def _deliver(self, key: bytes, payload: bytes) -> None:
        self.delivered.append((key, payload))

    def feed(self, frame: bytes, now: float) -> None:
        frame_type, body = one_frame(frame)
        if frame_type == FRAGMENT_TYPE:
            fragment = parse_fragment_untrusted(body)
            self.receiver.receive(fragment.seq, fragment.floor, fragment, now, self._deliver)
        else:
            assert frame_type == ENV
            seq, floor, content = parse_seq_floor_untrusted(body)
            self.receiver.receive(seq, floor, content, now, self._deliver)


class Wire:
    """One direction of a bad network: each frame is lost, duplicated and delayed at
    random, so what arrives is a permutation of what survived."""

    def __init__(self, rng: random.Random, *, loss: float, duplicate: float,
                 max_delay: float) -> None:
        self._rng = rng
        self._loss = loss
        self._duplicate = duplicate
        self._max_delay = max_delay
        self._heap: list[tuple[float, int, bytes]] = []
        self._count = 0

    def send(self, items: Iterable[bytes], now: float) -> None:
        rng = self._rng
        for item in items:
            if rng.random() < self._loss:
                continue
            copies = 2 if rng.random() < self._duplicate else 1
            for _ in range(copies):
                self._count += 1
                heapq.heappush(self._heap,
                               (now + rng.uniform(0.0, self._max_delay), self._count, item))

    def arrivals(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    @property
    def empty(self) -> bool:
        return not self._heap


def walk(i: int) -> PositionState:
    return PositionState("prontera", 100 + i % 50, 200 + (i // 50) % 50, i % 8, 150, i % 3 != 0,
                         1_000 + 200 * i)


def send_everything(sender: ReliableSender, now: float = 0.0) -> list[bytes]:
    """Every frame of what the sender holds, acknowledging each batch so the window moves."""
    frames: list[bytes] = []
    while not sender.idle:
        new = take_all_new(sender, now)
        assert new
        frames += new
        sender.on_ack(max(seq_of(f) for f in new) + 1, 0, now)
    return frames


# -- ReliableSender + OrderedReceiver ------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ordered_exactly_once_in_order_under_loss_duplication_and_reordering(seed: int) -> None:
    rng = random.Random(seed)
    sender = make_sender(part_size=32, rto=0.2, rto_max=1.0)
    end = OrderedEnd()
    sizes = [0, 1, 31, 32, 33, 64, 65, 200]
    messages = [bytes([i % 256]) + rng.randbytes(rng.choice(sizes)) for i in range(300)]
    forward = Wire(rng, loss=0.25, duplicate=0.15, max_delay=0.2)
    backward = Wire(rng, loss=0.25, duplicate=0.15, max_delay=0.2)
    queued = 0
    now = 0.0
    for _ in range(20_000):
        while queued < len(messages) and rng.random() < 0.5:
            sender.queue(messages[queued])
            queued += 1
        out: list[bytes] = []
        used = sender.take_retransmissions(now, 1200, out)
        sender.take_new(now, 1200 - used, out)
        forward.send(out, now)
        for frame in forward.arrivals(now):
            end.feed(frame)
        if end.receiver.ack_pending:
            backward.send([end.receiver.ack_frame()], now)
        for frame in backward.arrivals(now):
            apply_ack(sender, frame, now)
        if queued == len(messages) and sender.idle and forward.empty:
            break
        now += 0.01
    assert end.delivered == messages
    assert sender.idle
    assert end.receiver.buffered == 0
    assert end.receiver.duplicates > 0  # the wire duplicated and the sender retransmitted
    assert sender.retransmissions > 0


def test_duplicates_are_counted_and_not_delivered_again() -> None:
    sender = make_sender()
    end = OrderedEnd()
    for payload in (b"zero", b"one", b"two"):
        sender.queue(payload)
    f0, f1, f2 = take_all_new(sender, 0.0)
    end.feed(f1)  # buffered, waiting for seq 0
    end.feed(f1)  # duplicate of a buffered seq
    assert end.receiver.duplicates == 1
    end.feed(f0)
    end.feed(f0)  # duplicate of a delivered seq
    end.feed(f2)
    end.feed(f1)
    assert end.delivered == [b"zero", b"one", b"two"]
    assert end.receiver.duplicates == 3


def test_seq_beyond_window_is_refused_and_counted() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    delivered: list[bytes] = []
    receiver.receive(WINDOW, b"too far", delivered.append)
    receiver.receive(WINDOW + 1000, b"much too far", delivered.append)
    assert receiver.beyond_window == 2
    assert receiver.buffered == 0
    receiver.receive(WINDOW - 1, b"last in window", delivered.append)
    assert receiver.beyond_window == 2
    assert receiver.buffered == 1
    for seq in range(WINDOW - 1):
        receiver.receive(seq, b"%d" % seq, delivered.append)
    assert delivered == [b"%d" % s for s in range(WINDOW - 1)] + [b"last in window"]
    assert receiver.next == WINDOW
    # the refused seq was not kept: it is accepted (once) when it comes again in the window
    receiver.receive(WINDOW, b"too far", delivered.append)
    assert delivered[-1] == b"too far"
    assert receiver.duplicates == 0


def test_ack_frame_bytes_encode_exactly_the_received_set_beyond_next() -> None:
    receiver = OrderedReceiver(Channel.AI, 1000)
    for seq in (0, 1, 2, 4, 7, 66, 67, 68, 100):
        receiver.receive(seq, b"x", lambda _payload: None)
    frame = receiver.ack_frame()
    assert len(frame) == 17
    frame_type, length, channel, next_seq, bits = struct.unpack(">HHBIQ", frame)
    assert (frame_type, length, channel) == (0x0013, 13, 1)
    assert next_seq == 3
    # bit i is seq next + 1 + i: 4 -> bit 0, 7 -> bit 3, 66 -> bit 62, 67 -> bit 63;
    # 68 and 100 are beyond the 64 bits
    assert bits == (1 << 0) | (1 << 3) | (1 << 62) | (1 << 63)


@pytest.mark.parametrize("seed", range(20))
def test_ack_bitfield_matches_the_received_set(seed: int) -> None:
    rng = random.Random(seed)
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    received = set(rng.sample(range(WINDOW), rng.randint(1, WINDOW)))
    for seq in rng.sample(sorted(received), len(received)):
        receiver.receive(seq, b"m", lambda _payload: None)
    expected_next = min(set(range(WINDOW + 1)) - received)
    _, _, channel, next_seq, bits = struct.unpack(">HHBIQ", receiver.ack_frame())
    assert channel == Channel.CHAT
    assert next_seq == expected_next
    decoded = {next_seq + 1 + i for i in range(64) if bits >> i & 1}
    assert decoded == {s for s in received if next_seq < s <= next_seq + 64}


def test_receiving_sets_ack_pending_and_ack_frame_clears_it() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    assert not receiver.ack_pending
    receiver.receive(5, b"x", lambda _payload: None)
    assert receiver.ack_pending
    receiver.ack_frame()
    assert not receiver.ack_pending
    receiver.receive(5, b"x", lambda _payload: None)  # a duplicate is acknowledged again
    assert receiver.ack_pending


def test_unacked_part_is_due_after_rto_and_the_interval_doubles_up_to_rto_max() -> None:
    sender = make_sender(rto=0.5, rto_max=3.0)
    sender.queue(b"hello")
    [first] = take_all_new(sender, 0.0)
    expected_due = 0.0
    intervals = [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]  # doubled per retransmission, capped
    for number, interval in enumerate(intervals):
        expected_due += interval
        assert sender.next_due() == pytest.approx(expected_due)
        before = expected_due - 0.001
        assert not sender.has_due(before)
        assert take_due(sender, before) == []
        assert sender.has_due(expected_due)
        assert take_due(sender, expected_due) == [first]  # the very same bytes again
        assert sender.retransmissions == number + 1
    assert sender.sends == 1 + len(intervals)


def test_acknowledged_part_is_never_retransmitted() -> None:
    sender = make_sender(rto=0.5)
    sender.queue(b"a")
    sender.queue(b"b")
    take_all_new(sender, 0.0)
    sender.on_ack(*ack_of(Channel.CHAT, 0, [1]), 0.1)  # seq 1 selectively
    assert [seq_of(f) for f in take_due(sender, 10.0)] == [0]
    sender.on_ack(*ack_of(Channel.CHAT, 1), 10.1)
    assert sender.idle
    assert take_due(sender, 100.0) == []
    assert sender.next_due() is None


def test_part_passed_by_fast_retransmit_acks_acks_is_due_at_once() -> None:
    sender = make_sender(rto=10.0, rto_max=20.0)
    for i in range(FAST_RETRANSMIT_ACKS + 1):
        sender.queue(b"%d" % i)
        take_all_new(sender, 0.01 * i)  # seq i sent at 0.01 * i
    now = 1.0
    for passing in range(1, FAST_RETRANSMIT_ACKS + 1):
        assert not sender.has_due(now)
        sender.on_ack(*ack_of(Channel.CHAT, 0, range(1, passing + 1)), now)
    # seq 0 was passed by FAST_RETRANSMIT_ACKS acks of later parts: due at once, not at 10 s
    assert sender.has_due(now)
    assert [seq_of(f) for f in take_due(sender, now)] == [0]
    assert sender.retransmissions == 1


def test_fewer_passing_acks_do_not_fast_retransmit() -> None:
    sender = make_sender(rto=10.0, rto_max=20.0)
    for i in range(FAST_RETRANSMIT_ACKS):
        sender.queue(b"%d" % i)
        take_all_new(sender, 0.01 * i)
    for passing in range(1, FAST_RETRANSMIT_ACKS):
        sender.on_ack(*ack_of(Channel.CHAT, 0, range(1, passing + 1)), 1.0)
    assert not sender.has_due(1.0)
    assert take_due(sender, 9.0) == []


def test_fast_retransmit_within_one_burst() -> None:
    sender = make_sender(rto=10.0, rto_max=20.0)
    for i in range(FAST_RETRANSMIT_ACKS + 1):
        sender.queue(b"%d" % i)
    take_all_new(sender, 0.0)  # one pump: every part sent at the same now
    for passing in range(1, FAST_RETRANSMIT_ACKS + 1):
        sender.on_ack(*ack_of(Channel.CHAT, 0, range(1, passing + 1)), 1.0)
    assert sender.has_due(1.0)


def test_rtt_samples_come_only_from_parts_sent_once() -> None:
    sender = make_sender(rto=0.5)
    sender.queue(b"retransmitted")
    take_all_new(sender, 0.0)  # seq 0 at 0.0
    sender.queue(b"sent once")
    take_all_new(sender, 0.4)  # seq 1 at 0.4
    assert [seq_of(f) for f in take_due(sender, 0.5)] == [0]
    samples = sender.on_ack(*ack_of(Channel.CHAT, 2), 0.7)
    assert samples == [pytest.approx(0.3)]  # seq 1 only (Karn)
    assert sender.on_ack(*ack_of(Channel.CHAT, 2), 0.8) == []  # nothing new acked


def test_no_more_than_window_seqs_beyond_the_oldest_unacked_are_sent() -> None:
    sender = make_sender()
    for i in range(3 * WINDOW):
        sender.queue(b"%d" % i)
    sent = [seq_of(f) for f in take_all_new(sender, 0.0)]
    assert sent == list(range(WINDOW))
    assert not sender.can_send_new()
    assert sender.next_frame_size() == 0
    # selective acks of everything but seq 0: the oldest unacked does not move
    sender.on_ack(*ack_of(Channel.CHAT, 0, range(1, 65)), 0.1)
    assert not sender.can_send_new()
    assert take_all_new(sender, 0.1) == []
    # seq 0 acknowledged: the oldest unacked is 65, so up to seq 65 + WINDOW - 1 may go
    sender.on_ack(*ack_of(Channel.CHAT, 1), 0.2)
    assert [seq_of(f) for f in take_all_new(sender, 0.2)] == list(range(WINDOW, 65 + WINDOW))
    assert sender.in_flight == WINDOW
    assert not sender.can_send_new()


def test_send_queue_full_names_the_channel_and_the_limit() -> None:
    sender = make_sender(Channel.AI, max_queued_bytes=100)
    sender.queue(bytes(60))
    with pytest.raises(SendQueueFull, match=r"channel ai .*limit 100"):
        sender.queue(bytes(41))
    assert sender.queued_bytes == 60
    sender.queue(bytes(40))  # exactly the limit
    assert sender.queued_bytes == 100
    take_all_new(sender, 0.0)
    assert sender.queued_bytes == 0
    sender.queue(bytes(100))  # sent bytes no longer count


@pytest.mark.parametrize("size", [1, 9, 10, 11, 95, 100, 101, 10 * MAX_FRAGMENTS])
def test_a_message_takes_ceil_size_over_part_size_consecutive_seqs(size: int) -> None:
    sender = make_sender(part_size=10)
    sender.queue(b"before")
    message = random.Random(size).randbytes(size)
    sender.queue(message)
    sender.queue(b"after")
    frames = send_everything(sender)
    count = math.ceil(size / 10)
    assert len(frames) == count + 2
    middle = frames[1:-1]
    assert [seq_of(f) for f in frames] == list(range(count + 2))
    if count == 1:
        assert frame_types(middle) == [CHAT]
    else:
        fragments = [parse_fragment_untrusted(one_frame(f)[1]) for f in middle]
        assert [(f.index, f.count) for f in fragments] == [(i, count) for i in range(count)]
        assert all(f.channel is Channel.CHAT for f in fragments)
        assert b"".join(f.part for f in fragments) == message
    end = OrderedEnd()
    for frame in [frames[0], *reversed(middle), frames[-1]]:  # the parts backwards
        end.feed(frame)
    assert end.delivered == [b"before", message, b"after"]


def test_max_fragments_is_enforced_on_the_sending_side() -> None:
    sender = make_sender(part_size=10)
    with pytest.raises(ValueError, match="fragments"):
        sender.queue(bytes(10 * MAX_FRAGMENTS + 1))
    assert sender.idle
    assert sender.queued_bytes == 0
    sender.queue(b"next")  # the refused message took no seq
    assert [seq_of(f) for f in take_all_new(sender, 0.0)] == [0]


# -- OrderedReceiver: hostile input ------------------------------------------------


def fragment(seq: int, index: int, count: int, part: bytes = b"p",
             channel: Channel = Channel.CHAT) -> Fragment:
    return Fragment(channel, seq, index, count, seq, part)


def test_fragment_that_does_not_open_a_message_raises_bad_packet_and_is_skipped() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    delivered: list[bytes] = []
    with pytest.raises(BadPacket):
        receiver.receive(0, fragment(1, 1, 2), delivered.append)
    receiver.receive(1, b"fine", delivered.append)
    assert delivered == [b"fine"]
    assert receiver.next == 2


@pytest.mark.parametrize(
    "intruder",
    [
        fragment(2, 2, 4),  # count differs
        fragment(2, 1, 3),  # index differs
        b"a whole message",  # not a fragment
    ],
    ids=["count", "index", "whole"],
)
def test_inconsistent_fragment_run_raises_bad_packet_and_channel_goes_on(
        intruder: bytes | Fragment) -> None:
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    delivered: list[bytes] = []
    receiver.receive(1, fragment(1, 1, 3), delivered.append)
    receiver.receive(2, intruder, delivered.append)
    with pytest.raises(BadPacket):
        receiver.receive(0, fragment(0, 0, 3), delivered.append)
    receiver.receive(3, b"after", delivered.append)
    assert delivered == [b"after"]
    assert receiver.next == 4


def test_inconsistent_fragment_run_leaves_nothing_buffered() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    delivered: list[bytes] = []
    start = 0
    for _ in range(20):  # a hostile peer repeats the trick
        count = MAX_FRAGMENTS
        receiver.receive(start + 1, b"whole", delivered.append)
        for index in range(2, count):
            receiver.receive(start + index, fragment(start + index, index, count),
                             delivered.append)
        with contextlib.suppress(BadPacket):
            receiver.receive(start, fragment(start, 0, count), delivered.append)
        start = receiver.next
        assert receiver.buffered <= WINDOW
    assert receiver.buffered == 0


def test_reassembled_message_above_max_message_raises_bad_packet() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 25)
    delivered: list[bytes] = []
    receiver.receive(1, fragment(1, 1, 3, bytes(10)), delivered.append)
    receiver.receive(2, fragment(2, 2, 3, bytes(10)), delivered.append)
    with pytest.raises(BadPacket, match="30 bytes"):
        receiver.receive(0, fragment(0, 0, 3, bytes(10)), delivered.append)
    assert delivered == []
    receiver.receive(3, b"after", delivered.append)
    assert delivered == [b"after"]
    # exactly max_message is fine
    receiver.receive(4, fragment(4, 0, 2, bytes(20)), delivered.append)
    receiver.receive(5, fragment(5, 1, 2, bytes(5)), delivered.append)
    assert delivered == [b"after", bytes(25)]


def test_oversize_message_does_not_take_the_next_fragmented_message_with_it() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 25)
    delivered: list[bytes] = []
    for seq, item in [(3, fragment(3, 0, 2, b"next-")), (4, fragment(4, 1, 2, b"message")),
                      (1, fragment(1, 1, 3, bytes(10))), (2, fragment(2, 2, 3, bytes(10)))]:
        receiver.receive(seq, item, delivered.append)
    with contextlib.suppress(BadPacket):
        receiver.receive(0, fragment(0, 0, 3, bytes(10)), delivered.append)
    for seq, item in [(3, fragment(3, 0, 2, b"next-")), (4, fragment(4, 1, 2, b"message"))]:
        receiver.receive(seq, item, delivered.append)  # the sender's retransmissions
    assert delivered == [b"next-message"]


def test_a_complete_message_behind_a_refused_one_is_still_delivered() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 25)
    delivered: list[bytes] = []
    receiver.receive(1, fragment(1, 1, 3, bytes(10)), delivered.append)
    receiver.receive(2, fragment(2, 2, 3, bytes(10)), delivered.append)
    receiver.receive(3, b"after", delivered.append)
    with pytest.raises(BadPacket):
        receiver.receive(0, fragment(0, 0, 3, bytes(10)), delivered.append)
    receiver.receive(3, b"after", delivered.append)  # the sender's retransmission
    assert delivered == [b"after"]


def test_buffer_never_exceeds_window_under_a_flood() -> None:
    receiver = OrderedReceiver(Channel.CHAT, 1000)
    rng = random.Random(7)
    delivered: list[bytes] = []
    for _ in range(5000):  # seq 0 never comes: nothing can be delivered
        receiver.receive(rng.randrange(1, 2 * WINDOW), b"x", delivered.append)
        assert receiver.buffered <= WINDOW
    assert receiver.buffered == WINDOW - 1
    assert delivered == []
    assert receiver.beyond_window > 0


@pytest.mark.parametrize("seed", range(5))
def test_random_hostile_items_raise_only_bad_packet(seed: int) -> None:
    rng = random.Random(seed)
    receiver = OrderedReceiver(Channel.CHAT, 300)
    delivered: list[bytes] = []
    for _ in range(3000):
        seq = receiver.next + rng.randrange(-4, WINDOW + 8)
        if seq < 0:
            continue
        item: bytes | Fragment
        if rng.random() < 0.3:
            item = rng.randbytes(rng.randrange(0, 20))
        else:
            count = rng.randint(2, 6)
            index = min(rng.randrange(count), seq)
            item = fragment(seq, index, count, rng.randbytes(rng.randint(1, 120)))
        with contextlib.suppress(BadPacket):
            receiver.receive(seq, item, delivered.append)
    assert all(len(m) <= 300 for m in delivered)
    assert receiver.next > 0  # the channel kept moving


# -- latest-value channel ------------------------------------------------------------


def env_sender(*, part_size: int = 1000, rto: float = 0.5) -> ReliableSender:
    return make_sender(Channel.ENVIRONMENT, part_size=part_size, rto=rto)


def env_frame_fields(frame: bytes) -> tuple[int, int, bytes, bytes]:
    """(seq, floor, key, payload) of an unfragmented ENVIRONMENTAL frame."""
    frame_type, body = one_frame(frame)
    assert frame_type == ENV
    seq, floor, content = parse_seq_floor_untrusted(body)
    key, payload = split_keyed_untrusted(content)
    return seq, floor, key, payload


def test_latest_value_needs_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        env_sender().queue(b"value")


def test_newer_value_supersedes_an_unacked_older_one() -> None:
    sender = env_sender()
    sender.queue(b"v1", key=b"k")
    [old] = take_all_new(sender, 0.0)
    sender.queue(b"v2", key=b"k")
    assert sender.superseded == 1
    assert sender.in_flight == 0
    [new] = take_all_new(sender, 0.1)
    assert env_frame_fields(new) == (1, 1, b"k", b"v2")
    for now in (1.0, 3.0, 10.0):
        assert take_due(sender, now) == [new]  # never the older value
    assert old not in take_due(sender, 100.0)


def test_unsent_older_value_is_replaced_in_the_queue() -> None:
    sender = env_sender()
    sender.queue(b"v1", key=b"k")
    sender.queue(b"value two", key=b"k")
    assert sender.superseded == 1
    assert sender.queued_bytes == len(encode_keyed(b"k", b"value two"))
    [frame] = take_all_new(sender, 0.0)
    assert env_frame_fields(frame) == (1, 1, b"k", b"value two")
    end = LatestEnd()
    end.feed(frame, 0.0)
    assert end.delivered == [(b"k", b"value two")]
    assert end.receiver.next == 2  # the floor passed the seq that never left


def test_other_keys_are_not_superseded() -> None:
    sender = env_sender()
    sender.queue(b"a", key=b"ka")
    sender.queue(b"b", key=b"kb")
    sender.queue(b"a2", key=b"ka")
    assert sender.superseded == 1
    assert [env_frame_fields(f)[2:] for f in take_all_new(sender, 0.0)] == [
        (b"kb", b"b"), (b"ka", b"a2")]


def test_floor_lets_the_cumulative_ack_pass_superseded_seqs() -> None:
    sender = env_sender()
    end = LatestEnd()
    sender.queue(b"a1", key=b"a")
    sender.queue(b"b1", key=b"b")
    _lost, b1 = take_all_new(sender, 0.0)
    end.feed(b1, 0.0)
    assert end.receiver.next == 0
    apply_ack(sender, end.receiver.ack_frame(), 0.05)  # seq 1 selectively
    sender.queue(b"a2", key=b"a")  # gives up seq 0, never acknowledged
    [a2] = take_all_new(sender, 0.1)
    assert env_frame_fields(a2) == (2, 2, b"a", b"a2")
    end.feed(a2, 0.1)
    assert end.receiver.next == 3
    assert end.delivered == [(b"b", b"b1"), (b"a", b"a2")]
    apply_ack(sender, end.receiver.ack_frame(), 0.2)
    assert sender.idle


def test_older_value_arriving_after_a_newer_one_is_not_delivered() -> None:
    sender = env_sender()
    sender.queue(b"x", key=b"other")
    sender.queue(b"v1", key=b"k")
    frames = take_all_new(sender, 0.0)
    sender.queue(b"v2", key=b"k")
    frames += take_all_new(sender, 0.0)
    assert [env_frame_fields(f)[:2] for f in frames] == [(0, 0), (1, 0), (2, 0)]
    end = LatestEnd()
    end.feed(frames[2], 0.0)
    end.feed(frames[1], 0.0)  # the older value of k, after the newer
    end.feed(frames[0], 0.0)
    assert end.delivered == [(b"k", b"v2"), (b"other", b"x")]
    assert end.receiver.stale == 1


def test_fragmented_values_reassemble() -> None:
    rng = random.Random(3)
    sender = env_sender(part_size=16)
    values = {b"alpha": rng.randbytes(100), b"beta": rng.randbytes(47), b"gamma": b"short"}
    for key, value in values.items():
        sender.queue(value, key=key)
    frames = take_all_new(sender, 0.0)
    assert FRAGMENT_TYPE in frame_types(frames)
    for frame in frames:
        frame_type, body = one_frame(frame)
        if frame_type == FRAGMENT_TYPE:
            parsed = parse_fragment_untrusted(body)
            assert parsed.channel is Channel.ENVIRONMENT
            assert parsed.floor == 0
    rng.shuffle(frames)
    end = LatestEnd()
    for frame in frames:
        end.feed(frame, 0.0)
    assert sorted(end.delivered) == sorted(values.items())
    assert end.receiver.buffered == 0
    assert end.receiver.next == len(frames)


def three_part_value() -> list[bytes]:
    sender = env_sender(part_size=8)
    sender.queue(bytes(20), key=b"k")  # 22 bytes of content: 3 parts
    frames = take_all_new(sender, 0.0)
    assert frame_types(frames) == [FRAGMENT_TYPE] * 3
    return frames


@pytest.mark.parametrize(("late", "delivered"), [(PARTIAL_TIMEOUT - 0.001, True),
                                                 (PARTIAL_TIMEOUT, False)])
def test_partial_value_expires_after_partial_timeout(late: float, delivered: bool) -> None:
    first, second, third = three_part_value()
    end = LatestEnd()
    end.feed(first, 0.0)
    end.feed(second, late)
    end.feed(third, late)
    assert (end.delivered == [(b"k", bytes(20))]) is delivered
    assert end.receiver.expired == (0 if delivered else 1)


def test_at_most_max_partials_are_kept() -> None:
    sender = env_sender(part_size=8)
    keys = [b"key%02d" % i for i in range(MAX_PARTIALS + 1)]
    for key in keys:
        sender.queue(b"value!", key=key)  # 12 bytes of content: 2 parts each
    frames = take_all_new(sender, 0.0)
    assert len(frames) == 2 * len(keys)
    end = LatestEnd()
    for frame in frames[0::2]:  # the first part of every value
        end.feed(frame, 0.0)
        assert end.receiver.buffered <= MAX_PARTIALS
    assert end.receiver.buffered == MAX_PARTIALS
    assert end.receiver.expired == 1
    end.feed(frames[-1], 0.0)  # completes the newest value
    assert end.delivered == [(keys[-1], b"value!")]
    end.feed(frames[1], 0.0)  # the oldest value lost its first part
    assert end.delivered == [(keys[-1], b"value!")]


def test_keys_beyond_max_keys_evict_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reliable, "MAX_KEYS", 4)
    end = LatestEnd()
    receiver = end.receiver
    # seqs 0 and 1 (older values of k0 and k1) are late; floor 0 keeps them in the window
    receiver.receive(2, 0, encode_keyed(b"k0", b"new"), 0.0, end._deliver)
    for i in range(1, 5):
        receiver.receive(2 + i, 0, encode_keyed(b"k%d" % i, b"new"), 0.0, end._deliver)
    receiver.receive(1, 0, encode_keyed(b"k1", b"old"), 0.0, end._deliver)
    assert receiver.stale == 1  # k1 is remembered
    receiver.receive(0, 0, encode_keyed(b"k0", b"old"), 0.0, end._deliver)
    assert receiver.stale == 1  # k0 was evicted: its newer value is forgotten
    assert end.delivered[-1] == (b"k0", b"old")
    assert (b"k1", b"old") not in end.delivered


def test_latest_value_seq_beyond_window_is_refused_and_counted() -> None:
    end = LatestEnd()
    receiver = end.receiver
    receiver.receive(WINDOW, 0, encode_keyed(b"k", b"far"), 0.0, end._deliver)
    assert receiver.beyond_window == 1
    assert end.delivered == []
    # the window starts at the sender's floor when that is ahead of `next`
    receiver.receive(WINDOW, 1, encode_keyed(b"k", b"far"), 0.0, end._deliver)
    assert receiver.beyond_window == 1
    assert end.delivered == [(b"k", b"far")]
    assert receiver.next == 1


def test_latest_value_fragment_counts_that_differ_raise_bad_packet() -> None:
    end = LatestEnd()
    receiver = end.receiver
    content = encode_keyed(b"k", b"abcdef")
    env = Channel.ENVIRONMENT
    receiver.receive(0, 0, Fragment(env, 0, 0, 2, 0, content[:4]), 0.0, end._deliver)
    with pytest.raises(BadPacket):  # seq 2 claims to be part 2 of 3 of the message at seq 0
        receiver.receive(2, 0, Fragment(env, 2, 2, 3, 0, b"zz"), 0.0, end._deliver)
    assert receiver.buffered == 0
    receiver.receive(3, 0, encode_keyed(b"j", b"v"), 0.0, end._deliver)
    assert end.delivered == [(b"j", b"v")]


def test_latest_value_above_max_message_raises_bad_packet() -> None:
    end = LatestEnd(max_message=100)
    receiver = end.receiver
    env = Channel.ENVIRONMENT
    receiver.receive(0, 0, Fragment(env, 0, 0, 2, 0, encode_keyed(b"k", bytes(60))), 0.0,
                     end._deliver)
    with pytest.raises(BadPacket):  # a payload of 180 bytes
        receiver.receive(1, 0, Fragment(env, 1, 1, 2, 0, bytes(120)), 0.0, end._deliver)
    assert receiver.buffered == 0
    assert end.delivered == []


@pytest.mark.parametrize("seed", range(5))
def test_latest_value_receiver_hostile_input_raises_only_bad_packet(seed: int) -> None:
    rng = random.Random(seed)
    end = LatestEnd(max_message=300)
    receiver = end.receiver
    env = Channel.ENVIRONMENT
    for i in range(3000):
        seq = receiver.next + rng.randrange(-4, WINDOW + 8)
        if seq < 0:
            continue
        floor = min(seq, rng.choice((0, receiver.next, receiver.next + 1, seq)))
        item: bytes | Fragment
        if rng.random() < 0.3:
            item = rng.choice((encode_keyed(b"k%d" % rng.randrange(4), rng.randbytes(5)),
                               rng.randbytes(rng.randrange(0, 12))))
        else:
            count = rng.randint(2, 6)
            index = min(rng.randrange(count), seq)
            part = rng.randbytes(rng.randint(1, 120))
            if index == 0 and rng.random() < 0.7:
                part = encode_keyed(b"f", part)
            item = Fragment(env, seq, index, count, floor, part)
        with contextlib.suppress(BadPacket):
            receiver.receive(seq, floor, item, i * 0.01, end._deliver)
        assert receiver.buffered <= MAX_PARTIALS * 6
    assert end.delivered
    assert all(len(payload) <= 300 for _, payload in end.delivered)


@pytest.mark.parametrize("seed", [11, 12])
def test_latest_values_converge_under_loss_and_reordering(seed: int) -> None:
    rng = random.Random(seed)
    sender = env_sender(part_size=24, rto=0.2)
    end = LatestEnd()
    keys = [b"k%d" % i for i in range(8)]
    forward = Wire(rng, loss=0.3, duplicate=0.1, max_delay=0.2)
    backward = Wire(rng, loss=0.3, duplicate=0.1, max_delay=0.2)
    order: dict[bytes, list[bytes]] = {key: [] for key in keys}
    now = 0.0
    for step in range(20_000):
        if step < 300 and rng.random() < 0.5:
            key = rng.choice(keys)
            value = b"%d:" % step + rng.randbytes(rng.randint(0, 60))
            order[key].append(value)
            sender.queue(value, key=key)
        out: list[bytes] = []
        used = sender.take_retransmissions(now, 1200, out)
        sender.take_new(now, 1200 - used, out)
        forward.send(out, now)
        for frame in forward.arrivals(now):
            end.feed(frame, now)
        if end.receiver.ack_pending:
            backward.send([end.receiver.ack_frame()], now)
        for frame in backward.arrivals(now):
            apply_ack(sender, frame, now)
        if step >= 300 and sender.idle and forward.empty:
            break
        now += 0.01
    assert sender.idle
    last: dict[bytes, int] = {}
    for key, value in end.delivered:
        position = order[key].index(value)
        assert position > last.get(key, -1)  # never an older value after a newer one
        last[key] = position
    for key, values in order.items():
        if values:
            assert last[key] == len(values) - 1  # the newest value of every key arrived


# -- positions -----------------------------------------------------------------------


def position_fields(frame: bytes) -> tuple[int, int, bytes]:
    frame_type, body = one_frame(frame)
    assert frame_type == POSITION
    return parse_position_header_untrusted(body)


def take_position(sender: PositionSender, state: PositionState) -> bytes:
    sender.queue(state)
    frame = sender.take()
    assert frame is not None
    return frame


def test_first_position_is_a_full_state() -> None:
    sender = PositionSender()
    state = walk(1)
    sender.queue(state)
    assert sender.frame_size() == 8 + len(encode_position(state, None))
    frame = sender.take()
    assert frame is not None
    assert len(frame) == 8 + len(encode_position(state, None))
    assert position_fields(frame) == (0, 0, encode_position(state, None))
    assert sender.full_states == 1
    assert sender.take() is None
    assert sender.frame_size() == 0


def test_without_acks_every_position_is_a_full_state() -> None:
    sender = PositionSender()
    for i in range(5):
        seq, base, coded = position_fields(take_position(sender, walk(i)))
        assert seq == base == i
        assert coded == encode_position(walk(i), None)
    assert sender.full_states == 5


def test_delta_against_the_acknowledged_state() -> None:
    sender = PositionSender()
    receiver = PositionReceiver()
    assert receiver.ack_frame() is None
    # each turns: none is what the peer would predict from the one before
    s0 = PositionState("prontera", 150, 180, 3, 150, True, 3_600_000)
    s1 = PositionState("prontera", 151, 180, 4, 150, True, 3_600_200)
    s2 = PositionState("prontera", 152, 181, 5, 150, True, 3_600_400)
    assert receiver.receive(*position_fields(take_position(sender, s0))) == s0
    ack = receiver.ack_frame()
    assert ack == bytes.fromhex("0014 0002 0000")
    sender.on_ack(parse_position_ack_untrusted(one_frame(ack)[1]))
    seq, base, coded = position_fields(take_position(sender, s1))
    assert (seq, base) == (1, 0)
    assert coded == encode_position(s1, s0)
    assert len(coded) < len(encode_position(s1, None))
    assert receiver.receive(seq, base, coded) == s1
    # not yet acknowledged: still coded against seq 0
    seq, base, coded = position_fields(take_position(sender, s2))
    assert (seq, base) == (2, 0)
    assert receiver.receive(seq, base, coded) == s2
    assert sender.full_states == 1


def test_an_older_position_after_a_newer_one_is_not_delivered() -> None:
    receiver = PositionReceiver()
    full = encode_position(walk(5), None)
    assert receiver.receive(5, 5, full) == walk(5)
    assert receiver.receive(4, 4, encode_position(walk(4), None)) is None
    assert receiver.stale == 1
    assert receiver.receive(5, 5, full) is None  # the same seq twice
    assert receiver.stale == 2
    assert receiver.receive(6, 6, encode_position(walk(6), None)) == walk(6)


def test_position_seq_wraps_around_16_bits() -> None:
    sender = PositionSender()
    receiver = PositionReceiver()
    total = 65536 + 100
    seqs = []
    for i in range(total):
        seq, base, coded = position_fields(take_position(sender, walk(i)))
        seqs.append(seq)
        assert receiver.receive(seq, base, coded) == walk(i)
        ack = receiver.ack_frame()
        assert ack is not None
        sender.on_ack(parse_position_ack_untrusted(one_frame(ack)[1]))
    assert seqs[65535:65538] == [65535, 0, 1]
    assert sender.full_states == 1
    assert receiver.stale == 0
    assert receiver.no_baseline == 0
    # after the wrap, 65535 is older than 99
    assert receiver.receive(65535, 65535, encode_position(walk(0), None)) is None
    assert receiver.stale == 1


def test_position_receiver_orders_across_the_wrap() -> None:
    receiver = PositionReceiver()
    for seq, fresh in [(65534, True), (65535, True), (0, True), (65535, False), (1, True),
                       (32768 + 1, False), (32768, True)]:
        delivered = receiver.receive(seq, seq, encode_position(walk(seq), None))
        assert (delivered == walk(seq)) is fresh, seq


def test_seq16_newer() -> None:
    assert seq16_newer(1, 0)
    assert seq16_newer(0, 65535)
    assert not seq16_newer(65535, 0)
    assert not seq16_newer(7, 7)
    assert seq16_newer(0x7FFF, 0)
    assert not seq16_newer(0x8000, 0)


def test_unknown_baseline_is_counted_and_not_delivered() -> None:
    receiver = PositionReceiver()
    delta = encode_position(walk(2), walk(1))
    assert receiver.receive(7, 3, delta) is None
    assert receiver.no_baseline == 1
    assert receiver.receive(8, 8, encode_position(walk(8), None)) == walk(8)


def test_queue_supersedes_an_unsent_position() -> None:
    sender = PositionSender()
    sender.queue(walk(1))
    sender.queue(walk(2))
    assert sender.superseded == 1
    frame = sender.take()
    assert frame is not None
    assert position_fields(frame) == (0, 0, encode_position(walk(2), None))
    assert sender.take() is None
    assert sender.sent == 1


def test_an_acknowledged_state_older_than_max_baseline_age_is_not_a_baseline() -> None:
    sender = PositionSender()
    take_position(sender, walk(0))
    sender.on_ack(0)
    for i in range(1, MAX_BASELINE_AGE + 1):
        seq, base, coded = position_fields(take_position(sender, walk(i)))
        assert (seq, base) == (i, 0)
        assert coded == encode_position(walk(i), walk(0))
    i = MAX_BASELINE_AGE + 1
    assert position_fields(take_position(sender, walk(i))) == (
        i, i, encode_position(walk(i), None))


def test_a_late_ack_of_an_older_state_does_not_replace_the_baseline() -> None:
    sender = PositionSender()
    for i in range(6):
        take_position(sender, walk(i))
    sender.on_ack(5)
    sender.on_ack(3)  # late
    sender.on_ack(40_000)  # never sent: ignored
    seq, base, coded = position_fields(take_position(sender, walk(6)))
    assert (seq, base) == (6, 5)
    assert coded == encode_position(walk(6), walk(5))


def test_position_unchanged_but_for_the_clock_is_not_sent_once_acknowledged() -> None:
    sender = PositionSender()
    here = PositionState("geffen", 120, 60, 2, 150, False, 10_000)
    take_position(sender, here)
    sender.on_ack(0)
    sender.queue(PositionState("geffen", 120, 60, 2, 150, False, 60_000))
    assert sender.pending is None
    assert sender.take() is None
    assert sender.unchanged == 1
    moved = PositionState("geffen", 121, 60, 2, 150, False, 60_100)
    sender.queue(moved)
    frame = sender.take()
    assert frame is not None
    assert position_fields(frame)[:2] == (1, 0)


def test_unacknowledged_position_is_sent_again_after_resend_ms() -> None:
    sender = PositionSender(resend_ms=1000)
    here = PositionState("geffen", 120, 60, 2, 150, False, 10_000)
    take_position(sender, here)  # never acknowledged
    sender.queue(PositionState("geffen", 120, 60, 2, 150, False, 10_999))
    assert sender.take() is None  # its ack may be on the way
    again = PositionState("geffen", 120, 60, 2, 150, False, 11_000)
    sender.queue(again)
    frame = sender.take()
    assert frame is not None
    assert position_fields(frame) == (1, 1, encode_position(again, None))


def test_predictable_walk_is_not_sent_until_refresh_ms() -> None:
    sender = PositionSender(error_budget=1, refresh_ms=1000)
    start = PositionState("payon", 100, 100, 6, 150, True, 0)  # dir 6: one cell +x per step
    take_position(sender, start)
    sender.on_ack(0)
    for tick in (150, 300, 450, 990):  # exactly where the peer's dead reckoning puts it
        sender.queue(PositionState("payon", 100 + tick // 150, 100, 6, 150, True, tick))
        assert sender.take() is None
    assert sender.predicted == 4
    # on the predicted cell, but refresh_ms after the last one sent: it goes out
    refreshed = PositionState("payon", 106, 100, 6, 150, True, 1000)
    sender.queue(refreshed)
    frame = sender.take()
    assert frame is not None
    assert position_fields(frame) == (1, 0, encode_position(refreshed, start))
    # more than error_budget cells off the prediction (107 at 1150): it goes out
    sender.queue(PositionState("payon", 109, 100, 6, 150, True, 1150))
    assert sender.take() is not None
    assert sender.predicted == 4


def test_repeat_sends_the_last_position_again_only_while_unacknowledged() -> None:
    sender = PositionSender()
    assert not sender.repeat()  # nothing sent yet
    stop = PositionState("payon", 105, 100, 6, 150, False, 900)
    take_position(sender, walk(0))
    sender.on_ack(0)
    take_position(sender, stop)  # seq 1, not acknowledged
    assert sender.repeat()
    frame = sender.take()
    assert frame is not None
    seq, base, coded = position_fields(frame)
    assert (seq, base) == (2, 0) and coded == encode_position(stop, walk(0))  # a new seq
    sender.queue(PositionState("payon", 106, 100, 6, 150, True, 1000))  # a newer one waits
    assert not sender.repeat() and sender.repeated == 1
    assert sender.take() is not None
    sender.on_ack(3)  # the peer has the newest one: nothing to repeat
    assert not sender.repeat()
    assert sender.repeated == 1


def test_a_position_replacing_a_repeat_not_sent_yet_goes_in_its_place() -> None:
    sender = PositionSender(error_budget=1, refresh_ms=1000)
    turn = PositionState("payon", 100, 100, 0, 150, True, 0)  # dir 0: one cell +y per step
    take_position(sender, turn)  # not acknowledged (it may have been lost)
    assert sender.repeat()
    # the next cell of that course, handed before the repeat went: the peer predicts
    # it from the turn, but may not have the turn, so it goes instead of the repeat
    sender.queue(PositionState("payon", 100, 101, 0, 150, True, 150))
    frame = sender.take()
    assert frame is not None and position_fields(frame)[:2] == (1, 1)
    assert sender.superseded == 1


def test_a_fresh_position_goes_though_the_peer_has_it_and_stays_fresh_when_replaced() -> None:
    sender = PositionSender()
    here = PositionState("geffen", 120, 60, 2, 150, False, 10_000)
    take_position(sender, here)
    sender.on_ack(0)
    sender.queue(PositionState("geffen", 120, 60, 2, 150, False, 20_000), fresh=True)
    # replaced before it went (a refresh of the same place): still goes
    sender.queue(PositionState("geffen", 120, 60, 2, 150, False, 20_050))
    frame = sender.take()
    assert frame is not None and position_fields(frame)[:2] == (1, 0)
    sender.on_ack(1)
    sender.queue(PositionState("geffen", 120, 60, 2, 150, False, 30_000))  # not fresh: left out
    assert sender.take() is None


def test_a_baseline_too_old_is_never_used_again_even_after_the_wrap() -> None:
    sender = PositionSender()
    take_position(sender, walk(0))
    sender.on_ack(0)
    for i in range(1, 65536 + MAX_BASELINE_AGE + 2):
        seq, base, coded = position_fields(take_position(sender, walk(i)))
        if i > MAX_BASELINE_AGE:
            assert base == seq, i
            assert coded == encode_position(walk(i), None), i


# -- frame parsers -------------------------------------------------------------------


def valid_bodies() -> dict[str, list[bytes]]:
    key = encode_keyed(b"weather", b"rain")
    return {
        "seq": [SEQ.pack(7) + b"payload", SEQ.pack(0)],
        "seq_floor": [SEQ_FLOOR.pack(9, 3) + key, SEQ_FLOOR.pack(0, 0)],
        "keyed": [key, encode_keyed(bytes(MAX_KEY), b"")],
        "position_header": [bytes.fromhex("0001 0000") + encode_position(walk(1), None)],
        "ack": [bytes.fromhex("02 00000005 8000000000000001")],
        "position_ack": [bytes.fromhex("ffff")],
        "fragment": [bytes.fromhex("0005 0000000a 0001 0003") + b"part",
                     bytes.fromhex("0007 0000000a 0002 0003 00000004") + b"part"],
    }


PARSERS: dict[str, Callable[[bytes], object]] = {
    "seq": parse_seq_untrusted,
    "seq_floor": parse_seq_floor_untrusted,
    "keyed": split_keyed_untrusted,
    "position_header": parse_position_header_untrusted,
    "ack": parse_ack_untrusted,
    "position_ack": parse_position_ack_untrusted,
    "fragment": parse_fragment_untrusted,
}


def mutations(rng: random.Random, seeds: list[bytes], count: int) -> Iterable[bytes]:
    for _ in range(count):
        choice = rng.random()
        if choice < 0.3:
            yield rng.randbytes(rng.randrange(0, 40))
            continue
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(4)
            if action == 0 and body:
                body[rng.randrange(len(body))] = rng.randrange(256)
            elif action == 1 and body:
                del body[rng.randrange(len(body)):]
            elif action == 2:
                body += rng.randbytes(rng.randint(1, 8))
            elif body:
                position = rng.randrange(len(body))
                body[position] = rng.choice((0, 1, 2, 0x7F, 0x80, 0xFF))
        yield bytes(body)


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_untrusted_parsers_raise_only_bad_packet(name: str) -> None:
    rng = random.Random(name)
    parse = PARSERS[name]
    seeds = valid_bodies()[name]
    accepted = 0
    for body in mutations(rng, seeds, 4000):
        try:
            result = parse(body)
        except BadPacket:
            continue
        accepted += 1
        if isinstance(result, Fragment):
            assert 2 <= result.count <= MAX_FRAGMENTS
            assert result.index < result.count
            assert result.index <= result.seq
            assert result.floor <= result.seq
            assert result.part
    assert accepted > 0
    for body in seeds:
        parse(body)  # the unmutated bodies are valid


def test_parsers_refuse_what_the_docstring_forbids() -> None:
    bad: list[tuple[Callable[[bytes], object], bytes]] = [
        (parse_seq_untrusted, b"\x00\x00\x00"),
        (parse_seq_floor_untrusted, SEQ_FLOOR.pack(3, 4)),  # floor above seq
        (split_keyed_untrusted, b""),
        (split_keyed_untrusted, b"\x00payload"),  # empty key
        (split_keyed_untrusted, bytes([MAX_KEY + 1]) + bytes(MAX_KEY + 1)),
        (split_keyed_untrusted, b"\x05abc"),  # key cut short
        (parse_position_header_untrusted, b"\x00\x01\x00"),
        (parse_ack_untrusted, bytes(12)),
        (parse_ack_untrusted, bytes(14)),
        (parse_ack_untrusted, bytes([len(Channel)]) + bytes(12)),  # unknown channel
        (parse_position_ack_untrusted, b"\x00"),
        (parse_position_ack_untrusted, b"\x00\x00\x00"),
        (parse_fragment_untrusted, bytes.fromhex("0003 00000001 0000 0002") + b"p"),  # type
        (parse_fragment_untrusted, bytes.fromhex("0005 00000001 0000 0001") + b"p"),  # count 1
        (parse_fragment_untrusted, bytes.fromhex("0005 000000ff 0000 0081") + b"p"),  # 129
        (parse_fragment_untrusted, bytes.fromhex("0005 00000005 0002 0002") + b"p"),  # index
        (parse_fragment_untrusted, bytes.fromhex("0005 00000001 0002 0003") + b"p"),  # > seq
        (parse_fragment_untrusted, bytes.fromhex("0005 00000001 0000 0002")),  # empty part
        (parse_fragment_untrusted, bytes.fromhex("0007 00000005 0000 0002 0000")),
        (parse_fragment_untrusted, bytes.fromhex("0007 00000005 0000 0002 00000006") + b"p"),
    ]
    for parse, body in bad:
        with pytest.raises(BadPacket):
            parse(body)


def test_chat_frame_layout() -> None:
    sender = make_sender(Channel.CHAT)
    sender.queue(b"hi")
    sender.queue(b"yo")
    assert take_all_new(sender, 0.0) == [
        bytes.fromhex("0005 0006 00000000") + b"hi",
        bytes.fromhex("0005 0006 00000001") + b"yo",
    ]


def test_ai_frame_layout() -> None:
    sender = make_sender(Channel.AI)
    sender.queue(b"")
    assert take_all_new(sender, 0.0) == [bytes.fromhex("0006 0004 00000000")]


def test_environmental_frame_layout() -> None:
    sender = env_sender()
    sender.queue(b"rain", key=b"sky")
    sender.queue(b"sun", key=b"day")
    assert take_all_new(sender, 0.0) == [
        # seq | floor | key length | key | payload
        bytes.fromhex("0007 0010 00000000 00000000 03") + b"sky" + b"rain",
        bytes.fromhex("0007 000f 00000001 00000000 03") + b"day" + b"sun",
    ]


def test_fragment_frame_layout() -> None:
    sender = make_sender(Channel.CHAT, part_size=4)
    sender.queue(b"abcdefghij")
    assert take_all_new(sender, 0.0) == [
        # type | seq | index | count | part
        bytes.fromhex("0015 000e 0005 00000000 0000 0003") + b"abcd",
        bytes.fromhex("0015 000e 0005 00000001 0001 0003") + b"efgh",
        bytes.fromhex("0015 000c 0005 00000002 0002 0003") + b"ij",
    ]


def test_environmental_fragment_frame_layout() -> None:
    sender = env_sender(part_size=4)
    sender.queue(b"abcde", key=b"k")  # content 01 6b 61 62 63 64 65
    assert take_all_new(sender, 0.0) == [
        # type | seq | index | count | floor | part
        bytes.fromhex("0015 0012 0007 00000000 0000 0002 00000000 016b6162"),
        bytes.fromhex("0015 0011 0007 00000001 0001 0002 00000000 636465"),
    ]


def test_ack_and_position_ack_layouts() -> None:
    receiver = LatestValueReceiver(Channel.ENVIRONMENT, 100)
    receiver.receive(0, 0, encode_keyed(b"k", b""), 0.0, lambda _k, _p: None)
    receiver.receive(2, 0, encode_keyed(b"j", b""), 0.0, lambda _k, _p: None)
    # channel 2 | next 1 | bit 0 (seq 2)
    assert receiver.ack_frame() == bytes.fromhex("0013 000d 02 00000001 0000000000000001")
    positions = PositionReceiver()
    positions.receive(0x1234, 0x1234, encode_position(walk(0), None))
    assert positions.ack_frame() == bytes.fromhex("0014 0002 1234")


def test_position_frame_layout() -> None:
    sender = PositionSender()
    state = PositionState("izlude", 10, 20, 1, 150, False, 5)
    frame = take_position(sender, state)
    coded = bytes.fromhex("3f 06") + b"izlude" + bytes.fromhex("000a 0014 01 0096 05")
    assert frame == bytes.fromhex("0003 0014 0000 0000") + coded


# -- adaptive quality ----------------------------------------------------------------


CLEAN = PathSignals(loss=0.0, srtt=0.05, min_rtt=0.04, budget_short=False)


@pytest.mark.parametrize(
    ("signals", "reason"),
    [
        (PathSignals(loss=0.0, srtt=None, min_rtt=None, budget_short=True), "budget"),
        (PathSignals(loss=0.06, srtt=0.05, min_rtt=0.04, budget_short=False), "loss"),
        (PathSignals(loss=0.0, srtt=0.14, min_rtt=0.04, budget_short=False), "rtt"),
    ],
)
def test_quality_steps_down_at_most_once_per_interval(signals: PathSignals, reason: str) -> None:
    quality = QualityController()
    assert quality.factor == LEVELS[0]
    assert quality.update(signals, 10.0) == LEVELS[1]
    assert quality.reason == reason
    assert quality.update(signals, 10.5) == LEVELS[1]
    assert quality.update(signals, 10.999) == LEVELS[1]
    assert quality.update(signals, 11.0) == LEVELS[2]
    assert quality.update(signals, 11.2) == LEVELS[2]


def test_quality_ignores_signals_at_their_thresholds() -> None:
    quality = QualityController()
    at_loss = PathSignals(loss=0.05, srtt=None, min_rtt=None, budget_short=False)
    limit = QualityController.rtt_growth * 0.04 + QualityController.rtt_slack
    at_rtt = PathSignals(loss=0.0, srtt=limit, min_rtt=0.04, budget_short=False)
    for t in range(10):
        assert quality.update(at_loss, float(t)) == LEVELS[0]
        assert quality.update(at_rtt, t + 0.5) == LEVELS[0]
    assert quality.reason == ""


def test_quality_never_goes_below_the_lowest_level() -> None:
    bad = PathSignals(loss=0.5, srtt=1.0, min_rtt=0.01, budget_short=True)
    quality = QualityController()
    factors = [quality.update(bad, float(t)) for t in range(20)]
    assert factors[: len(LEVELS) - 1] == list(LEVELS[1:])
    assert set(factors[len(LEVELS):]) == {LEVELS[-1]}
    assert quality.level == len(LEVELS) - 1


def test_quality_recovers_one_step_after_recover_after_seconds_clean() -> None:
    bad = PathSignals(loss=0.0, srtt=None, min_rtt=None, budget_short=True)
    quality = QualityController()
    quality.update(bad, 0.0)
    quality.update(bad, 1.0)
    assert quality.factor == LEVELS[2]
    assert quality.update(CLEAN, 2.0) == LEVELS[2]
    assert quality.update(CLEAN, 3.999) == LEVELS[2]
    assert quality.update(CLEAN, 4.0) == LEVELS[1]  # 3 s after the last bad signal
    assert quality.update(CLEAN, 5.0) == LEVELS[1]  # one step at a time
    assert quality.update(CLEAN, 6.999) == LEVELS[1]
    assert quality.update(CLEAN, 7.0) == LEVELS[0]
    for t in range(8, 30):
        assert quality.update(CLEAN, float(t)) == LEVELS[0]  # never above the top
    assert quality.level == 0


def test_recovery_waits_recover_after_seconds_from_the_last_bad_signal() -> None:
    bad = PathSignals(loss=0.2, srtt=None, min_rtt=None, budget_short=False)
    quality = QualityController()
    assert quality.update(bad, 0.0) == LEVELS[1]
    assert quality.update(bad, 0.5) == LEVELS[1]  # within step_down_interval: no step
    assert quality.update(CLEAN, 3.0) == LEVELS[1]  # 3 s after the step, 2.5 s clean
    assert quality.update(CLEAN, 3.25) == LEVELS[1]
    assert quality.update(CLEAN, 3.5) == LEVELS[0]


# -- ChannelLink ---------------------------------------------------------------------


class Inbox:
    """A link's LinkOwner, as a Session is: what arrived, and a fixed RTO."""

    def __init__(self, rto: float = 0.5) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.positions: list[PositionState] = []
        self.rtt: list[float] = []
        self._rto = rto

    def deliver(self, packet_type: int, payload: bytes) -> None:
        self.messages.append((packet_type, payload))

    def deliver_position(self, state: PositionState) -> None:
        self.positions.append(state)

    def rto(self) -> float:
        return self._rto

    def rtt_sample(self, sample: float) -> None:
        self.rtt.append(sample)

    def of(self, packet_type: int) -> list[bytes]:
        return [payload for t, payload in self.messages if t == packet_type]


def make_link(*, room: int = 1200, max_message: int = 65536, effect_max_wait: float = 0.5,
              rto: float = 0.5, rto_max: float = 2.0,
              max_queued_bytes: int = 1 << 20) -> tuple[ChannelLink, Inbox]:
    inbox = Inbox(rto)
    link = ChannelLink(room=room, max_message=max_message, max_queued_bytes=max_queued_bytes,
                       effect_max_wait=effect_max_wait, rto_max=rto_max, owner=inbox)
    return link, inbox


def feed_datagram(link: ChannelLink, datagram: bytes, now: float) -> None:
    """What a session does with a received frame list: channel frames to the link."""
    for frame_type, body in decode_frames_untrusted(datagram):
        if not link.on_frame(int(frame_type), body, now):
            assert frame_type in (PacketType.PING, PacketType.PONG, PacketType.DISCONNECT)


def describe(frame: bytes) -> tuple[int, int | bytes]:
    """(type, what identifies the frame): the channel of an ACK, the seq of reliable data."""
    frame_type, body = one_frame(frame)
    if frame_type == ACK_TYPE:
        return frame_type, int(parse_ack_untrusted(body)[0])
    if frame_type in (CHAT, AI):
        return frame_type, parse_seq_untrusted(body)[0]
    if frame_type == ENV:
        return frame_type, parse_seq_floor_untrusted(body)[0]
    if frame_type == POSITION:
        return frame_type, parse_position_header_untrusted(body)[0]
    return frame_type, body


def test_build_fills_in_the_documented_order() -> None:
    link, _ = make_link(rto=0.5)
    link.queue(CHAT, b"old chat", None, 0.0)
    link.queue(ENV, b"old env", b"k1", 0.0)
    assert frame_types(link.build(0.0, data=True)) == [CHAT, ENV]
    # the peer sent something on every channel: acks are due
    link.on_frame(CHAT, SEQ.pack(0) + b"hi", 0.1)
    link.on_frame(AI, SEQ.pack(0) + b"ai", 0.1)
    link.on_frame(ENV, SEQ_FLOOR.pack(0, 0) + encode_keyed(b"x", b"v"), 0.1)
    link.on_frame(POSITION, bytes.fromhex("0000 0000") + encode_position(walk(0), None), 0.1)
    # queued in the reverse of the fill order
    link.queue(EFFECT, b"fx", None, 0.6)
    link.queue_position(walk(1))
    link.queue(ENV, b"new env", b"k2", 0.6)
    link.queue(AI, b"new ai", None, 0.6)
    link.queue(CHAT, b"new chat", None, 0.6)
    link.queue_control(PING, b"12345678")
    frames = link.build(0.6, data=True)  # both old messages are due again
    assert [describe(f) for f in frames] == [
        (PING, b"12345678"),
        (ACK_TYPE, int(Channel.CHAT)),
        (ACK_TYPE, int(Channel.AI)),
        (ACK_TYPE, int(Channel.ENVIRONMENT)),
        (POSITION_ACK_TYPE, b"\x00\x00"),
        (CHAT, 0),  # retransmissions
        (ENV, 0),
        (CHAT, 1),  # new: chat, AI, environment
        (AI, 0),
        (ENV, 1),
        (POSITION, 0),
        (EFFECT, b"fx"),
    ]
    assert link.data_frames == 7


def test_without_data_only_control_and_acks_go_out() -> None:
    link, _ = make_link()
    link.queue(CHAT, b"waits", None, 0.0)
    link.queue(EFFECT, b"waits too", None, 0.0)
    link.on_frame(AI, SEQ.pack(0) + b"ai", 0.0)
    link.queue_control(PING, b"")
    assert [describe(f) for f in link.build(0.0, data=False)] == [
        (PING, b""), (ACK_TYPE, int(Channel.AI))]
    assert link.data_frames == 0
    assert frame_types(link.build(0.0, data=True)) == [CHAT, EFFECT]


def test_effects_older_than_effect_max_wait_are_dropped_and_counted() -> None:
    link, _ = make_link(effect_max_wait=0.1)
    link.queue(EFFECT, b"stale", None, 0.0)
    link.queue(EFFECT, b"fresh", None, 0.15)
    assert [describe(f) for f in link.build(0.2, data=True)] == [(EFFECT, b"fresh")]
    assert link.effects_expired == 1
    assert link.counters()["effects_expired"] == 1
    assert link.build(0.2, data=True) == []


def test_effect_queue_is_bounded_by_max_effects() -> None:
    link, _ = make_link(room=1200)
    total = MAX_EFFECTS + 5
    for i in range(total):
        link.queue(EFFECT, b"%04d" % i, None, 0.0)
    assert link.effects_dropped == 5
    sent: list[bytes] = []
    while frames := link.build(0.0, data=True):
        assert sum(map(len, frames)) <= link.room
        sent += [one_frame(f)[1] for f in frames]
    assert sent == [b"%04d" % i for i in range(5, total)]  # the oldest were dropped
    assert link.pending_bytes() == 0


def test_an_effect_too_large_for_a_datagram_is_refused() -> None:
    link, _ = make_link(room=200)
    link.queue(EFFECT, bytes(200 - ACK_RESERVE - 4), None, 0.0)
    with pytest.raises(ValueError, match="effect"):
        link.queue(EFFECT, bytes(200 - ACK_RESERVE - 3), None, 0.0)


def test_disconnect_queued_last_goes_after_the_data() -> None:
    link, _ = make_link(room=200)
    for i in range(3):
        link.queue(CHAT, bytes([i]) * 100, None, 0.0)  # one datagram each
    link.queue(EFFECT, b"fx", None, 0.0)
    link.queue_control(DISCONNECT, b"", last=True)
    datagrams = []
    while frames := link.build(0.0, data=True):
        assert sum(map(len, frames)) <= 200
        datagrams.append(frame_types(frames))
    # the effect fills the room the first chat message leaves
    assert datagrams == [[CHAT, EFFECT], [CHAT], [CHAT, DISCONNECT]]
    assert not link.trailer_pending


def test_disconnect_goes_at_once_when_data_may_not_be_sent() -> None:
    link, _ = make_link()
    link.queue(CHAT, b"held back", None, 0.0)
    link.queue_control(DISCONNECT, b"", last=True)
    assert frame_types(link.build(0.0, data=False)) == [DISCONNECT]
    assert not link.trailer_pending


def test_link_refuses_what_cannot_travel() -> None:
    link, _ = make_link(max_message=100)
    with pytest.raises(ValueError, match="max_message_size"):
        link.queue(CHAT, bytes(101), None, 0.0)
    with pytest.raises(ValueError, match="not a channel message"):
        link.queue(PING, b"", None, 0.0)
    with pytest.raises(ValueError, match="key"):
        link.queue(ENV, b"v", None, 0.0)
    link.queue(CHAT, bytes(100), None, 0.0)


def test_on_frame_returns_false_for_other_frame_types() -> None:
    link, inbox = make_link()
    assert not link.on_frame(PING, b"", 0.0)
    assert not link.on_frame(DISCONNECT, b"", 0.0)
    assert inbox.messages == []


@pytest.mark.parametrize(("seed", "room"), [(21, 120), (22, 300), (23, 1200)])
def test_two_links_over_a_bad_network(seed: int, room: int) -> None:
    """Chat and AI exactly once in order, the newest environment value of every key,
    positions never out of order, only effects that were sent, every datagram within room.
    (Duplicated datagrams repeat effects: the session's replay window removes those.)"""
    rng = random.Random(seed)
    a, a_in = make_link(room=room, max_message=2000, rto=0.1, rto_max=0.8)
    b, b_in = make_link(room=room, max_message=2000, rto=0.1, rto_max=0.8)
    to_b = Wire(rng, loss=0.2, duplicate=0.05, max_delay=0.1)
    to_a = Wire(rng, loss=0.2, duplicate=0.05, max_delay=0.1)
    chats: list[bytes] = []
    ais: list[bytes] = []
    env: dict[bytes, bytes] = {}
    effects: list[bytes] = []
    now = 0.0

    def pump(link: ChannelLink, wire: Wire) -> None:
        for _ in range(50):
            frames = link.build(now, data=True)
            if not frames:
                return
            datagram = b"".join(frames)
            assert len(datagram) <= room
            wire.send([datagram], now)
            if not link.data_frames or not link.has_data(now):
                return

    for step in range(30_000):
        if step < 200:
            chats.append(b"chat %d " % step + rng.randbytes(rng.choice([0, 10, 150, 600])))
            a.queue(CHAT, chats[-1], None, now)
            if rng.random() < 0.5:
                ais.append(b"ai %d " % step + rng.randbytes(rng.choice([0, 50, 300])))
                a.queue(AI, ais[-1], None, now)
            if rng.random() < 0.5:
                key = b"k%d" % rng.randrange(5)
                env[key] = b"env %d " % step + rng.randbytes(rng.choice([0, 40, 400]))
                a.queue(ENV, env[key], key, now)
            a.queue_position(walk(step))
            if rng.random() < 0.5:
                effects.append(b"fx %d" % step)
                a.queue(EFFECT, effects[-1], None, now)
            if rng.random() < 0.1:
                a.queue_control(PING, rng.randbytes(8))
        pump(a, to_b)
        pump(b, to_a)
        for datagram in to_b.arrivals(now):
            feed_datagram(b, datagram, now)
        for datagram in to_a.arrivals(now):
            feed_datagram(a, datagram, now)
        if step >= 200 and a.reliable_idle() and to_b.empty and to_a.empty:
            break
        now += 0.01
    assert a.reliable_idle()
    assert b_in.of(CHAT) == chats
    assert b_in.of(AI) == ais
    delivered_env = b_in.of(ENV)
    for key, value in env.items():
        assert value in delivered_env, key
    ticks = [p.tick for p in b_in.positions]
    assert ticks == sorted(set(ticks))
    assert ticks
    got_effects = b_in.of(EFFECT)
    assert got_effects
    assert set(got_effects) <= set(effects)
    assert a_in.rtt  # acks came back with RTT samples
    assert a.counters()["retransmissions"] > 0  # the loss was repaired, not avoided


@pytest.mark.parametrize("seed", range(4))
def test_link_on_frame_raises_only_bad_packet(seed: int) -> None:
    rng = random.Random(seed)
    link, _ = make_link(room=300, max_message=500)
    seeds: dict[int, list[bytes]] = {
        CHAT: [SEQ.pack(0) + b"x", SEQ.pack(3)],
        AI: [SEQ.pack(1) + b"y"],
        ENV: [SEQ_FLOOR.pack(2, 1) + encode_keyed(b"k", b"v")],
        FRAGMENT_TYPE: valid_bodies()["fragment"],
        ACK_TYPE: valid_bodies()["ack"],
        POSITION_ACK_TYPE: [b"\x00\x00"],
        POSITION: [bytes.fromhex("0000 0000") + encode_position(walk(0), None),
                   bytes.fromhex("0001 0000") + encode_position(walk(1), walk(0))],
        EFFECT: [b"fx"],
    }
    link.queue(CHAT, b"out", None, 0.0)
    link.build(0.0, data=True)
    for i in range(4000):
        frame_type = rng.choice(sorted(seeds))
        body = next(iter(mutations(rng, seeds[frame_type], 1)))
        with contextlib.suppress(BadPacket):
            assert link.on_frame(frame_type, body, i * 0.01)


def test_a_latest_value_at_the_top_of_the_seq_space_cannot_break_build() -> None:
    link, _ = make_link()
    with contextlib.suppress(BadPacket):
        link.on_frame(ENV, SEQ_FLOOR.pack(0xFFFFFFFF, 0xFFFFFFFF) + encode_keyed(b"k", b"v"), 0.0)
    link.build(0.0, data=False)


def test_a_fragmented_environment_value_of_max_message_bytes_is_delivered() -> None:
    a, _ = make_link(room=200, max_message=300)
    b, b_in = make_link(room=200, max_message=300)
    a.queue(ENV, bytes(300), b"key", 0.0)
    errors = []
    while frames := a.build(0.0, data=True):
        try:
            feed_datagram(b, b"".join(frames), 0.0)
        except BadPacket as error:
            errors.append(error)
    assert errors == []
    assert b_in.of(ENV) == [bytes(300)]
