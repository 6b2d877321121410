"""One peer's session: handshake rounds, keypairs, liveness, RTT and counters.

A Session is owned and driven by an :class:`~p2pd.session.endpoint.Endpoint`;
it never touches sockets or clocks. Keypair life cycle (after WireGuard):

- An initiator sends handshake requests (a fresh one per retransmission, each
  with its own index; the last few stay answerable) and installs the keypair
  of the first response that authenticates. It then PINGs at once: the
  responder uses new keys only after seeing traffic under them.
- A responder keeps the keypairs it answered with as *unconfirmed* until the
  first authenticated packet under one of them arrives; that one becomes
  current and the others are forgotten.
- After a rekey the previous keypair still opens packets for a grace period.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from p2pd.channels.link import ChannelLink, SendQueueFull
from p2pd.channels.position_codec import PositionState
from p2pd.channels.quality import LEVELS, PathSignals, QualityController
from p2pd.crypto.handshake import (
    Framed,
    decode_response_payload_untrusted,
    encode_request_payload,
    encode_response_payload,
    frame_request,
    frame_response,
    mac1_key,
    request_prologue,
)
from p2pd.crypto.noise import InitiatorHandshake, ResponderHandshake
from p2pd.crypto.transport import OVERHEAD, Keypair
from p2pd.meters import Allowance, ByteBudget, budget_for_limit
from p2pd.session.config import EncryptionLevel, SessionConfig
from p2pd.session.events import (
    Address,
    CloseReason,
    MessageReceived,
    PeerAddressChanged,
    PositionReceived,
    SessionClosed,
    SessionEstablished,
)
from p2pd.session.rtt import RttEstimator
from p2pd.session.stats import Counters, SessionStatistics
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.frames import FRAME_HEADER, decode_frames_untrusted, padding_for
from p2pd.wire.header import MAX_DATAGRAM
from p2pd.wire.types import COMPRESSION_FLAGS, DATA_TYPES, Flag, PacketType

if TYPE_CHECKING:
    from p2pd.session.endpoint import Endpoint

MAX_PLAINTEXT = MAX_DATAGRAM - OVERHEAD  # 1430
MAX_MESSAGE = MAX_PLAINTEXT - FRAME_HEADER.size  # 1426: the largest frame body
MAX_INITIATIONS = 4  # outstanding handshake requests that a response may answer
MAX_UNCONFIRMED = 4  # responder keypairs waiting for their first packet
MAX_PINGS = 8  # outstanding PINGs remembered for RTT samples
PAD_STEP = 32  # level high pads uncompressed frame lists to multiples of this, where it fits
_PING = struct.Struct(">I")
# what to append to a frame list of n bytes, by n % PAD_STEP
_PADDING = [padding_for(n, PAD_STEP) for n in range(PAD_STEP)]
_SEALED = int(PacketType.SEALED)
_TYPE_BY_ID = {int(t): t for t in PacketType}
_DATA_TYPE_IDS = frozenset(int(t) for t in DATA_TYPES)
_PING_ID = int(PacketType.PING)
_EFFECT_TYPE = PacketType.VISUAL_EFFECT
_EFFECT = int(_EFFECT_TYPE)
_PRESENCE_TYPE = PacketType.PRESENCE
_PRESENCE = int(_PRESENCE_TYPE)
_SEALED_FLAGS = int(Flag.ENCRYPTED | Flag.BATCHED)

__all__ = ["MessageTooLarge", "SendQueueFull", "Session"]


class MessageTooLarge(ValueError):
    """A message larger than its channel carries (an unreliable message must fit
    one datagram; a reliable one max_message_size)."""


class _Initiation:
    __slots__ = ("handshake", "local_index", "request")

    def __init__(self, local_index: int, handshake: InitiatorHandshake, request: bytes) -> None:
        self.local_index = local_index
        self.handshake = handshake
        self.request = request


class Session:
    # a coordinator holds a session per daemon: no per-instance dict
    __slots__ = ("_ack_at", "_allowance", "_announce", "_coalesce", "_compress",
                 "_compression_threshold", "_config", "_dirty_sessions", "_emit", "_ep",
                 "_first_contact", "_flush_at", "_high", "_inbound_marks", "_initiations",
                 "_loss_marks", "_next_ping", "_next_retry", "_output", "_pacer", "_ping_id",
                 "_ping_interval", "_pings", "_position_ack_at", "_presented", "_previous",
                 "_previous_until", "_quality", "_reject_after", "_rekey_after", "_retry_interval",
                 "_room", "_round_started", "_shared", "_unconfirmed", "_wake_at", "accumulated",
                 "ack_rtt", "address", "anomalous_since", "budget", "budget_blocked",
                 "channel_restarts", "closed", "cookie", "cookie_received_at", "counters",
                 "credential", "current", "established", "inbound_loss", "known_to_app",
                 "last_blocked", "last_received", "link", "outbound_loss", "peer", "priority",
                 "rtt", "timer_deadline")

    def __init__(self, endpoint: Endpoint, peer: bytes, address: Address, now: float) -> None:
        self._ep = endpoint
        self._config: SessionConfig = endpoint.config
        self.peer = peer
        self.address = address
        self.established = False
        self.closed = False
        self.known_to_app = False  # connect() was called or SessionEstablished sent
        self.timer_deadline: float | None = None  # as the endpoint's timer heap holds it
        # what the peer presented in the handshake under way, until SessionEstablished
        # carries it (not kept beyond: a coordinator holds thousands of sessions)
        self._presented: bytes | None = None
        # what this side presents when it dials: None = the endpoint's certificate
        # (a daemon presents its connect token to the coordinator instead)
        self.credential: bytes | None = None
        self.counters = Counters()
        # PING to PONG: the link's latency, as reported
        self.rtt = RttEstimator(self._config.rtt_history)
        # data to ack, including the peer's ack delay: what retransmission waits for
        # (smoothed only: its samples are never reported)
        self.ack_rtt = RttEstimator(0)
        self.cookie: bytes | None = None
        self.cookie_received_at = 0.0
        # keypairs
        self.current: Keypair | None = None
        self._previous: Keypair | None = None
        self._previous_until = 0.0
        # tuples, () when empty (shared): rarely more than one, changed only at handshakes
        self._unconfirmed: tuple[Keypair, ...] = ()
        # handshake round (initiator side)
        self._initiations: tuple[_Initiation, ...] = ()
        self._round_started: float | None = None
        self._retry_interval = self._config.handshake_retry_initial
        self._next_retry: float | None = None
        self._first_contact = now
        # liveness
        self.last_received = now
        self._next_ping: float | None = None
        self._ping_id = 0
        self._pings: dict[int, float] | None = None  # made with a PING, dropped when empty
        # incoming allowance (spec 5.1): authentic packets and bytes per second
        self._allowance = Allowance(self._config.incoming_packet_rate,
                                    self._config.incoming_byte_rate, now)
        self.anomalous_since: float | None = None  # first time the peer exceeded it
        # hot-path constants and bound methods
        config = self._config
        self._high = config.encryption_level is EncryptionLevel.HIGH
        self._compression_threshold = config.compression_threshold
        self._compress = endpoint.compress
        self._reject_after = config.reject_after_messages
        self._rekey_after = config.rekey_after_messages
        self._output = endpoint.output
        self._emit = endpoint.emit
        self._dirty_sessions = endpoint.dirty_sessions  # this session joins it when given data
        # channels (p2pd.channels): what waits to be sent, acks, retransmissions
        self._room = config.batch_budget - OVERHEAD  # plaintext bytes of one datagram
        self.link = self._new_link()
        self.channel_restarts = 0
        self._announce = False
        self._coalesce = config.coalesce_delay
        # a link must hear from its peer well within inactive_timeout
        self._ping_interval = min(config.ping_interval, config.inactive_timeout / 3)
        self._flush_at: float | None = None  # new data waits for company until then
        self._ack_at: float | None = None  # reliable data to acknowledge
        self._position_ack_at: float | None = None
        self._wake_at: float | None = None  # the send budget allows data again
        # bandwidth (spec 3.3): this link's cap, and the endpoint's cap on all links
        self.budget: ByteBudget | None = (
            budget_for_limit(config.send_rate, config.batch_budget, now)
            if config.send_rate is not None else None
        )
        self._shared: ByteBudget | None = endpoint.shared_budget
        # pacing: datagrams per second, bursts of 50 ms worth
        self._pacer = ByteBudget(config.send_packet_rate,
                                 max(config.send_packet_rate * 0.05, 2.0), now)
        self.budget_blocked = 0  # times data had to wait for a budget
        self.last_blocked: float | None = None
        self._quality: QualityController | None = None  # made when first asked
        self._loss_marks = (0, 0)  # (parts sent, retransmissions) at the last quality update
        self.outbound_loss = 0.0  # smoothed share of reliable parts retransmitted
        self._inbound_marks: tuple[Keypair | None, int, int] = (None, 0, 0)
        self.inbound_loss = 0.0  # smoothed share of the peer's packets that did not arrive
        self.priority = 1.0  # weight in the accumulator (nearer peers: higher)
        self.accumulated = 0.0  # priority accumulated while waiting for the shared budget

    def _new_link(self) -> ChannelLink:
        config = self._config
        return ChannelLink(
            room=self._room,
            max_message=config.max_message_size,
            max_queued_bytes=config.max_queued_bytes,
            effect_max_wait=config.effect_max_wait,
            rto_max=config.rto_max,
            owner=self,
            position_error_budget=config.position_error_budget,
        )

    @property
    def fresh(self) -> bool:
        """No channel state shared with the peer (docs/protocol.md 8.10): said in
        the handshake, so that a peer that restarted makes the other side start over."""
        return not self.link.touched

    def resume(self, link: ChannelLink) -> None:
        """Carry on the channels of an earlier session with the same peer."""
        link.rebind(self)
        self.link = link

    def _restart_channels(self, now: float) -> None:
        """The peer has no channel state (it restarted): start the channels over,
        sending again, in order, every reliable message it did not acknowledge."""
        unacked = self.link.unacked_messages()
        self.link = self._new_link()
        for packet_type, payload, key in unacked:
            self.link.queue(packet_type, payload, key, now)
        self.link.touched = False  # what it holds is new to the peer, not shared state
        self.channel_restarts += 1
        self._announce = True  # a new peer as far as the application is concerned
        self._flush_at = self._ack_at = self._position_ack_at = self._wake_at = None
        if unacked:  # sent once the new keys are in (the handshake pumps)
            self._dirty_sessions[self] = None

    # -- handshake, initiator side -------------------------------------------

    @property
    def initiating(self) -> bool:
        return bool(self._initiations)

    @property
    def responding(self) -> bool:
        """Answered the peer's request and waits for its first packet: a handshake
        of our own now would cross it (and, with FRESH, start its channels over)."""
        return bool(self._unconfirmed)

    def start_handshake(self, now: float) -> None:
        if self._round_started is None:
            self._round_started = now
            self._retry_interval = self._config.handshake_retry_initial
        self._send_initiation(now)

    def _send_initiation(self, now: float) -> None:
        ep = self._ep
        local_index = ep.allocate_index(self)
        handshake = InitiatorHandshake(
            ep.identity.private_key,
            self.peer,
            request_prologue(local_index),
            ephemeral_private=ep.new_ephemeral(),
            static_static=ep.static_static(self.peer),
        )
        noise = handshake.write_request(
            encode_request_payload(ep.next_timestamp(now), self.credential
                                   if self.credential is not None else ep.identity.certificate,
                                   fresh=self.fresh)
        )
        request = frame_request(local_index, noise, mac1_key(self.peer), self._valid_cookie(now))
        initiations = (*self._initiations, _Initiation(local_index, handshake, request))
        if len(initiations) > MAX_INITIATIONS:
            ep.release_index(initiations[0].local_index)
            initiations = initiations[1:]
        self._initiations = initiations
        ep.transmit(request, self.address)
        self._next_retry = now + self._retry_interval
        self._retry_interval = min(self._retry_interval * 2, self._config.handshake_retry_max)

    def _valid_cookie(self, now: float) -> bytes | None:
        if self.cookie is not None and now - self.cookie_received_at < 120.0:
            return self.cookie
        return None

    def request_for_cookie(self, index: int) -> bytes | None:
        """The request datagram sent with ``index``, if still outstanding."""
        for init in self._initiations:
            if init.local_index == index:
                return init.request
        return None

    def on_cookie(self, cookie: bytes, now: float) -> None:
        self.cookie = cookie
        self.cookie_received_at = now

    def _abandon_initiations(self) -> None:
        for init in self._initiations:
            self._ep.release_index(init.local_index)
        self._initiations = ()
        self._next_retry = None
        self._round_started = None

    def on_response(self, framed: Framed, address: Address, now: float) -> None:
        init = next((i for i in self._initiations if i.local_index == framed.index), None)
        if init is None:
            raise BadPacket(DropReason.UNEXPECTED, "response for a finished handshake")
        payload, keys = init.handshake.read_response_untrusted(framed.noise_message)
        remote_index, certificate, peer_fresh = decode_response_payload_untrusted(payload)
        if not self._ep.peer_allowed(self.peer, certificate):
            raise BadPacket(DropReason.PEER_REFUSED, "responder certificate refused")
        if peer_fresh and not self.fresh:
            self._restart_channels(now)
        self._initiations = tuple(i for i in self._initiations if i is not init)
        self._abandon_initiations()
        keypair = Keypair(
            send_key=keys.initiator_to_responder,
            receive_key=keys.responder_to_initiator,
            local_index=init.local_index,
            remote_index=remote_index,
            initiator=True,
            created=now,
            replay_window=self._config.replay_window,
        )
        self._presented = certificate
        self._authenticated_from(address, now)
        self._install(keypair, now)
        self._send_ping(now)  # confirms the keys to the responder
        self._next_ping = now + self._config.handshake_retry_initial
        self.pump(now)

    # -- handshake, responder side -------------------------------------------

    def respond(self, handshake: ResponderHandshake, remote_index: int,
                certificate: bytes | None, address: Address, now: float, *,
                peer_fresh: bool = False) -> None:
        ep = self._ep
        if self._initiations:  # lost the simultaneous-open tie-break
            self._abandon_initiations()
        if peer_fresh and not self.fresh:
            self._restart_channels(now)
        local_index = ep.allocate_index(self)
        message, keys = handshake.write_response(
            encode_response_payload(local_index, ep.identity.certificate, fresh=self.fresh),
            ephemeral_private=ep.new_ephemeral(),
        )
        keypair = Keypair(
            send_key=keys.responder_to_initiator,
            receive_key=keys.initiator_to_responder,
            local_index=local_index,
            remote_index=remote_index,
            initiator=False,
            created=now,
            replay_window=self._config.replay_window,
        )
        unconfirmed = (*self._unconfirmed, keypair)
        if len(unconfirmed) > MAX_UNCONFIRMED:
            ep.release_index(unconfirmed[0].local_index)
            unconfirmed = unconfirmed[1:]
        self._unconfirmed = unconfirmed
        self._presented = certificate
        ep.transmit(frame_response(remote_index, message, mac1_key(self.peer)), address)

    def _install(self, keypair: Keypair, now: float) -> None:
        old = self.current
        if old is not None:
            if self._previous is not None:
                self._ep.release_index(self._previous.local_index)
            self._previous = old
            self._previous_until = now + 2 * self._config.handshake_timeout
            self.counters.rekeys += 1
        self.current = keypair
        self.counters.handshakes += 1
        if not self.established or self._announce:
            # first keys, or the first of a restarted peer: SessionEstablished (again)
            self.established = True
            self.known_to_app = True
            self._announce = False
            self._next_ping = now + self._ping_interval
            self._emit(SessionEstablished(self.peer, self.address, keypair.initiator,
                                             self._presented))
        self._presented = None

    # -- receiving -----------------------------------------------------------

    def _keypair_for(self, index: int) -> Keypair | None:
        current = self.current
        if current is not None and current.local_index == index:
            return current
        if self._previous is not None and self._previous.local_index == index:
            return self._previous
        for keypair in self._unconfirmed:
            if keypair.local_index == index:
                return keypair
        return None

    def receive_transport(self, index: int, data: bytes, flags: int, packet_type: int,
                          address: Address, now: float) -> None:
        # The hot path: one call per protected datagram received.
        keypair = self.current
        if keypair is None or keypair.local_index != index:
            keypair = self._keypair_for(index)
            if keypair is None:
                raise BadPacket(DropReason.UNKNOWN_SESSION, f"index {index} is not a keypair")
        plaintext = keypair.open_untrusted(data)
        # authenticated from here on
        counters = self.counters
        counters.packets_received += 1
        counters.bytes_received += len(data)
        self.last_received = now
        if address != self.address and keypair.newest:
            # roaming (and path changes: direct <-> relay) follow the newest packet
            # only, so that a straggler on the old path cannot move the session back
            self._authenticated_from(address, now)
        if keypair is not self.current:
            self._confirm(keypair, now)
        if not self._allowance.take(len(data), now):
            if self.anomalous_since is None:
                self.anomalous_since = now
            raise BadPacket(DropReason.RATE_LIMITED, "beyond the peer's allowance")
        if flags & COMPRESSION_FLAGS:
            plaintext = self._ep.decompressor.decompress_untrusted(
                flags & COMPRESSION_FLAGS, plaintext
            )
        if packet_type != _SEALED:
            if packet_type in _DATA_TYPE_IDS:
                raise BadPacket(DropReason.UNEXPECTED, "a data message outside a frame list")
            self._on_control(packet_type, plaintext, now)
            return
        on_frame = self.link.on_frame
        emit = self._emit
        peer = self.peer
        pinged = False
        try:
            for frame_type, body in decode_frames_untrusted(plaintext):
                if frame_type == _EFFECT:  # the commonest frame, handled inline
                    emit(MessageReceived(peer, _EFFECT_TYPE, body))
                    continue
                if frame_type == _PRESENCE:  # a coordinator's commonest; a daemon drops it
                    emit(MessageReceived(peer, _PRESENCE_TYPE, body))
                    continue
                if on_frame(frame_type, body, now):
                    continue
                if frame_type == _PING_ID:
                    if pinged:
                        continue  # one PONG per datagram: no amplification
                    pinged = True
                self._on_control(frame_type, body, now)
                if self.closed:
                    return
        finally:  # frames taken before a malformed one are acknowledged all the same
            link = self.link
            if self._ack_at is None and link.acks_pending():
                self._ack_at = now + self._config.ack_delay
            if self._position_ack_at is None and link.position_ack_pending:
                self._position_ack_at = now + self._config.position_ack_delay

    # -- what the link reports (LinkOwner) -------------------------------------

    def deliver(self, packet_type: int, payload: bytes) -> None:
        self._emit(MessageReceived(self.peer, _TYPE_BY_ID[packet_type], payload))

    def deliver_position(self, state: PositionState) -> None:
        self._emit(PositionReceived(self.peer, state))

    def rtt_sample(self, sample: float) -> None:
        self.ack_rtt.add_sample(sample)

    def _confirm(self, keypair: Keypair, now: float) -> None:
        if keypair not in self._unconfirmed:
            return  # the previous keypair, still open for late packets
        for other in self._unconfirmed:
            if other is not keypair:
                self._ep.release_index(other.local_index)
        self._unconfirmed = ()
        self._install(keypair, now)
        self.pump(now)

    def _authenticated_from(self, address: Address, now: float) -> None:
        if address != self.address:
            old, self.address = self.address, address
            if self.known_to_app:
                self._emit(PeerAddressChanged(self.peer, old, address))

    def _on_control(self, frame_type: int, body: bytes, now: float) -> None:
        if frame_type == PacketType.PING:
            if len(body) != _PING.size:
                raise BadPacket(DropReason.MALFORMED, "ping body")
            self.send_control(PacketType.PONG, body, now)
        elif frame_type == PacketType.PONG:
            if len(body) != _PING.size:
                raise BadPacket(DropReason.MALFORMED, "pong body")
            pings = self._pings
            if pings is not None:
                sent = pings.pop(_PING.unpack(body)[0], None)
                if sent is not None:
                    self.rtt.add_sample(now - sent)
                if not pings:
                    self._pings = None  # most of the time none is outstanding
        elif frame_type == PacketType.DISCONNECT:
            self.close(CloseReason.PEER_DISCONNECT, now, notify_peer=False)
        else:
            raise BadPacket(DropReason.UNEXPECTED, f"type 0x{frame_type:04x} in a session")

    # -- sending -------------------------------------------------------------

    def send_message(self, packet_type: int, payload: bytes, now: float,
                     key: bytes | None = None) -> None:
        """Queue one application message on its channel (``key``: the latest-value
        key of an ENVIRONMENTAL message). Raises MessageTooLarge or SendQueueFull.

        The hot path: one call per message sent. New data goes out when a
        datagram's worth is waiting, at ``flush()``, or ``coalesce_delay`` after
        the first of it was queued; before keys exist it waits in the channels.
        """
        link = self.link
        try:
            link.queue(packet_type, payload, key, now)
        except ValueError as error:
            raise MessageTooLarge(str(error)) from None
        self._dirty_sessions[self] = None
        if not self._coalesce:
            self.pump(now)
            return
        if link.new_bytes >= self._room:
            self.pump(now, full_only=True)
        if self._flush_at is None and self._keys_usable():
            self._flush_at = now + self._coalesce

    def send_position(self, state: PositionState, now: float, *, fresh: bool = False) -> None:
        """Queue this side's newest position; an unsent older one is superseded."""
        self.link.queue_position(state, fresh=fresh)
        self._dirty_sessions[self] = None
        self._data_queued(now)

    def repeat_position(self, now: float) -> bool:
        """The last position sent, once more unless the peer acknowledged it."""
        if not self.link.repeat_position():
            return False
        self._dirty_sessions[self] = None
        self._data_queued(now)
        return True

    def _data_queued(self, now: float) -> None:
        if not self._coalesce:
            self.pump(now)
            return
        if self.link.new_bytes >= self._room:
            self.pump(now, full_only=True)
        if self._flush_at is None and self._keys_usable():
            self._flush_at = now + self._coalesce

    def send_control(self, packet_type: int, body: bytes, now: float) -> None:
        """PING, PONG, DISCONNECT or PRESENCE: sent at once (unreliably), with
        whatever data is waiting."""
        self.link.queue_control(packet_type, body)
        self.pump(now)

    def flush(self, now: float) -> None:
        """Send what is waiting now, as far as the budgets allow."""
        self.pump(now)

    def _keys_usable(self) -> bool:
        keypair = self.current
        return (keypair is not None and self.established
                and keypair.send_counter < self._reject_after)

    def pump(self, now: float, *, full_only: bool = False) -> None:
        """Fill and send datagrams while there is something to send and budget for it.

        ``full_only``: stop once less than a datagram of new data is waiting.
        """
        keypair = self.current
        if keypair is None or not self.established or keypair.send_counter >= self._reject_after:
            if self.established:
                self._start_rekey(now)  # the current keys are used up
            # everything waits in the channels until keys allow (then pump again)
            self._flush_at = self._ack_at = self._position_ack_at = self._wake_at = None
            return
        link = self.link
        budget = self.budget
        shared = self._shared
        pacer = self._pacer
        room = self._room
        self._wake_at = None
        while True:
            if full_only and link.new_bytes < room:
                break
            data = ((budget is None or budget.balance(now) > 0)
                    and (shared is None or shared.balance(now) > 0)
                    and pacer.balance(now) > 0)
            waiting = link.has_data(now)
            if not (data and waiting) and not (
                    link.has_control() or link.trailer_pending or self._acks_due(now)):
                # nothing to send now but acknowledgements, which can wait for company
                if waiting:
                    self._blocked(now)
                break
            frames = link.build(now, data=data)
            if frames:
                self._transmit_frames(keypair, b"".join(frames), now)
                if link.data_frames and shared is not None:
                    self.accumulated = 0.0
            if not data:  # control and acks went; the data waits for the budgets
                if waiting:
                    self._blocked(now)
                break
            if not link.data_frames or not self._keys_usable() or not link.has_data(now):
                break
        if not full_only:
            self._flush_at = None
        if not link.acks_pending():
            self._ack_at = None
        if not link.position_ack_pending:
            self._position_ack_at = None

    def _acks_due(self, now: float) -> bool:
        ack_at, position_ack_at = self._ack_at, self._position_ack_at
        return ((ack_at is not None and now >= ack_at)
                or (position_ack_at is not None and now >= position_ack_at))

    def _blocked(self, now: float) -> None:
        """Data waits for a budget: wake when it allows data again."""
        self.budget_blocked += 1
        self.last_blocked = now
        wait = self._pacer.time_until_positive(now)
        if self.budget is not None:
            wait = max(wait, self.budget.time_until_positive(now))
        if self._shared is not None:
            wait = max(wait, self._shared.time_until_positive(now))
            self.accumulated += self.priority
        self._wake_at = now + max(wait, 0.001)

    def _transmit_frames(self, keypair: Keypair, body: bytes, now: float) -> None:
        """A frame list as one SEALED datagram: compressed, or padded at level high."""
        cflag = 0
        if len(body) >= self._compression_threshold:
            cflag, body = self._compress(body)
        if not cflag and self._high:
            padding = _PADDING[len(body) % PAD_STEP]
            if len(body) + len(padding) <= MAX_PLAINTEXT:
                body += padding
        datagram = keypair.seal(_SEALED_FLAGS | cflag, _SEALED, body)
        counters = self.counters
        counters.packets_sent += 1
        size = len(datagram)
        counters.bytes_sent += size
        self._pacer.spend(1, now)
        if self.budget is not None:
            self.budget.spend(size, now)
        if self._shared is not None:
            self._shared.spend(size, now)
        self._output((datagram, self.address))
        if keypair.send_counter == self._rekey_after:
            self._start_rekey(now)

    def quality_factor(self, now: float) -> float:
        """Adaptive quality (spec 3.3) from this link's budget, loss and RTT."""
        sends, retransmissions = self.link.send_counts()
        new_sends = sends - self._loss_marks[0]
        if new_sends >= 20:
            share = (retransmissions - self._loss_marks[1]) / new_sends
            self.outbound_loss = 0.5 * self.outbound_loss + 0.5 * share
            self._loss_marks = (sends, retransmissions)
        current = self.current
        if current is not None:
            expected = current.packets_expected
            keypair, seen, opened = self._inbound_marks
            if keypair is not current:
                self._inbound_marks = (current, expected, current.opened)
            elif expected - seen >= 20:
                share = 1.0 - (current.opened - opened) / (expected - seen)
                self.inbound_loss = 0.5 * self.inbound_loss + 0.5 * max(share, 0.0)
                self._inbound_marks = (current, expected, current.opened)
        rtt = self.rtt
        quality = self._quality
        if quality is None:
            quality = self._quality = QualityController()
        return quality.update(PathSignals(
            loss=max(self.inbound_loss, self.outbound_loss),
            srtt=rtt.smoothed,
            min_rtt=rtt.min,
            budget_short=self.last_blocked is not None and now - self.last_blocked < 1.0,
        ), now)

    def rto(self) -> float:
        """Retransmission timeout (RFC 6298 2.2-2.4), within the configured bounds."""
        config = self._config
        rtt = self.ack_rtt if self.ack_rtt.samples else self.rtt
        if rtt.smoothed is None or rtt.variance is None:
            return config.rto_initial
        rto = rtt.smoothed + max(0.01, 4 * rtt.variance)
        return min(max(rto, config.rto_min), config.rto_max)

    def move_to(self, address: Address) -> None:
        """Send to ``address`` from now on (a path change decided by the mesh)."""
        self._authenticated_from(address, 0.0)

    def ping(self, now: float) -> None:
        """A PING at once (liveness check); the PONG refreshes last_received."""
        if self._keys_usable():
            self._send_ping(now)

    def probe(self, address: Address, now: float) -> None:
        """A PING alone to another ``address`` than the session's (is that path
        alive?). The peer answers on the path it then uses: the probed one, when the
        probe is the newest packet it has, so that both sides move to it."""
        keypair = self.current
        if keypair is None or not self._keys_usable():
            return
        self._remember_ping(now)
        body = FRAME_HEADER.pack(_PING_ID, _PING.size) + _PING.pack(self._ping_id)
        datagram = keypair.seal(_SEALED_FLAGS, _SEALED, body)
        self.counters.packets_sent += 1
        self.counters.bytes_sent += len(datagram)
        self._output((datagram, address))

    def _remember_ping(self, now: float) -> None:
        """A new PING id, sent at ``now``: the last MAX_PINGS are answerable."""
        self._ping_id = (self._ping_id + 1) & 0xFFFFFFFF
        pings = self._pings
        if pings is None:
            pings = self._pings = {}
        pings[self._ping_id] = now
        if len(pings) > MAX_PINGS:
            del pings[next(iter(pings))]

    def _send_ping(self, now: float) -> None:
        self._remember_ping(now)
        self.send_control(PacketType.PING, _PING.pack(self._ping_id), now)

    def _rekey_after_time(self, keypair: Keypair) -> float:
        """The side that started the keys renews them; the other side steps in a
        little later, so that peers with different settings still rekey in time."""
        ep = self._ep
        return ep.rekey_after_time if keypair.initiator else ep.responder_rekey_after_time

    def _start_rekey(self, now: float) -> None:
        if not self._initiations:
            self.start_handshake(now)

    # -- timers --------------------------------------------------------------

    def deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` has something to do (None: nothing).
        Called for every session touched since the endpoint last looked: kept to
        comparisons, without building a list."""
        if self.closed:
            return None
        config = self._config
        best = self._next_retry
        if not self.established:
            time = self._first_contact + config.handshake_timeout
            if best is None or time < best:
                best = time
        for keypair in self._unconfirmed:
            time = keypair.created + config.handshake_timeout
            if best is None or time < best:
                best = time
        if self._previous is not None and (best is None or self._previous_until < best):
            best = self._previous_until
        current = self.current
        if current is None or not self.established:
            return best
        if current.send_counter < self._reject_after:  # keys usable
            wake = self._wake_at
            if wake is not None:  # data waits for the send budget
                if best is None or wake < best:
                    best = wake
            else:
                flush = self._flush_at
                if flush is not None and (best is None or flush < best):
                    best = flush
                retransmission = self.link.next_retransmission()
                if retransmission is not None and (best is None or retransmission < best):
                    best = retransmission
            ack = self._ack_at
            if ack is not None and (best is None or ack < best):
                best = ack
            ack = self._position_ack_at
            if ack is not None and (best is None or ack < best):
                best = ack
        ep = self._ep
        time = self.last_received + config.inactive_timeout
        if best is None or time < best:
            best = time
        created = current.created
        time = created + ep.reject_after_time
        if time < best:  # noqa: PLR1730 (min() is a slower call here)
            best = time
        if not self._initiations:
            time = created + (ep.rekey_after_time if current.initiator
                              else ep.responder_rekey_after_time)
            if time < best:  # noqa: PLR1730 (min() is a slower call here)
                best = time
            if current.initiator and not current.received_any:
                time = created + config.handshake_timeout
                if time < best:  # noqa: PLR1730 (min() is a slower call here)
                    best = time
        ping = self._next_ping
        if ping is not None and ping < best:
            best = ping
        return best

    def _send_due(self, now: float) -> bool:
        for time in (self._flush_at, self._ack_at, self._position_ack_at):
            if time is not None and now >= time:
                return True
        if self._wake_at is not None:
            return now >= self._wake_at
        retransmission = self.link.next_retransmission()
        return retransmission is not None and now >= retransmission

    def on_timer(self, now: float) -> None:
        config = self._config
        if self._keys_usable() and self._send_due(now):
            self.pump(now)
        if not self.established and now >= self._first_contact + config.handshake_timeout:
            self.close(CloseReason.HANDSHAKE_TIMEOUT, now, notify_peer=False)
            return
        if self._unconfirmed:
            expired = [k for k in self._unconfirmed if now >= k.created + config.handshake_timeout]
            if expired:
                self._unconfirmed = tuple(k for k in self._unconfirmed if k not in expired)
            for keypair in expired:
                self._ep.release_index(keypair.local_index)
        if self._previous is not None and now >= self._previous_until:
            self._ep.release_index(self._previous.local_index)
            self._previous = None
        current = self.current
        if self.established and current is not None:
            if now >= self.last_received + config.inactive_timeout:
                self.close(CloseReason.INACTIVE, now, notify_peer=True)
                return
            if now >= current.created + self._ep.reject_after_time:
                self.close(CloseReason.REKEY_FAILED, now, notify_peer=False)
                return
            if not self._initiations and (
                now >= current.created + self._rekey_after_time(current)
                or (current.initiator and not current.received_any
                    and now >= current.created + config.handshake_timeout)
            ):
                # time to rekey, or the responder never confirmed: handshake anew
                self.start_handshake(now)
            if self._next_ping is not None and now >= self._next_ping:
                self._send_ping(now)
                self._next_ping = now + (
                    self._ping_interval if current.received_any
                    else config.handshake_retry_initial
                )
        if self._next_retry is not None and now >= self._next_retry:
            self._send_initiation(now)

    # -- closing and statistics ----------------------------------------------

    def close(self, reason: CloseReason, now: float, *, notify_peer: bool) -> None:
        if self.closed:
            return
        if notify_peer and self.current is not None:
            # after what waits, as far as the budget lets it go now
            self.link.queue_control(PacketType.DISCONNECT, b"", last=True)
            self.pump(now)
            current = self.current
            if self.link.trailer_pending and current is not None and self._keys_usable():
                self._transmit_frames(current, b"".join(self.link.build(now, data=False)), now)
        self.closed = True
        self._flush_at = self._ack_at = self._position_ack_at = self._wake_at = None
        self._abandon_initiations()
        for keypair in (self.current, self._previous, *self._unconfirmed):
            if keypair is not None:
                self._ep.release_index(keypair.local_index)
        self._ep.forget(self, now)
        if self.known_to_app:
            self._emit(SessionClosed(self.peer, reason))

    def statistics(self) -> SessionStatistics:
        c = self.counters
        return SessionStatistics(
            peer=self.peer,
            address=self.address,
            established=self.established,
            packets_sent=c.packets_sent,
            bytes_sent=c.bytes_sent,
            packets_received=c.packets_received,
            bytes_received=c.bytes_received,
            handshakes=c.handshakes,
            rekeys=c.rekeys,
            queued=self.link.pending_bytes(),
            rtt=self.rtt.snapshot(),
            drops=dict(c.drops) if c.drops is not None else {},
            inbound_loss=self.current.inbound_loss if self.current is not None else 0.0,
            anomalous=self.anomalous_since is not None,
            channels=self.link.counters(),
            budget_waits=self.budget_blocked,
            quality=self._quality.factor if self._quality is not None else LEVELS[0],
        )
