"""A user-space UDP impairment relay: :class:`SimNetwork`'s link model applied to real sockets.

These machines have no ``tc netem``, so tests that run real daemon processes get loss, delay
and the rest from this relay instead. There is one impairment implementation: the relay
drives a :class:`~p2pd.sim.network.SimNetwork` with trio's clock, so a :class:`LinkProfile`
means exactly the same here as in the in-memory simulations::

    client ──> front ┐                       ┌ back ──> target
                     └── SimNetwork (real ───┘
    client <── front ┘    time, 2 links)     └ back <── target

A sends to :attr:`UdpImpairmentRelay.front_address`; the relay forwards through the
``forward`` link out of its back socket to ``target`` (so the target sees the back socket
as its peer). What the target sends to the back socket goes through the ``backward`` link
and out of the front socket to the last address that sent to the front socket (dropped and
counted as ``undeliverable`` while nobody has). Datagrams reaching the back socket from
anywhere but the target are ignored (counted in :attr:`UdpImpairmentRelay.ignored`).

Time. The SimNetwork runs on ``trio.current_time()``; :meth:`UdpImpairmentRelay.now` is
that clock relative to the relay's start. Blackholes in the profiles given to the relay are
**relative to the relay's start** (the relay shifts them when it installs a profile), and
:meth:`UdpImpairmentRelay.blackhole_from_now` builds one that starts at the current relay
time. As in the SimNetwork, a blackhole drops what is *sent* (here: received by the relay)
during it; datagrams already in flight when it starts are still delivered. Use trio's real
clock: a fake clock (``MockClock``) does not move packets through real sockets.

Deliveries are made when trio wakes the relay, never early: on Linux a trio sleep overshoots
by roughly 0.1-1 ms (epoll's millisecond timeout is rounded up), so configured delays are
lower bounds accurate to about a millisecond on an idle machine.

Manual use (loopback only by default)::

    python -m p2pd.sim.udp_relay --listen-port 7000 --target 127.0.0.1:7001 --loss 0.1 --delay 0.05
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import math
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace

import trio

from p2pd.sim.network import Address, Delivery, LinkProfile, NetworkStats, SimNetwork

__all__ = ["UdpImpairmentRelay", "main", "parse_host_port"]

FORWARD = "forward"
BACKWARD = "backward"
_CLIENT_SIDE: Address = ("relay-client", 1)  # pseudo-addresses of the two links' ends
_TARGET_SIDE: Address = ("relay-target", 2)
_MAX_DATAGRAM = 65_535
_MAX_BURST = 64  # datagrams drained per wake-up before yielding to other tasks
_SOCKET_BUFFER = 4 * 1024 * 1024  # asked for; the kernel may cap it (net.core.rmem_max)


class UdpImpairmentRelay:
    """Sits between two UDP endpoints on loopback: A sends to :attr:`front_address`, the
    relay forwards to ``target`` from its back socket (so the target sees the relay as the
    peer), and replies coming back to the back socket go to the last address that sent to
    the front. Each direction has its own :class:`LinkProfile`; ``seed`` seeds the
    SimNetwork's random choices (the run still depends on real arrival times).

    ``listen_port`` picks the front socket's port (0: any free one). ``capture`` bounds
    :attr:`seen`, which records the last ``capture`` datagrams the relay *received*, before
    impairment, as ``("forward" | "backward", data)``; 0 disables the capture.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        forward: LinkProfile,
        backward: LinkProfile,
        seed: int,
        host: str = "127.0.0.1",
        listen_port: int = 0,
        capture: int = 10_000,
    ) -> None:
        if capture < 0:
            raise ValueError(f"capture must be >= 0, got {capture!r}")
        self.target = target
        self.host = host
        self.listen_port = listen_port
        self.seen: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=capture)
        self.ignored = 0  # datagrams at the back socket that did not come from the target
        self.send_errors = 0  # sendto failures (full socket buffer, unreachable, ...)
        self.receive_errors = 0
        self._capture = capture > 0
        self._forward = forward
        self._backward = backward
        self._network = SimNetwork(seed)
        self._start: float | None = None
        self._ran_for: float | None = None  # relay time at which run() ended
        self._front: socket.socket | None = None
        self._back: socket.socket | None = None
        self._front_address: Address | None = None
        self._back_address: Address | None = None
        self._target_address: Address | None = None  # resolved, as recvfrom reports it
        self._client: Address | None = None
        self._wakeup = trio.Event()
        self._sleeping_until = math.inf  # the delivery task's current deadline
        self._started = False
        self._closed = False

    # -- public state ----------------------------------------------------------------------

    @property
    def front_address(self) -> Address:
        """Where clients send to (available once :meth:`run` has reported started)."""
        if self._front_address is None:
            raise RuntimeError("the relay has not started")
        return self._front_address

    @property
    def back_address(self) -> Address:
        """The address the target sees datagrams coming from."""
        if self._back_address is None:
            raise RuntimeError("the relay has not started")
        return self._back_address

    @property
    def client_address(self) -> Address | None:
        """The last address that sent to the front socket; replies go there."""
        return self._client

    @property
    def forward_profile(self) -> LinkProfile:
        return self._forward

    @property
    def backward_profile(self) -> LinkProfile:
        return self._backward

    @property
    def closed(self) -> bool:
        """True once :meth:`run` has ended and both sockets are closed."""
        return self._closed

    @property
    def in_flight(self) -> int:
        """Datagrams accepted by the links and not yet delivered."""
        return self._network.in_flight

    def statistics(self) -> NetworkStats:
        """The SimNetwork's counters, both directions together (a copy)."""
        return self._network.statistics()

    def now(self) -> float:
        """Seconds since the relay started (0.0 before it has; frozen once it has ended)."""
        if self._ran_for is not None:
            return self._ran_for
        if self._start is None:
            return 0.0
        return trio.current_time() - self._start

    # -- impairment control ----------------------------------------------------------------

    def set_profiles(
        self, forward: LinkProfile | None = None, backward: LinkProfile | None = None
    ) -> None:
        """Replace the profile of one or both directions, effective for the next datagram.

        Datagrams already in flight keep the fate they were given when received.
        """
        if forward is not None:
            self._forward = forward
        if backward is not None:
            self._backward = backward
        if self._start is not None:
            self._install()

    def blackhole_from_now(self, seconds: float, base: LinkProfile | None = None) -> LinkProfile:
        """``base`` (default: a clean profile) plus a blackhole ``[now, now + seconds)`` in
        relay time, for :meth:`set_profiles`. Before the relay starts, now is 0."""
        if not 0.0 <= seconds < math.inf:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")
        base = LinkProfile() if base is None else base
        now = self.now()
        return replace(base, blackholes=(*base.blackholes, (now, now + seconds)))

    def _install(self) -> None:
        assert self._start is not None
        self._network.set_link(_CLIENT_SIDE, _TARGET_SIDE, self._absolute(self._forward))
        self._network.set_link(_TARGET_SIDE, _CLIENT_SIDE, self._absolute(self._backward))

    def _absolute(self, profile: LinkProfile) -> LinkProfile:
        """The profile with its relay-relative blackholes moved onto trio's clock."""
        if not profile.blackholes:
            return profile
        start = self._start
        assert start is not None
        shifted = tuple((start + begin, start + end) for begin, end in profile.blackholes)
        return replace(profile, blackholes=shifted)

    # -- running -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind both sockets, report started (with :attr:`front_address`) and relay until
        cancelled; the sockets are closed on the way out. A relay runs once."""
        if self._started:
            raise RuntimeError("a UdpImpairmentRelay can only run once")
        self._started = True
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            infos = await trio.socket.getaddrinfo(
                self.target[0], self.target[1], family=family, type=socket.SOCK_DGRAM
            )
            if not infos:
                raise OSError(f"cannot resolve target {self.target!r}")
            resolved = infos[0][4]
            self._target_address = (str(resolved[0]), int(resolved[1]))
            self._front = _bind_udp(family, (self.host, self.listen_port))
            self._back = _bind_udp(family, (self.host, 0))
            self._front_address = _local_address(self._front)
            self._back_address = _local_address(self._back)
            self._start = trio.current_time()
            self._install()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, self._front, FORWARD)
                nursery.start_soon(self._receive_loop, self._back, BACKWARD)
                nursery.start_soon(self._delivery_loop)
                task_status.started(self._front_address)
        finally:
            for sock in (self._front, self._back):
                if sock is not None:
                    sock.close()
            self._ran_for = self.now()
            self._closed = True

    async def _receive_loop(self, sock: socket.socket, direction: str) -> None:
        buffer = bytearray(_MAX_DATAGRAM)
        view = memoryview(buffer)
        network, seen = self._network, self.seen
        src, dst = (_CLIENT_SIDE, _TARGET_SIDE) if direction == FORWARD else (
            _TARGET_SIDE, _CLIENT_SIDE)
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            for _ in range(_MAX_BURST):
                try:
                    size, address = sock.recvfrom_into(buffer)
                except BlockingIOError:
                    break
                except OSError:
                    self.receive_errors += 1
                    continue
                peer = (str(address[0]), int(address[1]))
                if direction == FORWARD:
                    self._client = peer
                elif peer != self._target_address:
                    self.ignored += 1
                    continue
                data = bytes(view[:size])
                if self._capture:
                    seen.append((direction, data))
                network.send(src, dst, data, now)
            upcoming = network.next_delivery_time()
            if upcoming is not None and upcoming < self._sleeping_until:
                self._wakeup.set()

    async def _delivery_loop(self) -> None:
        network = self._network
        while True:
            for delivery in network.deliver_due(trio.current_time()):
                self._emit(delivery)
            upcoming = network.next_delivery_time()
            self._wakeup = trio.Event()
            self._sleeping_until = math.inf if upcoming is None else upcoming
            with trio.move_on_at(self._sleeping_until):
                await self._wakeup.wait()

    def _emit(self, delivery: Delivery) -> None:
        if delivery.dst == _TARGET_SIDE:
            sock, address = self._back, self._target_address
        else:
            sock, address = self._front, self._client
        if sock is None or address is None:
            self._network.record_undeliverable(delivery)
            return
        try:
            sock.sendto(delivery.data, address)
        except OSError:  # BlockingIOError included: a full buffer drops, like a router
            self.send_errors += 1


def _bind_udp(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _local_address(sock: socket.socket) -> Address:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


# -- command line ----------------------------------------------------------------------------


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6HOST]:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _target_arg(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m p2pd.sim.udp_relay",
        description="Relay UDP between a client and a target with loss, delay and other "
        "impairments (the LinkProfile model of p2pd.sim.network). Runs until Ctrl-C.",
    )
    parser.add_argument("--listen-host", default="127.0.0.1",
                        help="address of both relay sockets (default: 127.0.0.1, loopback)")
    parser.add_argument("--listen-port", type=int, default=0,
                        help="front port clients send to (default: any free port)")
    parser.add_argument("--target", type=_target_arg, required=True, metavar="HOST:PORT",
                        help="where datagrams are relayed to")
    parser.add_argument("--direction", choices=("both", FORWARD, BACKWARD), default="both",
                        help="which direction(s) the impairments apply to (default: both)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds instead of waiting for Ctrl-C")
    group = parser.add_argument_group("impairments (LinkProfile fields)")
    group.add_argument("--loss", type=float, default=0.0, help="independent loss probability")
    group.add_argument("--burst-enter", type=float, default=0.0,
                       help="Gilbert-Elliott P(good -> bad) per datagram")
    group.add_argument("--burst-exit", type=float, default=1.0,
                       help="Gilbert-Elliott P(bad -> good) per datagram")
    group.add_argument("--delay", type=float, default=0.0, help="one-way delay, seconds")
    group.add_argument("--jitter", type=float, default=0.0,
                       help="extra uniform delay in [0, jitter] seconds")
    group.add_argument("--reorder", type=float, default=0.0,
                       help="probability of an extra --reorder-delay")
    group.add_argument("--reorder-delay", type=float, default=0.01)
    group.add_argument("--duplicate", type=float, default=0.0)
    group.add_argument("--corrupt", type=float, default=0.0,
                       help="probability of flipping one bit")
    group.add_argument("--rate", type=float, default=None, metavar="BYTES_PER_S",
                       help="serialization rate limit (default: unlimited)")
    group.add_argument("--queue-bytes", type=int, default=64 * 1024,
                       help="rate limiter queue before tail drop")
    return parser


def _profile_from(args: argparse.Namespace) -> LinkProfile:
    return LinkProfile(
        loss=args.loss, burst_loss_enter=args.burst_enter, burst_loss_exit=args.burst_exit,
        delay=args.delay, jitter=args.jitter, reorder=args.reorder,
        reorder_delay=args.reorder_delay, duplicate=args.duplicate, corrupt=args.corrupt,
        rate_bytes_per_s=args.rate, queue_bytes=args.queue_bytes,
    )


def _format_statistics(relay: UdpImpairmentRelay) -> str:
    stats = relay.statistics()
    fields = dataclasses.asdict(stats)
    fields["lost"] = stats.lost
    fields["ignored"] = relay.ignored
    fields["send_errors"] = relay.send_errors
    fields["receive_errors"] = relay.receive_errors
    fields["in_flight"] = relay.in_flight
    return "\n".join(f"  {name:<16} {value}" for name, value in fields.items())


async def _serve(relay: UdpImpairmentRelay, duration: float | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            front = await nursery.start(relay.run)
            print(f"relaying {front[0]}:{front[1]} -> {relay.target[0]}:{relay.target[1]} "
                  f"(target sees {relay.back_address[0]}:{relay.back_address[1]}); "
                  "Ctrl-C to stop", flush=True)
            if duration is not None:
                nursery.cancel_scope.deadline = trio.current_time() + duration
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        profile = _profile_from(args)
    except ValueError as error:
        parser.error(str(error))
    clean = LinkProfile()
    relay = UdpImpairmentRelay(
        args.target,
        forward=profile if args.direction in ("both", FORWARD) else clean,
        backward=profile if args.direction in ("both", BACKWARD) else clean,
        seed=args.seed, host=args.listen_host, listen_port=args.listen_port, capture=0,
    )
    status = 0
    try:
        trio.run(_serve, relay, args.duration)
    except* OSError as group:  # cannot bind, cannot resolve the target, ...
        for problem in group.exceptions:
            print(f"udp_relay: {problem}", file=sys.stderr)
        status = 1
    finally:
        print(f"statistics after {relay.now():.1f} s:\n{_format_statistics(relay)}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
