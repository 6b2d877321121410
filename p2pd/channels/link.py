"""Every channel of one peer link, and how a datagram is filled from them.

:class:`ChannelLink` is what a session hands its application messages to and
what fills each outgoing datagram, in this order (spec §3.3 prioritization):

1. control frames (PING, PONG, DISCONNECT) and acknowledgements;
2. reliable retransmissions that are due;
3. new reliable messages: chat, then AI interactions, then environment;
4. the newest position;
5. visual effects (an effect that waited longer than ``effect_max_wait`` is
   dropped: shown late it would be wrong).

Each channel's state (a reliable sender or receiver, the position sender or
receiver, the effect queue) is made when the channel is first used: a link
with the coordinator uses the control channel only, and a coordinator holds
thousands of links. A channel not made yet is in its initial state (nothing
queued, in flight or received), so that making it later changes nothing.

It never touches a socket or a clock.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from p2pd.channels.frames import (
    CHANNEL_OF_TYPE,
    FRAGMENT_FLOOR,
    ORDERED_CHANNELS,
    TYPE_OF_CHANNEL,
    Channel,
    Fragment,
    parse_ack_untrusted,
    parse_fragment_untrusted,
    parse_position_ack_untrusted,
    parse_position_header_untrusted,
    parse_seq_floor_untrusted,
    parse_seq_untrusted,
)
from p2pd.channels.position_codec import PositionState
from p2pd.channels.positions import PositionReceiver, PositionSender
from p2pd.channels.reliable import (
    LatestValueReceiver,
    OrderedReceiver,
    ReliableSender,
    SendQueueFull,
)
from p2pd.wire.frames import FRAME_HEADER
from p2pd.wire.header import MAX_DATAGRAM
from p2pd.wire.types import PacketType

__all__ = ["ChannelLink", "SendQueueFull"]

# Room kept for acknowledgements beside the largest data frame: three channel
# ACKs and a POSITION_ACK (a link between daemons acks at most chat, AI and
# environment; one with the coordinator only its control channel). Should more
# be due at once, the data frame waits for the next datagram.
ACK_RESERVE = 3 * (FRAME_HEADER.size + 13) + FRAME_HEADER.size + 2
MAX_EFFECTS = 256  # effects waiting for the budget
_EFFECT = int(PacketType.VISUAL_EFFECT)
_POSITION = int(PacketType.POSITION_UPDATE)
_ENVIRONMENTAL = int(PacketType.ENVIRONMENTAL)
_ACK = int(PacketType.ACK)
_POSITION_ACK = int(PacketType.POSITION_ACK)
_FRAGMENT = int(PacketType.FRAGMENT)
_pack_frame_header = FRAME_HEADER.pack
_FRAME_HEADER_SIZE = FRAME_HEADER.size
# the header of an effect frame, by frame size (header included): one datagram at most
_EFFECT_HEADERS = [b""] * _FRAME_HEADER_SIZE + [
    _pack_frame_header(_EFFECT, n) for n in range(MAX_DATAGRAM - _FRAME_HEADER_SIZE)]



class LinkOwner(Protocol):
    """What a link reports to (its session): one reference per link, where four
    callbacks would be four bound-method objects for each of a coordinator's
    thousands of links."""

    def deliver(self, packet_type: int, payload: bytes) -> None:
        """A message of ``packet_type`` arrived (in order, for an ordered channel)."""

    def deliver_position(self, state: PositionState) -> None:
        """The newest position arrived."""

    def rto(self) -> float:
        """The retransmission timeout now."""

    def rtt_sample(self, sample: float) -> None:
        """An acknowledgement's round trip (a part sent once)."""

Receiver = OrderedReceiver | LatestValueReceiver
# the order of the ACK frames of a datagram, by channel: ordered ones, then environment
_ACK_RANK = {Channel.CHAT: 0, Channel.AI: 1, Channel.CONTROL: 2, Channel.ENVIRONMENT: 3}


