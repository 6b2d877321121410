"""The sans-IO endpoint: every session of one UDP socket, and the door for its bytes.

Driven like aioquic's QuicConnection, with no socket and no clock inside::

    endpoint.receive_datagram(data, address, now)   # bytes in
    endpoint.handle_timer(now)                      # when get_timer() is due
    endpoint.datagrams_to_send(now)                 # bytes out
    endpoint.next_event()                           # what happened
    endpoint.get_timer()                            # next deadline

``receive_datagram`` never raises for anything a remote sends: every bad
datagram is dropped and counted by reason. Local misuse (an unknown peer, an
oversized message) raises :class:`SessionError` or :class:`MessageTooLarge`.
"""

from __future__ import annotations

import heapq
import itertools
import os
import struct
from collections import OrderedDict, deque
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from p2pd.channels.link import ChannelLink
from p2pd.channels.position_codec import PositionState
from p2pd.crypto.handshake import (
    COOKIE_NONCE_SIZE,
    REQUEST_MIN_SIZE,
    RESPONSE_MIN_SIZE,
    CookieJar,
    build_cookie_reply,
    cookie_reply_index,
    decode_request_payload_untrusted,
    open_cookie_reply_untrusted,
    request_prologue,
    unframe_untrusted,
)
from p2pd.crypto.handshake import mac1_key as make_mac1_key
from p2pd.crypto.identity import Identity
from p2pd.crypto.noise import ResponderHandshake
from p2pd.crypto.transport import OVERHEAD
from p2pd.meters import ByteBudget, budget_for_limit
from p2pd.session.config import SessionConfig
from p2pd.session.events import Address, CloseReason, Event
from p2pd.session.session import MessageTooLarge, SendQueueFull, Session
from p2pd.session.stats import EndpointStatistics, SessionStatistics
from p2pd.wire.compression import PayloadCompressor, PayloadDecompressor
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.header import HEADER_SIZE, parse_header_untrusted
from p2pd.wire.types import COORDINATOR_TYPES, DATA_TYPES, Flag, PacketType

PeerPolicy = Callable[[bytes, bytes | None], bool]
"""Decides whether a peer (static public key, certificate) may hold a session."""
Admission = Callable[[bytes, bytes | None, Address], bool]
"""Decides whether a handshake request (static key, certificate, source address)
gets an answer: a responder's check before any session state exists."""

MAX_REMEMBERED_PEERS = 4096  # handshake timestamps and static-static secrets kept
_INDEX = struct.Struct(">I")
_ENCRYPTED = int(Flag.ENCRYPTED)
_MESSAGE_TYPE_IDS = (frozenset(int(t) for t in DATA_TYPES | COORDINATOR_TYPES)
                     - {int(PacketType.POSITION_UPDATE)})
_ENVIRONMENTAL = int(PacketType.ENVIRONMENTAL)
_PRESENCE = int(PacketType.PRESENCE)
_REQUEST = int(PacketType.HANDSHAKE_REQUEST)
_RESPONSE = int(PacketType.HANDSHAKE_RESPONSE)
_COOKIE_REPLY = int(PacketType.COOKIE_REPLY)
_EFFECT = int(PacketType.VISUAL_EFFECT)
MAX_PARKED = 64  # closed sessions whose channels wait for a successor

__all__ = ["Admission", "Endpoint", "MessageTooLarge", "PeerPolicy", "SendQueueFull",
           "SessionError"]


class SessionError(Exception):
    """Local misuse of the endpoint API, such as sending to a peer with no session."""


