"""One coordinator and thousands of daemon endpoints wired by hand, for bench/coordinator.py.

No network and no clock: the driver hands every datagram straight to its
receiver (zero delay, no loss) with a virtual ``now`` that it advances itself.
Every daemon is a real :class:`~p2pd.session.endpoint.Endpoint` with a seeded
identity and a connect token, so registration runs the real handshake, token
checks and certificate signing, and every presence report is a real sealed
datagram.

Only the calls into the coordinator (:meth:`CoordinatorWorld.feed`: what
its server does per burst of datagrams, ``handle_timer`` when its deadline
has passed, ``receive_datagram`` for each datagram, draining its events,
``datagrams_to_send`` once and ``get_timer`` to re-arm) are timed, in CPU
seconds of this process (:data:`clock`), into ``receive_s`` and ``send_s``.
The daemons' side runs between bursts, outside the clock: building their
datagrams, taking the coordinator's answers, and running each daemon's own
timer when its deadline comes (``handle_timer``: acknowledgements
``ack_delay`` after data, retransmissions, PINGs), so that the coordinator
sees what real daemons send: a closed loop in which nothing is retransmitted
that real daemons would have acknowledged, and no acknowledgement is missing
that real daemons would have sent.
"""

from __future__ import annotations

import cProfile
import hashlib
import heapq
import itertools
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pd.coordinator.core import Coordinator
from p2pd.coordinator.credentials import mint_token
from p2pd.coordinator.messages import Presence, encode_presence
from p2pd.crypto.identity import Identity
from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import Address, MessageReceived

WALL = 1_800_000_000.0  # the virtual wall clock (tokens, certificates) at now = 0
COORDINATOR_ADDRESS: Address = ("10.0.0.1", 7300)
ACK_DELAY = SessionConfig().ack_delay  # a daemon acknowledges reliable data this much later
TIMER_STEP = 0.005  # seconds between the coordinator's calls while only timers run (advance)
# The coordinator's time is this process's CPU time: one core's work, which other
# processes on the machine neither add to nor take from (as wall time would).
clock = time.process_time
TOKEN_LIFETIME = 3600.0
_FIRST_HOST = struct.unpack(">I", socket.inet_aton("10.1.0.0"))[0]

Datagrams = list[tuple[bytes, Address]]
# one presence report of a stream: (virtual time, daemon number, map, x, y)
Report = tuple[float, int, str, int, int]


def socket_address(packed: bytes, port: int) -> Address:
    """A fresh (host, port), as a socket's recvfrom returns one with every datagram."""
    return (socket.inet_ntoa(packed), port)


@dataclass(eq=False, slots=True)
class Daemon:
    number: int  # its index in CoordinatorWorld.daemons
    endpoint: Endpoint
    packed: bytes  # its IPv4 address, packed
    port: int
    timer: float | None = None  # its endpoint's deadline, as the world's timer heap holds it
    presence_seq: int = 0  # its last presence report's number