class ChannelLink:
    __slots__ = (
        "_control",
        "_effect_max_wait",
        "_effect_room",
        "_effect_times",
        "_effects",
        "_max_queued_bytes",
        "_owner",
        "_part_size",
        "_position_error_budget",
        "_positions_in",
        "_positions_out",
        "_receivers",
        "_reliable_busy",
        "_rto_max",
        "_sender_list",
        "_trailer",
        "data_frames",
        "effects_dropped",
        "effects_expired",
        "max_message",
        "new_bytes",
        "room",
        "touched",
    )

    def __init__(
        self,
        *,
        room: int,
        max_message: int,
        max_queued_bytes: int,
        effect_max_wait: float,
        rto_max: float,
        owner: LinkOwner,
        position_error_budget: int | None = 1,
    ) -> None:
        """``room``: plaintext bytes of a datagram's frame list; ``owner``: what
        messages, positions and round trips go to, and what says the RTO."""
        self.room = room
        self._part_size = room - ACK_RESERVE - FRAME_HEADER.size - FRAGMENT_FLOOR.size
        self.max_message = max_message
        self._max_queued_bytes = max_queued_bytes
        self._rto_max = rto_max
        # the channels made so far (on first use), senders in priority order (chat,
        # AI, environment, control), receivers in the order of their ACK frames
        self._sender_list: tuple[ReliableSender, ...] = ()
        self._receivers: tuple[Receiver, ...] = ()
        self._positions_out: PositionSender | None = None
        self._positions_in: PositionReceiver | None = None
        self._effects: deque[bytes] | None = None  # frames, oldest first
        self._effect_times: deque[float] | None = None  # when each was queued
        self._effect_max_wait = effect_max_wait
        self._position_error_budget = position_error_budget
        # control frames for the next datagram, and those to go after the data: None
        # when there are none (most datagrams carry none)
        self._control: list[bytes] | None = None
        self._trailer: list[bytes] | None = None
        self._owner = owner
        self.effects_expired = 0
        self.effects_dropped = 0  # the effect queue was full
        self.data_frames = 0  # data frames the last build() took
        self._reliable_busy = False  # a reliable channel has something queued or in flight
        self.new_bytes = 0  # about pending_bytes(), kept up to date cheaply
        # state shared with the peer exists (a seq sent or received, a position
        # baseline): a peer that lost its own must make this link start over (8.10)
        self.touched = False
        self._effect_room = room - ACK_RESERVE

    # -- the channels, made on first use ----------------------------------------

    def sender(self, channel: Channel) -> ReliableSender:
        """The sending half of a reliable channel."""
        for sender in self._sender_list:
            if sender.channel == channel:
                return sender
        sender = ReliableSender(channel, part_size=self._part_size,
                                max_queued_bytes=self._max_queued_bytes, rto=self._owner.rto,
                                rto_max=self._rto_max)
        self._sender_list = tuple(sorted((*self._sender_list, sender), key=lambda s: s.channel))
        return sender

    @property
    def senders(self) -> dict[Channel, ReliableSender]:
        """The reliable senders made so far."""
        return {sender.channel: sender for sender in self._sender_list}

    def receiver(self, channel: Channel) -> Receiver:
        """The receiving half of a reliable channel."""
        for receiver in self._receivers:
            if receiver.channel == channel:
                return receiver
        made: Receiver = (OrderedReceiver(channel, self.max_message)
                          if channel in ORDERED_CHANNELS
                          else LatestValueReceiver(channel, self.max_message))
        self._receivers = tuple(sorted((*self._receivers, made),
                                       key=lambda r: _ACK_RANK[r.channel]))
        return made

    @property
    def positions_out(self) -> PositionSender:
        positions = self._positions_out
        if positions is None:
            positions = self._positions_out = PositionSender(self._position_error_budget)
        return positions

    @property
    def positions_in(self) -> PositionReceiver:
        positions = self._positions_in
        if positions is None:
            positions = self._positions_in = PositionReceiver()
        return positions

    @property
    def position_ack_pending(self) -> bool:
        positions = self._positions_in
        return positions is not None and positions.ack_pending

    def send_counts(self) -> tuple[int, int]:
        """(transmissions of reliable parts, of which retransmissions), every channel."""
        senders = self._sender_list
        return (sum(s.sends for s in senders), sum(s.retransmissions for s in senders))

    def rebind(self, owner: LinkOwner) -> None:
        """Serve another session of the same peer (a link resumed after its
        session closed): its owner from now on, everything else kept."""
        self._owner = owner
        for sender in self._sender_list:
            sender.set_rto(owner.rto)

    def unacked_messages(self) -> list[tuple[int, bytes, bytes | None]]:
        """(packet type, payload, key) of every reliable message not wholly
        acknowledged, in order within each channel: what a restarted link sends
        again. Effects and positions are not kept: they are stale by then."""
        return [(int(TYPE_OF_CHANNEL[sender.channel]), payload, key)
                for sender in self._sender_list
                for payload, key in sender.unacked()]

    # -- the sending side ----------------------------------------------------

    def queue(self, packet_type: int, payload: bytes, key: bytes | None, now: float) -> None:
        """Queue one application message. Raises SendQueueFull, or ValueError when a
        message cannot travel at all (too large, a latest-value message without key)."""
        if packet_type == _EFFECT:
            size = len(payload) + _FRAME_HEADER_SIZE
            if size > self._effect_room:
                raise ValueError(
                    f"effect of {len(payload)} bytes exceeds the"
                    f" {self._effect_room - _FRAME_HEADER_SIZE} bytes an unreliable"
                    " message may take"
                )
            effects, times = self._effects, self._effect_times
            if effects is None or times is None:
                effects, times = self._effects, self._effect_times = deque(), deque()
            if len(effects) >= MAX_EFFECTS:
                dropped = effects.popleft()
                times.popleft()
                self.new_bytes -= len(dropped)
                self.effects_dropped += 1
            effects.append(_EFFECT_HEADERS[size] + payload)
            times.append(now)
            self.new_bytes += size
            return
        channel = CHANNEL_OF_TYPE.get(packet_type)
        if channel is None:
            raise ValueError(f"type 0x{packet_type:04x} is not a channel message")
        if len(payload) > self.max_message:
            raise ValueError(f"message of {len(payload)} bytes exceeds max_message_size"
                             f" ({self.max_message})")
        self.sender(channel).queue(payload, key if channel is Channel.ENVIRONMENT else None)
        self._reliable_busy = True
        self.new_bytes += len(payload) + _FRAME_HEADER_SIZE

    def check(self, packet_type: int, payload: bytes, key: bytes | None) -> None:
        """Raise what queue() would raise for this message, queueing nothing."""
        if packet_type == _EFFECT:
            if len(payload) + _FRAME_HEADER_SIZE > self._effect_room:
                raise ValueError(
                    f"effect of {len(payload)} bytes exceeds the"
                    f" {self._effect_room - _FRAME_HEADER_SIZE} bytes an unreliable"
                    " message may take"
                )
            return
        channel = CHANNEL_OF_TYPE.get(packet_type)
        if channel is None:
            raise ValueError(f"type 0x{packet_type:04x} is not a channel message")
        if len(payload) > self.max_message:
            raise ValueError(f"message of {len(payload)} bytes exceeds max_message_size"
                             f" ({self.max_message})")
        self.sender(channel).check(payload, key if channel is Channel.ENVIRONMENT else None)

    def queue_position(self, state: PositionState, *, fresh: bool = False) -> None:
        self.positions_out.queue(state, fresh=fresh)
        self.new_bytes = self.pending_bytes()

    def repeat_position(self) -> bool:
        """The last position sent, once more unless acknowledged (PositionSender.repeat)."""
        if self._positions_out is None or not self._positions_out.repeat():
            return False
        self.new_bytes = self.pending_bytes()
        return True

    def queue_control(self, packet_type: int, body: bytes, *, last: bool = False) -> None:
        """A control frame for the next datagram; ``last``: after every data frame
        still waiting (DISCONNECT), or at once when data may not be sent."""
        frame = _pack_frame_header(packet_type, len(body)) + body
        if last:
            if self._trailer is None:
                self._trailer = [frame]
            else:
                self._trailer.append(frame)
        elif self._control is None:
            self._control = [frame]
        else:
            self._control.append(frame)

    @property
    def trailer_pending(self) -> bool:
        return self._trailer is not None

    def pending_bytes(self) -> int:
        """New data waiting to be sent (approximate frame bytes)."""
        total = 0
        if self._effects:
            for frame in self._effects:
                total += len(frame)
        if self._reliable_busy:
            for sender in self._sender_list:
                total += sender.queued_bytes
        positions = self._positions_out
        if positions is not None and positions.pending is not None:
            total += 24
        return total

    def has_data(self, now: float) -> bool:
        """Something sendable now: new data or due retransmissions."""
        if self._effects:
            return True
        positions = self._positions_out
        if positions is not None and positions.pending is not None:
            return True
        if not self._reliable_busy:
            return False
        for sender in self._sender_list:  # noqa: SIM110 (any() and a generator: slower)
            if sender.can_send_new() or sender.has_due(now):
                return True
        return False

    def data_class(self) -> int:
        """0: reliable data waits, 1: a position, 2: effects only, 3: nothing."""
        if self._reliable_busy:
            for sender in self._sender_list:
                if sender.can_send_new() or sender.next_due() is not None:
                    return 0
        positions = self._positions_out
        if positions is not None and positions.pending is not None:
            return 1
        return 2 if self._effects else 3

    def has_control(self) -> bool:
        return self._control is not None

    def acks_pending(self) -> bool:
        for receiver in self._receivers:  # noqa: SIM110 (any() and a generator: slower)
            if receiver.ack_pending:
                return True
        return False

    def build(self, now: float, *, data: bool) -> list[bytes]:
        """Frames for one datagram: control and acks always, data when ``data``."""
        out = self._control
        used = 0
        if out is None:
            out = []
        else:
            self._control = None
            for frame in out:
                used += len(frame)
        for receiver in self._receivers:
            if receiver.ack_pending:
                frame = receiver.ack_frame()
                out.append(frame)
                used += len(frame)
        positions_in = self._positions_in
        if positions_in is not None and positions_in.ack_pending:
            frame_or_none = positions_in.ack_frame()
            if frame_or_none is not None:
                out.append(frame_or_none)
                used += len(frame_or_none)
        self.data_frames = 0
        if not data:
            if self._trailer is not None:
                out += self._trailer
                self._trailer = None
            return out
        controls = len(out)
        room = self.room
        if self._reliable_busy:
            senders = self._sender_list
            for sender in senders:
                if sender.has_due(now):
                    used += sender.take_retransmissions(now, room - used, out)
            for sender in senders:
                if sender.can_send_new():
                    used += sender.take_new(now, room - used, out)
            self._reliable_busy = not all(sender.idle for sender in senders)
        positions = self._positions_out
        if (positions is not None and positions.pending is not None
                and used + positions.frame_size() <= room):
            frame_or_none = positions.take()
            if frame_or_none is not None:
                out.append(frame_or_none)
                used += len(frame_or_none)
        if len(out) > controls:
            self.touched = True  # seqs or a position baseline went out
        effects, times = self._effects, self._effect_times
        if effects and times is not None:
            oldest = now - self._effect_max_wait
            while times and times[0] < oldest:  # queued in time order: expired ones lead
                times.popleft()
                effects.popleft()
                self.effects_expired += 1
            count = 0
            for frame in effects:
                size = len(frame)
                if used + size > room:
                    break
                out.append(frame)
                used += size
                count += 1
            if count == len(effects):  # all of them: the common case of a burst
                effects.clear()
                times.clear()
            else:
                for _ in range(count):
                    effects.popleft()
                    times.popleft()
        self.data_frames = len(out) - controls
        self.new_bytes = self.pending_bytes()
        if self._trailer is not None and not self.has_data(now):
            out += self._trailer
            self._trailer = None
        return out

    def next_retransmission(self) -> float | None:
        if not self._reliable_busy:
            return None
        times = [t for s in self._sender_list if (t := s.next_due()) is not None]
        return min(times) if times else None

    def reliable_idle(self) -> bool:
        for sender in self._sender_list:  # noqa: SIM110 (all() and a generator: slower)
            if not sender.idle:
                return False
        return True

    # -- the receiving side --------------------------------------------------

    def on_frame(self, frame_type: int, body: bytes, now: float) -> bool:
        """Handle one channel or data frame; False if ``frame_type`` is not one.
        Raises BadPacket for a malformed frame."""
        if frame_type == _EFFECT:
            self._owner.deliver(_EFFECT, body)
        elif frame_type == _POSITION:
            seq, base_seq, coded = parse_position_header_untrusted(body)
            state = self.positions_in.receive(seq, base_seq, coded)
            if state is not None:
                self._owner.deliver_position(state)
        elif frame_type == _ACK:
            channel, next_seq, bits = parse_ack_untrusted(body)
            for sender in self._sender_list:
                if sender.channel is channel:  # a channel that sent nothing: nothing acked
                    for sample in sender.on_ack(next_seq, bits, now):
                        self._owner.rtt_sample(sample)
                    break
            if self._reliable_busy and self.reliable_idle():
                self._reliable_busy = False  # the last ack in: idle links skip the channels
        elif frame_type == _POSITION_ACK:
            seq = parse_position_ack_untrusted(body)
            if self._positions_out is not None:  # nothing sent: nothing to acknowledge
                self._positions_out.on_ack(seq)
        elif frame_type == _FRAGMENT:
            fragment = parse_fragment_untrusted(body)
            self._receive_reliable(fragment.channel, fragment.seq, fragment.floor, fragment, now)
        elif frame_type == _ENVIRONMENTAL:
            seq, floor, content = parse_seq_floor_untrusted(body)
            self._receive_reliable(Channel.ENVIRONMENT, seq, floor, content, now)
        else:
            ordered = CHANNEL_OF_TYPE.get(frame_type)
            if ordered is None:
                return False
            seq, payload = parse_seq_untrusted(body)
            receiver = self.receiver(ordered)
            assert isinstance(receiver, OrderedReceiver)  # CHANNEL_OF_TYPE: ordered ones here
            receiver.receive_typed(seq, payload, frame_type, self._owner.deliver)
        if frame_type != _EFFECT:
            self.touched = True
        return True

    def _receive_reliable(self, channel: Channel, seq: int, floor: int, item: bytes | Fragment,
                          now: float) -> None:
        receiver = self.receiver(channel)
        if isinstance(receiver, OrderedReceiver):
            receiver.receive_typed(seq, item, int(TYPE_OF_CHANNEL[channel]), self._owner.deliver)
        else:
            deliver_env = self._owner.deliver
            receiver.receive(
                seq, floor, item, now, lambda _key, payload: deliver_env(_ENVIRONMENTAL, payload))

    # -- statistics ----------------------------------------------------------

    def counters(self) -> dict[str, int]:
        senders = self._sender_list
        receivers = self._receivers
        environment = next((r for r in receivers if r.channel == Channel.ENVIRONMENT), None)
        positions_out = self._positions_out if self._positions_out is not None else _NO_POSITIONS
        positions_in = self._positions_in if self._positions_in is not None else _NO_POSITIONS_IN
        return {
            "reliable_sent": sum(s.messages for s in senders),
            "retransmissions": sum(s.retransmissions for s in senders),
            "superseded": sum(s.superseded for s in senders) + positions_out.superseded,
            "in_flight": sum(s.in_flight for s in senders),
            "queued_bytes": self.pending_bytes(),
            "duplicates": sum(r.duplicates for r in receivers),
            "beyond_window": sum(r.beyond_window for r in receivers),
            "stale_values": environment.stale if isinstance(environment, LatestValueReceiver)
            else 0,
            "positions_sent": positions_out.sent,
            "positions_full": positions_out.full_states,
            "positions_unchanged": positions_out.unchanged,
            "positions_predicted": positions_out.predicted,
            "positions_repeated": positions_out.repeated,
            "positions_stale": positions_in.stale,
            "positions_no_baseline": positions_in.no_baseline,
            "effects_expired": self.effects_expired,
            "effects_dropped": self.effects_dropped,
        }


# what the counters read for a position channel not made yet (never changed)
_NO_POSITIONS = PositionSender()
_NO_POSITIONS_IN = PositionReceiver()