class _BoundedMap(OrderedDict[bytes, bytes | int]):
    """Least-recently-used map with a fixed capacity."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._capacity = capacity

    def put(self, key: bytes, value: bytes | int) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self._capacity:
            self.popitem(last=False)


class Endpoint:
    def __init__(
        self,
        identity: Identity,
        config: SessionConfig | None = None,
        *,
        peer_policy: PeerPolicy | None = None,
        admission: Admission | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch: float = 0.0,
    ) -> None:
        """``epoch`` maps ``now`` to wall-clock seconds for handshake timestamps:
        the shell passes ``time.time() - <its monotonic clock>``; tests pass 0."""
        self.config = config or SessionConfig()
        self.identity = identity
        self._policy = peer_policy
        self._admission = admission
        self._random = random_bytes
        self._epoch = epoch
        self._mac1_key = make_mac1_key(identity.public_key)
        self.compressor = PayloadCompressor(
            self.config.compression_threshold, self.config.zstd_threshold
        )
        self.compress = self.compressor.compress  # bound once, for every session
        # the configuration's derived times, computed once for every session's timers
        self.rekey_after_time = self.config.rekey_after_time
        self.responder_rekey_after_time = self.rekey_after_time + self.config.handshake_timeout
        self.reject_after_time = self.config.reject_after_time
        self.compression_threshold = self.config.compression_threshold
        self.decompressor = PayloadDecompressor(self.config.max_message_size)
        self.shared_budget: ByteBudget | None = (
            budget_for_limit(self.config.total_send_rate, self.config.batch_budget, 0.0)
            if self.config.total_send_rate is not None else None
        )
        self._sessions: dict[bytes, Session] = {}
        # peer -> (channels of its closed session, until when they wait for a successor)
        self._parked: OrderedDict[bytes, tuple[ChannelLink, float]] = OrderedDict()
        self.resumed = 0  # sessions that carried on an earlier one's channels
        # Sessions given data since the last flush(), and sessions touched since the
        # timers were last looked at: dicts, not sets, so that the order (and with
        # it every run) does not depend on object addresses.
        self.dirty_sessions: dict[Session, None] = {}  # sessions add themselves
        # Timers: a heap of (deadline, n, session), refreshed only for the sessions
        # touched since (each call into a session may move its deadline); entries
        # whose deadline is no longer the session's are stale and skipped.
        self._touched: dict[Session, None] = {}
        self._timers: list[tuple[float, int, Session]] = []
        self._timer_order = itertools.count()
        self._indexes: dict[int, Session] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        self.output = self._outgoing.append  # for sessions: queue one datagram
        self.emit = self._events.append  # for sessions: report one event
        self._timestamps = _BoundedMap(MAX_REMEMBERED_PEERS)  # peer -> last request time
        self._static_static = _BoundedMap(MAX_REMEMBERED_PEERS)  # peer -> DH(s, rs)
        self._last_timestamp = 0
        self._cookies = CookieJar(random_bytes(32))
        self._load_second = -1
        self._load_count = 0
        # counters
        self._datagrams_received = 0
        self._bytes_received = 0
        self._datagrams_sent = 0
        self._bytes_sent = 0
        self._handshake_requests = 0
        self._cookie_replies = 0
        self._collisions = 0
        # told of the source of a peer's handshake request that the simultaneous-open
        # tie-break leaves unanswered (NAT traversal learns a path from it)
        self.on_collision: Callable[[bytes, Address], None] | None = None
        self._drops: dict[str, int] = {}

    # -- the application's calls ---------------------------------------------

    def connect(self, peer: bytes, address: Address, now: float, *,
                credential: bytes | None = None) -> None:
        """Open a session to ``peer`` (its static public key) at ``address``.
        ``credential``: what to present in this session's handshakes instead of the
        endpoint's certificate (a connect token, to a coordinator)."""
        if len(peer) != 32:
            raise SessionError(f"a peer key has 32 bytes, got {len(peer)}")
        if peer == self.identity.public_key:
            raise SessionError("cannot open a session to this endpoint's own key")
        session = self._sessions.get(peer)
        if session is not None:
            session.known_to_app = True
            if credential is not None:
                session.credential = credential
            if not session.established and not session.initiating and not session.responding:
                session.address = address
                session.start_handshake(now)
                self._touched[session] = None
            return
        if len(self._sessions) >= self.config.max_sessions:
            raise SessionError(f"already holding max_sessions={self.config.max_sessions} sessions")
        session = Session(self, peer, address, now)
        session.known_to_app = True
        session.credential = credential
        self._sessions[peer] = session
        self._resume(session, now)
        session.start_handshake(now)
        self._touched[session] = None

    def set_peer_policy(self, policy: PeerPolicy | None) -> None:
        """Decide with ``policy`` which peers may hold a session from now on (a
        daemon learns its coordinator's signing key only when it registers)."""
        self._policy = policy

    def set_certificate(self, certificate: bytes | None) -> None:
        """Present ``certificate`` in every handshake from now on (a daemon's, once
        its coordinator issued it; sessions that stand keep their keys)."""
        self.identity = self.identity.with_certificate(certificate)

    def send(self, peer: bytes, packet_type: PacketType, payload: bytes, now: float,
             key: bytes | None = None) -> None:
        """Queue one application message for ``peer`` on the channel of its type:
        VISUAL_EFFECT unreliable; CHAT_MESSAGE and AI_INTERACTION reliable and
        ordered; ENVIRONMENTAL reliable latest-value, under ``key`` (1-64 bytes:
        a newer message with the same key supersedes an older one).

        Raises SessionError (no such peer, wrong type), MessageTooLarge, or
        SendQueueFull when the channel already holds max_queued_bytes unsent.
        """
        if packet_type not in _MESSAGE_TYPE_IDS:
            raise SessionError(f"{packet_type!r} is not an application message type"
                               " (positions go through send_position)")
        if (key is not None or packet_type == _ENVIRONMENTAL) and (
                key is None or packet_type != _ENVIRONMENTAL):
            raise SessionError("ENVIRONMENTAL messages, and only they, need a key")
        session = self._sessions.get(peer)
        if session is None:
            raise SessionError(f"no session with peer {peer.hex()[:16]}")
        session.send_message(packet_type, payload, now, key)
        self._touched[session] = None

    def hold(self, peer: bytes, packet_type: PacketType, payload: bytes, now: float,
             key: bytes | None = None) -> None:
        """Queue a reliable message for ``peer``, whose session closed lately, in
        the channels kept for its successor (docs/protocol.md 8.10). Raises as
        :meth:`send` does, and SessionError when none are kept (any more)."""
        if packet_type not in _MESSAGE_TYPE_IDS or packet_type == _EFFECT:
            raise SessionError(f"{packet_type!r} is not a reliable message type")
        if (key is not None) != (packet_type == _ENVIRONMENTAL):
            raise SessionError("ENVIRONMENTAL messages, and only they, need a key")
        if not self.parked(peer, now):
            raise SessionError(f"no channels kept for peer {peer.hex()[:16]}")
        try:
            self._parked[peer][0].queue(packet_type, payload, key, now)
        except ValueError as error:
            raise MessageTooLarge(str(error)) from None

    def check_send(self, peer: bytes, packet_type: PacketType, payload: bytes,
                   key: bytes | None = None) -> None:
        """Raise what :meth:`send` (or :meth:`hold`, for a peer whose session closed
        lately) would raise for this message, queueing nothing."""
        if packet_type not in _MESSAGE_TYPE_IDS:
            raise SessionError(f"{packet_type!r} is not an application message type")
        session = self._sessions.get(peer)
        parked = self._parked.get(peer)
        if session is not None:
            link = session.link
        elif parked is not None and packet_type != _EFFECT:
            link = parked[0]
        else:
            raise SessionError(f"no session with peer {peer.hex()[:16]}")
        try:
            link.check(packet_type, payload, key)
        except SendQueueFull:
            raise
        except ValueError as error:
            raise MessageTooLarge(str(error)) from None

    def send_presence(self, peer: bytes, body: bytes, now: float) -> None:
        """Send a PRESENCE frame (a daemon's report to its coordinator, body as
        p2pd.coordinator.messages.encode_presence makes it) at once, unreliably."""
        session = self._session(peer)
        session.send_control(_PRESENCE, body, now)
        self._touched[session] = None

    def send_position(self, peer: bytes, state: PositionState, now: float, *,
                      fresh: bool = False) -> None:
        """Queue this side's newest position for ``peer`` (unreliable, sequenced,
        delta-coded against the last position the peer acknowledged); ``fresh``:
        even one the peer has (it dropped it), which is otherwise left out."""
        session = self._session(peer)
        session.send_position(state, now, fresh=fresh)
        self._touched[session] = None

    def repeat_position(self, peer: bytes, now: float) -> bool:
        """Send the last position sent to ``peer`` once more, unless it acknowledged
        it or a newer one waits (redundancy for a stop or a turn); True when queued."""
        session = self._session(peer)
        if not session.repeat_position(now):
            return False
        self._touched[session] = None
        return True

    def set_priority(self, peer: bytes, weight: float) -> None:
        """How much ``peer`` matters when the shared budget is short (nearer
        peers higher); waiting sessions accumulate it, so all get through."""
        if not weight > 0:
            raise SessionError(f"a priority weight must be positive, got {weight!r}")
        self._session(peer).priority = weight

    def quality(self, peer: bytes, now: float) -> float:
        """The adaptive quality factor (0.3-1.0) for ``peer``'s position and effect
        rates: lowered when the link is short of budget or its path degrades."""
        return self._session(peer).quality_factor(now)

    def _session(self, peer: bytes) -> Session:
        session = self._sessions.get(peer)
        if session is None:
            raise SessionError(f"no session with peer {peer.hex()[:16]}")
        return session

    def flush(self, now: float) -> None:
        """Send the data queued since the last flush, now (a driver calls this after
        each input burst); with a shared budget, in priority order. Only sessions
        that were given data are visited: an endpoint with thousands of idle
        sessions (a coordinator) pays nothing for them."""
        if not self.dirty_sessions:
            return
        dirty = list(self.dirty_sessions)
        self.dirty_sessions.clear()
        self._touched.update(dict.fromkeys(dirty))
        for session in self._by_priority(dirty):
            if session.established and not session.closed:
                session.flush(now)

    def _by_priority(self, sessions: list[Session]) -> list[Session]:
        """Reliable data first, then positions, then effects; within a class the
        session that accumulated the most priority while it waited."""
        if self.shared_budget is None or len(sessions) < 2:
            return sessions
        return sorted(sessions, key=lambda s: (s.link.data_class(), -s.accumulated))

    def close(self, peer: bytes, now: float) -> None:
        """Close the session with ``peer`` gracefully (DISCONNECT)."""
        session = self._sessions.get(peer)
        if session is not None:
            session.close(CloseReason.LOCAL, now, notify_peer=True)
            self._touched[session] = None

    def close_all(self, now: float) -> None:
        for session in list(self._sessions.values()):
            session.close(CloseReason.LOCAL, now, notify_peer=True)
            self._touched[session] = None

    # -- the driver's calls --------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self._datagrams_received += 1
        self._bytes_received += len(data)
        try:
            flags, packet_type = parse_header_untrusted(data)
            if flags & _ENCRYPTED:
                if len(data) < OVERHEAD:
                    raise BadPacket(DropReason.TRUNCATED, "protected packet too short")
                (index,) = _INDEX.unpack_from(data, HEADER_SIZE)
                session = self._indexes.get(index)
                if session is None:
                    raise BadPacket(DropReason.UNKNOWN_SESSION, f"index {index}")
                self._touched[session] = None
                try:
                    session.receive_transport(index, data, flags, packet_type, address, now)
                except BadPacket as error:
                    session.counters.drop(error.reason)
                    raise
            elif packet_type == _REQUEST:
                self._on_request(data, address, now)
            elif packet_type == _RESPONSE:
                self._on_response(data, address, now)
            elif packet_type == _COOKIE_REPLY:
                self._on_cookie_reply(data, now)
            else:  # a RELAY: only the coordinator and the daemon's node take those
                raise BadPacket(DropReason.UNEXPECTED, f"type 0x{packet_type:04x} here")
        except BadPacket as error:
            self.count_drop(error.reason)

    def handle_timer(self, now: float) -> None:
        self._refresh_timers()
        timers = self._timers
        due: list[Session] = []
        while timers and timers[0][0] <= now:
            deadline, _, session = heapq.heappop(timers)
            if session.timer_deadline == deadline and not session.closed and session not in due:
                due.append(session)
        for session in self._by_priority(due):
            session.timer_deadline = None  # its entry is gone: the refresh pushes a new one
            session.on_timer(now)
        self._touched.update(dict.fromkeys(due))

    def get_timer(self) -> float | None:
        self._refresh_timers()
        timers = self._timers
        while timers:
            deadline, _, session = timers[0]
            if session.timer_deadline == deadline and not session.closed:
                return deadline
            heapq.heappop(timers)  # stale: the session's deadline moved or it closed
        return None

    def _refresh_timers(self) -> None:
        touched = self._touched
        if not touched:
            return
        timers = self._timers
        order = self._timer_order
        for session in touched:
            deadline = None if session.closed else session.deadline()
            if deadline != session.timer_deadline:
                session.timer_deadline = deadline
                if deadline is not None:
                    heapq.heappush(timers, (deadline, next(order), session))
        touched.clear()
        if len(timers) > 4 * len(self._sessions) + 1024:  # too many stale entries: rebuild
            self._timers = [(s.timer_deadline, next(order), s) for s in self._sessions.values()
                            if s.timer_deadline is not None and not s.closed]
            heapq.heapify(self._timers)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self._outgoing[:]
        self._outgoing.clear()
        self._datagrams_sent += len(out)
        for datagram, _ in out:
            self._bytes_sent += len(datagram)
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- handshakes ----------------------------------------------------------

    def _on_request(self, data: bytes, address: Address, now: float) -> None:
        self._handshake_requests += 1
        framed = unframe_untrusted(data, self._mac1_key, REQUEST_MIN_SIZE)
        if self._under_load(now) and not self._cookies.accepts(framed, address):
            nonce = self._random(COOKIE_NONCE_SIZE)
            reply = build_cookie_reply(framed.index, self._cookies.cookie_for(address),
                                       framed.mac1, self.identity.public_key, nonce)
            self._cookie_replies += 1
            self.transmit(reply, address)
            return
        handshake = ResponderHandshake.read_request_untrusted(
            self.identity.private_key,
            framed.noise_message,
            request_prologue(framed.index),
            static_static_cache=self._cached_static_static,
        )
        peer = handshake.remote_static
        if peer == self.identity.public_key:
            raise BadPacket(DropReason.PEER_REFUSED, "request from our own key")
        timestamp, certificate, peer_fresh = decode_request_payload_untrusted(handshake.payload)
        if not self.peer_allowed(peer, certificate) or (
                self._admission is not None and not self._admission(peer, certificate, address)):
            raise BadPacket(DropReason.PEER_REFUSED, "initiator refused by policy")
        last = self._timestamps.get(peer)
        if isinstance(last, int) and timestamp <= last:
            raise BadPacket(DropReason.HANDSHAKE_REPLAYED, f"timestamp {timestamp} <= {last}")
        self._timestamps.put(peer, timestamp)
        self._static_static.put(peer, handshake.static_static)
        session = self._sessions.get(peer)
        if session is None:
            if len(self._sessions) >= self.config.max_sessions:
                raise BadPacket(DropReason.QUEUE_FULL, "max_sessions reached")
            session = Session(self, peer, address, now)
            self._sessions[peer] = session
            self._resume(session, now)
        elif session.initiating and self.identity.public_key < peer:
            # Simultaneous open: the lower static key keeps the initiator role;
            # the peer will answer our request instead.
            self._collisions += 1
            if self.on_collision is not None:
                self.on_collision(peer, address)
            return
        session.respond(handshake, framed.index, certificate, address, now,
                        peer_fresh=peer_fresh)
        self._touched[session] = None

    def _on_response(self, data: bytes, address: Address, now: float) -> None:
        framed = unframe_untrusted(data, self._mac1_key, RESPONSE_MIN_SIZE)
        session = self._indexes.get(framed.index)
        if session is None:
            raise BadPacket(DropReason.UNKNOWN_SESSION, f"response to index {framed.index}")
        self._touched[session] = None
        try:
            session.on_response(framed, address, now)
        except BadPacket as error:
            session.counters.drop(error.reason)
            raise

    def _on_cookie_reply(self, data: bytes, now: float) -> None:
        if len(data) < HEADER_SIZE + 4:
            raise BadPacket(DropReason.TRUNCATED, "cookie reply")
        index = cookie_reply_index(data)
        session = self._indexes.get(index)
        request = session.request_for_cookie(index) if session is not None else None
        if session is None or request is None:
            raise BadPacket(DropReason.UNKNOWN_SESSION, f"cookie reply to index {index}")
        mac1 = request[-32:-16]
        session.on_cookie(open_cookie_reply_untrusted(data, mac1, session.peer), now)
        self._touched[session] = None

    def _under_load(self, now: float) -> bool:
        second = int(now)
        if second != self._load_second:
            self._load_second = second
            self._load_count = 0
            self._cookies.rotate(now, self._random(32))
        self._load_count += 1
        return self._load_count > self.config.handshake_load_limit

    def _cached_static_static(self, peer: bytes) -> bytes | None:
        value = self._static_static.get(peer)
        return value if isinstance(value, bytes) else None

    # -- services for sessions -----------------------------------------------

    def peer_allowed(self, peer: bytes, certificate: bytes | None) -> bool:
        return self._policy is None or self._policy(peer, certificate)

    def static_static(self, peer: bytes) -> bytes:
        cached = self._cached_static_static(peer)
        if cached is None:
            cached = self.identity.private_key.exchange(X25519PublicKey.from_public_bytes(peer))
            self._static_static.put(peer, cached)
        return cached

    def new_ephemeral(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self._random(32))

    def next_timestamp(self, now: float) -> int:
        stamp = max(int((self._epoch + now) * 1e9), self._last_timestamp + 1)
        self._last_timestamp = stamp
        return stamp

    def allocate_index(self, session: Session) -> int:
        while True:
            (index,) = _INDEX.unpack(self._random(4))
            if index not in self._indexes:
                self._indexes[index] = session
                return int(index)

    def release_index(self, index: int) -> None:
        self._indexes.pop(index, None)

    def transmit(self, datagram: bytes, address: Address) -> None:
        self._outgoing.append((datagram, address))

    def forget(self, session: Session, now: float) -> None:
        if self._sessions.get(session.peer) is session:
            del self._sessions[session.peer]
            window = self.config.resume_window
            if not session.fresh and window > 0:  # keep its channels for a successor
                parked = self._parked
                parked.pop(session.peer, None)
                parked[session.peer] = (session.link, now + window)
                while len(parked) > MAX_PARKED:
                    parked.popitem(last=False)

    def _resume(self, session: Session, now: float) -> None:
        """A new session with a peer whose last one closed lately carries on its
        channels: nothing queued or unacknowledged is lost, nothing delivered twice."""
        entry = self._parked.pop(session.peer, None)
        if entry is not None and now < entry[1]:
            session.resume(entry[0])
            self.resumed += 1

    def parked(self, peer: bytes, now: float) -> bool:
        """Whether the channels of a closed session with ``peer`` wait for a successor."""
        entry = self._parked.get(peer)
        if entry is not None and now >= entry[1]:
            del self._parked[peer]
            return False
        return entry is not None

    def count_drop(self, reason: DropReason) -> None:
        self._drops[reason.value] = self._drops.get(reason.value, 0) + 1

    # -- statistics ----------------------------------------------------------

    def peers(self) -> list[bytes]:
        return [peer for peer, s in self._sessions.items() if s.established]

    # -- paths (the mesh's liveness checks and relay fallback) ----------------

    def address_of(self, peer: bytes) -> Address:
        return self._session(peer).address

    def last_received(self, peer: bytes) -> float:
        """When the peer's newest authenticated packet arrived."""
        return self._session(peer).last_received

    def established(self, peer: bytes) -> bool:
        session = self._sessions.get(peer)
        return session is not None and session.established

    def move(self, peer: bytes, address: Address, now: float) -> None:
        """Send to the peer at ``address`` from now on (say hello there at once)."""
        session = self._session(peer)
        session.move_to(address)
        session.ping(now)
        self._touched[session] = None

    def ping(self, peer: bytes, now: float) -> None:
        session = self._session(peer)
        session.ping(now)
        self._touched[session] = None

    def probe(self, peer: bytes, address: Address, now: float) -> None:
        """Check another path to the peer without leaving the current one."""
        self._session(peer).probe(address, now)

    def session_statistics(self, peer: bytes) -> SessionStatistics:
        session = self._sessions.get(peer)
        if session is None:
            raise SessionError(f"no session with peer {peer.hex()[:16]}")
        return session.statistics()

    def rtt_samples(self, peer: bytes) -> list[float]:
        """Recent round-trip samples of the session with ``peer``, in seconds."""
        session = self._sessions.get(peer)
        return session.rtt.recent() if session is not None else []

    def statistics(self) -> EndpointStatistics:
        return EndpointStatistics(
            datagrams_received=self._datagrams_received,
            bytes_received=self._bytes_received,
            datagrams_sent=self._datagrams_sent,
            bytes_sent=self._bytes_sent,
            sessions=len(self._sessions),
            handshake_requests=self._handshake_requests,
            cookie_replies=self._cookie_replies,
            collisions=self._collisions,
            drops=dict(self._drops),
        )