class VirtualClock:
    """The coordinator's wall clock: WALL plus the ``now`` of the call it is in."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return WALL + self.now


def build_coordinator(seed: int, capacity: int, handshakes_per_second: int,
                      clock: VirtualClock) -> tuple[Coordinator, Ed25519PrivateKey, random.Random]:
    """The coordinator of world ``seed`` (the same bytes every time: a replay of the
    same datagrams makes the same state), its tokens' issuer, and the seeded
    generator for the rest of the world."""
    rng = random.Random(seed)
    issuer = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    signing = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    # A coordinator holds a session per daemon (the default max_sessions, 256,
    # is a daemon's) and takes registrations at this rate without cookies.
    config = SessionConfig(max_sessions=capacity, handshake_load_limit=handshakes_per_second)
    coordinator = Coordinator(
        Identity.from_private_bytes(rng.randbytes(32)), signing, [issuer.public_key()],
        session_config=config, clock=clock, random_bytes=random.Random(rng.random()).randbytes)
    return coordinator, issuer, rng


class CoordinatorWorld:
    """A :class:`Coordinator` configured for ``capacity`` daemons, and its daemons."""

    def __init__(self, capacity: int, seed: int, *, handshakes_per_second: int) -> None:
        self._clock = VirtualClock()
        self.coordinator, self.issuer, self._rng = build_coordinator(
            seed, capacity, handshakes_per_second, self._clock)
        self.now = 0.0  # the driver's virtual time
        self.key = self.coordinator.public_key
        self.daemons: list[Daemon] = []
        self._by_address: dict[Address, Daemon] = {}
        self._daemon_random = random.Random(self._rng.random()).randbytes
        # the daemons' timers: (deadline, n, daemon); an entry whose deadline is no
        # longer its daemon's is stale and skipped
        self._timers: list[tuple[float, int, Daemon]] = []
        self._timer_order = itertools.count()
        self.receive_s = 0.0  # seconds in receive_datagram (and draining events)
        self.send_s = 0.0  # seconds in datagrams_to_send (the flush of every session)
        self.bursts = 0  # calls of feed()
        self.datagrams_in = 0  # datagrams fed to the coordinator
        self.datagrams_out = 0  # datagrams it answered with
        self.bytes_out = 0
        self.messages_out = 0  # messages the daemons received (registered, candidates, ...)
        self.events: Counter[str] = Counter()
        # when set, profile feed(): its receive_datagram calls, its datagrams_to_send
        self.profilers: tuple[cProfile.Profile, cProfile.Profile] | None = None
        # every feed() while set: its datagrams and now, and a digest of the answers
        self.recording: list[tuple[Datagrams, float]] | None = None
        self.digest = hashlib.sha256()

    def wall(self) -> float:
        return WALL + self.now

    def reset_counters(self) -> None:
        self.receive_s = self.send_s = 0.0
        self.bursts = self.datagrams_in = self.datagrams_out = self.bytes_out = 0
        self.messages_out = 0

    # -- the coordinator's side (timed) ------------------------------------------

    def feed(self, datagrams: Datagrams, now: float) -> Datagrams:
        """One burst into the coordinator at ``now``; what it sends back."""
        coordinator = self.coordinator
        receive = coordinator.receive_datagram
        next_event = coordinator.next_event
        self._clock.now = now
        profilers = self.profilers
        if profilers is not None:
            profilers[0].enable()
        start = clock()
        deadline = coordinator.get_timer()
        if deadline is not None and deadline <= now:  # its server's timer loop
            coordinator.handle_timer(now)
        for data, address in datagrams:
            receive(data, address, now)
        events = []
        while (event := next_event()) is not None:
            events.append(event)
        middle = clock()
        if profilers is not None:
            profilers[0].disable()
            profilers[1].enable()
            middle = clock()
        out = coordinator.datagrams_to_send(now)
        coordinator.get_timer()  # its server re-arms the timer after every burst
        end = clock()
        if profilers is not None:
            profilers[1].disable()
        self.receive_s += middle - start
        self.send_s += end - middle
        self.bursts += 1
        self.datagrams_in += len(datagrams)
        self.datagrams_out += len(out)
        for data, _ in out:
            self.bytes_out += len(data)
        for event in events:
            self.events[type(event).__name__] += 1
        if self.recording is not None:
            self.recording.append((datagrams, now))
            for data, _ in out:
                self.digest.update(data)
        return out

    # -- the daemons' side (not timed) -------------------------------------------

    def add_daemons(self, count: int) -> list[Daemon]:
        """New daemons, each with a seeded identity and a token for its key."""
        rng = self._rng
        new = []
        for _ in range(count):
            number = len(self.daemons)
            identity = Identity.from_private_bytes(rng.randbytes(32))
            player = 150_000 + number
            token = mint_token(self.issuer, account_id=player, player_id=player,
                               daemon_key=identity.public_key, lifetime=TOKEN_LIFETIME,
                               now=self.wall(), nonce=rng.randbytes(16))
            endpoint = Endpoint(identity.with_certificate(token), random_bytes=self._daemon_random)
            packed = struct.pack(">I", _FIRST_HOST + number)
            daemon = Daemon(number, endpoint, packed, 7000)
            self.daemons.append(daemon)
            self._by_address[(socket.inet_ntoa(packed), 7000)] = daemon
            new.append(daemon)
        return new

    def outgoing(self, daemon: Daemon, now: float) -> Datagrams:
        """What ``daemon`` sends now, each datagram with a fresh source address; its
        timer re-armed (every call into its endpoint ends here or in deliver)."""
        self._arm(daemon)
        return [(data, socket_address(daemon.packed, daemon.port))
                for data, _ in daemon.endpoint.datagrams_to_send(now)]

    def _arm(self, daemon: Daemon) -> None:
        deadline = daemon.endpoint.get_timer()
        if deadline != daemon.timer:
            daemon.timer = deadline
            if deadline is not None:
                heapq.heappush(self._timers, (deadline, next(self._timer_order), daemon))

    def deliver(self, datagrams: Datagrams, now: float) -> None:
        """The coordinator's datagrams into their daemons (whose timers then move:
        an ack owed ``ack_delay`` later, a retransmission forgotten)."""
        by_address = self._by_address
        for data, address in datagrams:
            daemon = by_address[address]
            endpoint = daemon.endpoint
            endpoint.receive_datagram(data, COORDINATOR_ADDRESS, now)
            while (event := endpoint.next_event()) is not None:  # not used further
                if isinstance(event, MessageReceived):
                    self.messages_out += 1
            self._arm(daemon)

    def due_timers(self, now: float) -> Datagrams:
        """What the daemons' timers send by ``now``, each at its deadline: acks that
        no data carried, retransmissions, PINGs (and PONGs answered on delivery)."""
        timers = self._timers
        out: Datagrams = []
        while timers and timers[0][0] <= now:
            deadline, _, daemon = heapq.heappop(timers)
            if daemon.timer != deadline:
                continue  # stale: its deadline moved
            daemon.timer = None
            daemon.endpoint.handle_timer(deadline)
            out += self.outgoing(daemon, deadline)
        return out

    def advance(self, until: float) -> None:
        """Only the timers run, daemons' and coordinator's, from ``self.now`` to ``until``."""
        now = self.now
        while now < until:
            now = min(now + TIMER_STEP, until)
            self.deliver(self.feed(self.due_timers(now), now), now)
        self.now = until

    def presence(self, daemon: Daemon, map_name: str, x: int, y: int, now: float) -> Datagrams:
        endpoint = daemon.endpoint
        daemon.presence_seq = (daemon.presence_seq + 1) & 0xFFFF
        endpoint.send_presence(self.key, encode_presence(Presence(map_name, x, y),
                                                         daemon.presence_seq), now)
        endpoint.flush(now)
        return self.outgoing(daemon, now)

    # -- whole phases ------------------------------------------------------------

    def register(self, count: int, burst: int, interval: float) -> None:
        """``count`` new daemons register, ``burst`` at a time every ``interval`` seconds:
        request, response, the daemon's confirming PING (PONG and ``registered``
        back), and its ack of ``registered`` ACK_DELAY later; the timers of
        every daemon run meanwhile."""
        for first in range(0, count, burst):
            new = self.add_daemons(min(burst, count - first))
            now = self.now
            requests = self.due_timers(now)
            for daemon in new:
                daemon.endpoint.connect(self.key, COORDINATOR_ADDRESS, now)
                requests += self.outgoing(daemon, now)
            self.deliver(self.feed(requests, now), now)  # handshake responses
            pings = [datagram for daemon in new for datagram in self.outgoing(daemon, now)]
            self.deliver(self.feed(pings, now), now)  # PONGs and registered
            self.advance(now + interval)

    def run(self, reports: Iterable[Report], burst: int) -> int:
        """Feed a stream of presence reports in bursts of ``burst`` datagrams (reports
        and the daemons' acks alone); returns the reports.

        Before each burst (not timed) the daemons take the coordinator's
        answers to the previous one, what their timers send by then leaves
        (acks, PINGs), and each report is sealed by its daemon; then the
        coordinator takes the burst at the time of its last datagram and
        answers once (timed)."""
        daemons = self.daemons
        chunk: Datagrams = []
        count = 0
        now = self.now
        for now, number, map_name, x, y in reports:
            chunk += self.due_timers(now)
            chunk += self.presence(daemons[number], map_name, x, y, now)
            count += 1
            while len(chunk) >= burst:
                self.deliver(self.feed(chunk[:burst], now), now)
                del chunk[:burst]
        if chunk:
            self.deliver(self.feed(chunk, now), now)
        self.now = now
        return count


class Replay:
    """The coordinator of world ``seed`` alone, fed what a recorded world fed it.

    Deterministic: the same datagrams at the same ``now`` make the same state
    and the same answers (``digest`` tells), with no daemon allocating beside
    it, so that tracemalloc and the resident size see the coordinator only.
    Each datagram comes with a fresh source address, as from a socket."""

    def __init__(self, seed: int, capacity: int, handshakes_per_second: int) -> None:
        self._clock = VirtualClock()
        self.coordinator = build_coordinator(seed, capacity, handshakes_per_second,
                                             self._clock)[0]
        self.digest = hashlib.sha256()

    def feed(self, datagrams: Datagrams, now: float) -> None:
        self._clock.now = now
        coordinator = self.coordinator
        receive = coordinator.receive_datagram
        aton, ntoa = socket.inet_aton, socket.inet_ntoa
        deadline = coordinator.get_timer()
        if deadline is not None and deadline <= now:
            coordinator.handle_timer(now)
        for data, (host, port) in datagrams:
            receive(data, (ntoa(aton(host)), port), now)
        while coordinator.next_event() is not None:
            pass
        for data, _ in coordinator.datagrams_to_send(now):
            self.digest.update(data)
        coordinator.get_timer()
