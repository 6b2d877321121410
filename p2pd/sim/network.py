"""A deterministic, impaired, in-memory datagram network and a driver for sans-IO nodes.

Everything runs in virtual time (float seconds) and every random choice comes from one
``random.Random(seed)`` per network, so the same seed and the same sequence of calls give
exactly the same run. Impairments are configured per direction (src -> dst) with a
:class:`LinkProfile`; links that were not configured use the network's default profile.

Per datagram the link applies, in order: blackhole (by send time), the rate-limited queue
(tail drop), Gilbert-Elliott burst loss, independent loss, then per delivered copy
jitter, reordering and corruption; duplication adds a second copy with its own delay.

NAT routers (:class:`p2pd.sim.nat.SimNat`, :meth:`SimNetwork.add_nat`) translate the
source of what their private hosts send (at send time) and the destination of what
arrives at their public IP (at arrival time, filtering it); a datagram sent with a
low IP TTL (``send_with_ttl``) dies past its own NAT. A node may hand such datagrams
out from ``low_ttl_datagrams()``, which the Simulation sends after
``datagrams_to_send()``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

from p2pd.sim.nat import MIN_TTL_ACROSS, SimNat

Address = tuple[str, int]
_Link = tuple[Address, Address]

_PROBABILITIES = ("loss", "burst_loss_enter", "burst_loss_exit", "reorder", "duplicate", "corrupt")
_DURATIONS = ("delay", "jitter", "reorder_delay")


@dataclass(frozen=True)
class LinkProfile:
    loss: float = 0.0  # independent loss probability per datagram
    burst_loss_enter: float = 0.0  # Gilbert-Elliott: P(good -> bad) per datagram
    burst_loss_exit: float = 1.0  # P(bad -> good) per datagram; in bad state all are lost
    delay: float = 0.0  # one-way base delay, seconds
    jitter: float = 0.0  # extra uniform random delay in [0, jitter]
    reorder: float = 0.0  # probability of an extra reorder_delay, so later ones overtake
    reorder_delay: float = 0.01
    duplicate: float = 0.0  # probability a datagram is delivered twice
    corrupt: float = 0.0  # probability one random bit of a delivered copy is flipped
    rate_bytes_per_s: float | None = None  # serialization rate; None: unlimited
    queue_bytes: int = 64 * 1024  # tail drop when the queue would exceed this
    blackholes: tuple[tuple[float, float], ...] = ()  # [start, end): everything sent is lost

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LinkProfile.{name} must be in [0, 1], got {value!r}")
        for name in _DURATIONS:
            value = getattr(self, name)
            if not 0.0 <= value < math.inf:
                raise ValueError(f"LinkProfile.{name} must be finite and >= 0, got {value!r}")
        rate = self.rate_bytes_per_s
        if rate is not None and not 0.0 < rate < math.inf:
            raise ValueError(f"LinkProfile.rate_bytes_per_s must be finite and > 0, got {rate!r}")
        if self.queue_bytes < 0:
            raise ValueError(f"LinkProfile.queue_bytes must be >= 0, got {self.queue_bytes!r}")
        for period in self.blackholes:
            if len(period) != 2 or not period[0] <= period[1]:
                raise ValueError(f"LinkProfile.blackholes needs (start, end) pairs, got {period!r}")


@dataclass(frozen=True, slots=True)
class Delivery:
    time: float
    src: Address
    dst: Address
    data: bytes


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0  # datagrams handed to send()
    delivered: int = 0  # copies returned by deliver_due() (duplicates count twice)
    lost_random: int = 0
    lost_burst: int = 0
    lost_blackhole: int = 0
    lost_queue: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    undeliverable: int = 0  # delivered, but no node had the destination address
    lost_ttl: int = 0  # sent with a TTL too low to cross the internet
    nat_filtered: int = 0  # arrived at a NAT that let it not in
    unroutable: int = 0  # to a private address behind another NAT
    bytes_sent: int = 0
    bytes_delivered: int = 0

    @property
    def lost(self) -> int:
        return self.lost_random + self.lost_burst + self.lost_blackhole + self.lost_queue


class SimNetwork:
    def __init__(self, seed: int, default: LinkProfile = LinkProfile()) -> None:
        self.default = default
        self._rng = random.Random(seed)
        self._profiles: dict[_Link, LinkProfile] = {}
        self._bad: set[_Link] = set()  # links in the Gilbert-Elliott bad state
        self._busy_until: dict[_Link, float] = {}  # when a rate-limited link empties its queue
        self._pending: list[tuple[float, int, Address, Address, bytes]] = []  # heap
        self._seq = 0
        self._stats = NetworkStats()
        self._nats: dict[str, SimNat] = {}  # by public IP
        self._inside: dict[str, SimNat] = {}  # private IP -> its NAT

    def add_nat(self, nat: SimNat) -> None:
        self._nats[nat.public_ip] = nat
        for ip in nat.inside:
            self._inside[ip] = nat

    def nat_of(self, ip: str) -> SimNat | None:
        return self._inside.get(ip)

    def set_link(self, src: Address, dst: Address, profile: LinkProfile) -> None:
        self._profiles[(src, dst)] = profile

    def set_path(self, a: Address, b: Address, profile: LinkProfile) -> None:
        self.set_link(a, b, profile)
        self.set_link(b, a, profile)

    def profile(self, src: Address, dst: Address) -> LinkProfile:
        return self._profiles.get((src, dst), self.default)

    def send(self, src: Address, dst: Address, data: bytes, now: float) -> None:
        self.send_with_ttl(src, dst, data, now, None)

    def send_with_ttl(self, src: Address, dst: Address, data: bytes, now: float,
                      ttl: int | None) -> None:
        """``send`` with an IP TTL: below MIN_TTL_ACROSS it dies past its own NAT."""
        if self._inside:
            nat = self._inside.get(src[0])
            far = self._inside.get(dst[0])
            if far is not None and far is not nat:  # a private address of another realm
                self._stats.sent += 1
                self._stats.unroutable += 1
                return
            if nat is not None and far is None:
                src = nat.outbound(src, dst, now)
        if ttl is not None and ttl < MIN_TTL_ACROSS:
            self._stats.sent += 1
            self._stats.lost_ttl += 1
            return
        link = (src, dst)
        p = self._profiles.get(link, self.default)
        rng, stats = self._rng, self._stats
        data = bytes(data)
        stats.sent += 1
        stats.bytes_sent += len(data)
        if p.blackholes and any(start <= now < end for start, end in p.blackholes):
            stats.lost_blackhole += 1
            return
        departure = now
        if p.rate_bytes_per_s is not None:
            start = max(self._busy_until.get(link, now), now)
            if (start - now) * p.rate_bytes_per_s + len(data) > p.queue_bytes:
                stats.lost_queue += 1
                return
            departure = start + len(data) / p.rate_bytes_per_s
            self._busy_until[link] = departure
        if p.burst_loss_enter > 0.0 or link in self._bad:
            if link in self._bad:
                if rng.random() < p.burst_loss_exit:
                    self._bad.discard(link)
            elif rng.random() < p.burst_loss_enter:
                self._bad.add(link)
            if link in self._bad:
                stats.lost_burst += 1
                return
        if p.loss > 0.0 and rng.random() < p.loss:
            stats.lost_random += 1
            return
        self._schedule(p, src, dst, data, departure)
        if p.duplicate > 0.0 and rng.random() < p.duplicate:
            stats.duplicated += 1
            self._schedule(p, src, dst, data, departure)

    def _schedule(
        self, p: LinkProfile, src: Address, dst: Address, data: bytes, departure: float
    ) -> None:
        rng = self._rng
        arrival = departure + p.delay
        if p.jitter > 0.0:
            arrival += rng.uniform(0.0, p.jitter)
        if p.reorder > 0.0 and rng.random() < p.reorder:
            arrival += p.reorder_delay
            self._stats.reordered += 1
        if p.corrupt > 0.0 and data and rng.random() < p.corrupt:
            bit = rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit >> 3] ^= 1 << (bit & 7)
            data = bytes(flipped)
            self._stats.corrupted += 1
        heapq.heappush(self._pending, (arrival, self._seq, src, dst, data))
        self._seq += 1

    def next_delivery_time(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def deliver_due(self, now: float) -> list[Delivery]:
        """Datagrams arriving at or before ``now``, in arrival order (ties: send order)."""
        pending, out = self._pending, []
        while pending and pending[0][0] <= now:
            time, _, src, dst, data = heapq.heappop(pending)
            nat = self._nats.get(dst[0]) if self._nats else None
            if nat is not None:
                inside = nat.inbound(src, dst[1], time)
                if inside is None:
                    self._stats.nat_filtered += 1
                    continue
                dst = inside
            out.append(Delivery(time, src, dst, data))
            self._stats.bytes_delivered += len(data)
        self._stats.delivered += len(out)
        return out

    def record_undeliverable(self, delivery: Delivery) -> None:
        """Count a delivered datagram that nobody was listening for."""
        self._stats.undeliverable += 1

    def statistics(self) -> NetworkStats:
        return replace(self._stats)


class SimNode(Protocol):
    address: Address

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...


class Simulation:
    """Drives sans-IO nodes over a SimNetwork in virtual time.

    ``flush()`` and ``step()`` poll every node (so calls made on nodes from outside are
    picked up); inside ``run_until``/``run_while`` only the nodes that received a datagram
    or had a timer fired are polled, so the cost is proportional to activity, not to n.
    """

    stuck_limit = 10_000  # activations of one node at one virtual instant before giving up

    def __init__(self, network: SimNetwork, nodes: Iterable[SimNode], start: float = 0.0) -> None:
        self.network = network
        self.now = start
        self._nodes: dict[Address, SimNode] = {}
        self._timers: dict[Address, float] = {}  # current deadline per node
        self._timer_heap: list[tuple[float, int, Address]] = []  # may hold stale entries
        self._seq = 0
        self._activity: dict[Address, int] = {}  # activations at the current instant
        for node in nodes:
            self.add_node(node)

    @property
    def nodes(self) -> Mapping[Address, SimNode]:
        return MappingProxyType(self._nodes)

    def add_node(self, node: SimNode) -> None:
        if node.address in self._nodes:
            raise ValueError(f"a node with address {node.address!r} already exists")
        self._nodes[node.address] = node
        self._poll(node)

    def flush(self) -> None:
        for node in list(self._nodes.values()):
            self._poll(node)

    def next_event_time(self) -> float | None:
        heap = self._timer_heap
        while heap and self._timers.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # stale: the node has moved or cleared that deadline
        delivery = self.network.next_delivery_time()
        if not heap:
            return delivery
        return heap[0][0] if delivery is None else min(delivery, heap[0][0])

    def step(self) -> bool:
        self.flush()
        t = self.next_event_time()
        if t is not None:
            self._step(t)
        return t is not None

    def run_until(self, t: float) -> None:
        self.flush()
        while (event := self.next_event_time()) is not None and event <= t:
            self._step(event)
        if t > self.now:
            self._advance(t)
        self.flush()

    def run_while(self, predicate: Callable[[], bool], limit: float) -> bool:
        """Step while ``predicate()`` holds; False if it still holds when the next event
        would pass ``limit`` (virtual time then stays at the last event) or nothing is left."""
        self.flush()
        while predicate():
            event = self.next_event_time()
            if event is None or event > limit:
                return False
            self._step(event)
        return True

    def _advance(self, t: float) -> None:
        self.now = t
        self._activity.clear()

    def _step(self, t: float) -> None:
        if t > self.now:  # a deadline in the past fires now; time never goes back
            self._advance(t)
        now = self.now
        active: dict[Address, SimNode] = {}  # ordered, so the run stays deterministic
        for d in self.network.deliver_due(now):
            node = self._nodes.get(d.dst)
            if node is None:
                self.network.record_undeliverable(d)
                continue
            node.receive_datagram(d.data, d.src, now)
            active[d.dst] = node
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            deadline, _, addr = heapq.heappop(heap)
            if self._timers.get(addr) != deadline:
                continue  # stale entry
            del self._timers[addr]  # _poll re-registers whatever the node asks for next
            node = self._nodes[addr]
            current = node.get_timer() if addr in active else deadline  # a receive may move it
            if current is not None and current <= now:
                node.handle_timer(now)
            active[addr] = node
        for addr, node in active.items():
            count = self._activity.get(addr, 0) + 1
            self._activity[addr] = count
            if count > self.stuck_limit:
                raise RuntimeError(
                    f"node {node!r} at {addr!r} was activated {count} times at t={now!r} "
                    f"without virtual time advancing (get_timer() -> {node.get_timer()!r}); "
                    "a timer deadline stuck in the past or a zero-delay message loop?"
                )
            self._poll(node)

    def _poll(self, node: SimNode) -> None:
        addr, now = node.address, self.now
        for data, dst in node.datagrams_to_send(now):
            self.network.send(addr, dst, data, now)
        low = getattr(node, "low_ttl_datagrams", None)
        if low is not None:
            for data, dst, ttl in low():
                self.network.send_with_ttl(addr, dst, data, now, ttl)
        deadline = node.get_timer()
        if deadline != self._timers.get(addr):
            if deadline is None:
                del self._timers[addr]
            else:
                self._timers[addr] = deadline
                heapq.heappush(self._timer_heap, (deadline, self._seq, addr))
                self._seq += 1
