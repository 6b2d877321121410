"""One-way small-event throughput of ENet and aioquic, for bench/throughput.py.

Run by the interpreter of ``bench/.venv-peers`` (``bench/setup_peers.sh``
makes it), never the project's venv: pyenet and aioquic live only there.
Prints one JSON line: per stack, events per second and the rest of
``Result``, or ``{"error": ...}`` where the stack cannot run.

It is also the harness that bench/throughput.py drives p2pd with: the
workload (``payloads``), the flow window and loss count (``Tally``), the
measuring loop (``measure``) and the socket pump of sans-IO protocol objects
(``SansIoPair``). At import time this module needs only the standard library
and ``cryptography`` (a dependency of both p2pd and aioquic), so the
project's venv imports it too; pyenet and aioquic are imported when their
rounds run.

The workload, the same for every stack: ``EVENTS`` events of
``PAYLOAD_SIZE`` bytes (an 8-byte sequence number and 16 random bytes, so that
no stack gains from compressing them), sent one way from A to B over two real
UDP sockets on 127.0.0.1, both ends in this one thread. The sender hands the
stack bursts of up to ``BURST`` events and then flushes; it never runs more
than ``WINDOW`` events ahead of what B has counted (events received, plus the
gaps in the sequence numbers B has seen: those are lost). When the window is
full and nothing arrives for ``STALL`` seconds, what is outstanding is written
off as lost, and the sender goes on (the stall stays in the measured time).
Rate: events counted at B divided by the wall time from the first send to
the last event counted.

- ENet (pyenet): one peer, channel 0, plain (sequenced) unreliable
  packets (flags 0, ``ENET_PACKET_FLAG_RELIABLE`` for the reliable variant),
  ``Host.flush()`` after each burst, ``Host.service(0)`` and
  ``Host.check_events()`` on both hosts as the pump. ENet packs up to 32
  commands into one datagram of at most its 1400-byte MTU; its socket is its
  own, with 256 KiB buffers (the size the sans-IO pump gives its sockets).
- aioquic: a client and a server ``QuicConnection`` (sans-IO, the same driving
  as p2pd's Endpoint: ``receive_datagram``, ``datagrams_to_send``,
  ``get_timer``, ``handle_timer``, ``next_event``), TLS 1.3 with a throwaway
  self-signed certificate, ``max_datagram_frame_size`` set; one event per
  DATAGRAM frame (``send_datagram_frame``); frames share 1200-byte QUIC
  packets as aioquic packs them; default congestion control (Reno) and pacing.
"""

from __future__ import annotations

import datetime
import importlib
import json
import random
import select
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

EVENTS = 300_000
PAYLOAD_SIZE = 24
BURST = 64  # events handed to a stack between two flushes
WINDOW = 4096  # events the sender may run ahead of the receiver's count
STALL = 0.2  # seconds of a full window with no progress before writing it off
SOCKET_BUFFER = 256 * 1024  # bytes, as ENet sizes its own sockets
LOOPBACK = "127.0.0.1"
SETUP_TIMEOUT = 5.0  # seconds for a connection or handshake
ROUNDS = 3

Address = tuple[str, int]


def payloads(count: int = EVENTS, seed: int = 1) -> list[bytes]:
    """The events: sequence number (8 bytes, big endian) + 16 random bytes."""
    noise = random.Random(seed).randbytes(16 * count)
    return [seq.to_bytes(8, "big") + noise[16 * seq:16 * seq + 16] for seq in range(count)]


@dataclass(frozen=True, slots=True)
class Result:
    events_per_s: float
    received: int
    lost: int
    seconds: float
    datagrams: int  # datagrams B received while measuring
    events_per_datagram: float


class Tally:
    """What the sender has handed over and what B has counted."""

    __slots__ = ("first_send", "last_progress", "received", "seen", "sent", "total",
                 "written_off")

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0  # events handed to the stack
        self.received = 0  # events counted at B
        self.seen = 0  # highest sequence number counted at B, plus one
        self.written_off = 0  # events sent before it are no longer waited for
        self.first_send = 0.0
        self.last_progress = 0.0

    def receive(self, payload: bytes) -> None:
        self.received += 1
        seq = int.from_bytes(payload[:8], "big")
        if seq >= self.seen:
            self.seen = seq + 1

    def room(self) -> int:
        """Events the sender may hand over now."""
        outstanding = self.sent - max(self.seen, self.written_off)
        return min(BURST, self.total - self.sent, WINDOW - outstanding)

    def result(self, datagrams: int) -> Result:
        seconds = self.last_progress - self.first_send
        return Result(
            events_per_s=self.received / seconds if seconds > 0 else 0.0,
            received=self.received,
            lost=self.total - self.received,
            seconds=seconds,
            datagrams=datagrams,
            events_per_datagram=self.received / datagrams if datagrams else 0.0,
        )


def measure(tally: Tally, send: Callable[[int, int, float], None],
            step: Callable[[float], None], idle: Callable[[float], None]) -> None:
    """The measuring loop, the same for every stack.

    ``send(first, count, now)`` hands events ``first..first+count-1`` to the
    stack and flushes; ``step(now)`` moves datagrams both ways and counts
    what arrives at B into the tally; ``idle(now)`` waits briefly for input.
    """
    clock = time.monotonic
    now = tally.first_send = tally.last_progress = clock()
    while True:
        count = tally.room()
        if count > 0:
            send(tally.sent, count, now)
            tally.sent += count
        before = tally.received
        step(now)
        now = clock()
        if tally.received != before:
            tally.last_progress = now
            if tally.seen >= tally.total:
                return
        elif now - tally.last_progress > STALL:
            if tally.sent >= tally.total:
                return  # the tail is lost
            tally.written_off = tally.sent
            tally.last_progress = now
        elif count <= 0:
            idle(now)


# -- sans-IO protocol objects on real sockets --------------------------------------------------


class SansIo(Protocol):
    """What p2pd's Endpoint and aioquic's QuicConnection have in common."""

    def receive_datagram(self, data: bytes, address: Any, now: float, /) -> None: ...

    def datagrams_to_send(self, now: float, /) -> Sequence[tuple[bytes, Any]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float, /) -> None: ...


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    return sock


class SansIoPair:
    """Two sans-IO protocol objects, each on its own UDP socket, pumped in turn."""

    def __init__(self) -> None:
        self.a_socket, self.b_socket = udp_socket(), udp_socket()
        self.a_address: Address = self.a_socket.getsockname()
        self.b_address: Address = self.b_socket.getsockname()
        self.b_datagrams = 0  # datagrams B has received

    def close(self) -> None:
        self.a_socket.close()
        self.b_socket.close()

    @staticmethod
    def _transmit(conn: SansIo, sock: socket.socket, now: float) -> None:
        sendto = sock.sendto
        for data, address in conn.datagrams_to_send(now):
            sendto(data, address)

    @staticmethod
    def _receive(conn: SansIo, sock: socket.socket, now: float) -> int:
        recvfrom, receive = sock.recvfrom, conn.receive_datagram
        count = 0
        while True:
            try:
                data, address = recvfrom(65536)
            except BlockingIOError:
                return count
            receive(data, address, now)
            count += 1

    @staticmethod
    def _timer(conn: SansIo, now: float) -> None:
        deadline = conn.get_timer()
        if deadline is not None and deadline <= now:
            conn.handle_timer(now)

    def step(self, a: SansIo, b: SansIo, now: float) -> None:
        """A's output out, B's input in, B's output out, A's input in, timers."""
        self._transmit(a, self.a_socket, now)
        self.b_datagrams += self._receive(b, self.b_socket, now)
        self._timer(b, now)
        self._transmit(b, self.b_socket, now)
        self._receive(a, self.a_socket, now)
        self._timer(a, now)
        self._transmit(a, self.a_socket, now)

    def idle(self, a: SansIo, b: SansIo, now: float) -> None:
        """Wait for a datagram or the next timer, 1 ms at most."""
        timeout = 0.001
        for conn in (a, b):
            deadline = conn.get_timer()
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - now))
        select.select([self.a_socket, self.b_socket], [], [], timeout)


# -- ENet ---------------------------------------------------------------------------------------


def peer_module(name: str) -> Any:
    """A module of pyenet or aioquic: installed in bench/.venv-peers only, so
    imported when a round runs, and untyped to the project's mypy."""
    return importlib.import_module(name)


def enet_round(events: list[bytes], reliable: bool = False) -> Result:
    enet = peer_module("enet")
    none, receive_type = enet.EVENT_TYPE_NONE, enet.EVENT_TYPE_RECEIVE
    flags = enet.PACKET_FLAG_RELIABLE if reliable else 0
    b_host = enet.Host(enet.Address(LOOPBACK.encode(), 0), 1, 1, 0, 0)
    a_host = enet.Host(None, 1, 1, 0, 0)
    peer = a_host.connect(enet.Address(LOOPBACK.encode(), b_host.address.port), 1)
    connected = 0
    deadline = time.monotonic() + SETUP_TIMEOUT
    while connected < 2:
        for host in (a_host, b_host):
            event = host.service(0)
            if event is not None and event.type == enet.EVENT_TYPE_CONNECT:
                connected += 1
        if time.monotonic() > deadline:
            raise TimeoutError("ENet peers did not connect")

    tally = Tally(len(events))
    packet, peer_send, flush = enet.Packet, peer.send, a_host.flush
    count_event = tally.receive

    def send(first: int, count: int, now: float) -> None:
        for data in events[first:first + count]:
            peer_send(0, packet(data, flags))
        flush()

    def step(now: float) -> None:
        event = b_host.service(0)
        while event is not None and event.type != none:
            if event.type == receive_type:
                count_event(event.packet.data)
            event = b_host.check_events()
        event = a_host.service(0)  # acknowledgements, pings
        while event is not None and event.type != none:
            event = a_host.check_events()

    def idle(now: float) -> None:
        pass  # service(0) polls the socket; loopback delivers at sendto

    datagrams_before = b_host.totalReceivedPackets
    measure(tally, send, step, idle)
    result = tally.result(b_host.totalReceivedPackets - datagrams_before)
    peer.disconnect_now(0)
    a_host.flush()
    return result


# -- aioquic ------------------------------------------------------------------------------------


def self_signed() -> tuple[Any, Any]:
    """A throwaway certificate for "localhost" and its private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    today = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(today - datetime.timedelta(days=1))
        .not_valid_after(today + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def aioquic_round(events: list[bytes]) -> Result:
    Buffer = peer_module("aioquic.buffer").Buffer
    QuicConfiguration = peer_module("aioquic.quic.configuration").QuicConfiguration
    QuicConnection = peer_module("aioquic.quic.connection").QuicConnection
    quic_events = peer_module("aioquic.quic.events")
    DatagramFrameReceived = quic_events.DatagramFrameReceived
    HandshakeCompleted = quic_events.HandshakeCompleted
    pull_quic_header = peer_module("aioquic.quic.packet").pull_quic_header

    certificate, key = self_signed()
    common = {"alpn_protocols": ["bench"], "max_datagram_frame_size": 65536}
    client_config = QuicConfiguration(is_client=True, server_name="localhost",
                                      verify_mode=ssl.CERT_NONE, **common)
    server_config = QuicConfiguration(is_client=False, certificate=certificate,
                                      private_key=key, **common)
    pair = SansIoPair()
    try:
        now = time.monotonic()
        client = QuicConnection(configuration=client_config)
        client.connect(pair.b_address, now)
        # The server's connection is made from the client's first packet, as
        # aioquic's own server does: it needs the original destination CID.
        initial = client.datagrams_to_send(now)
        header = pull_quic_header(Buffer(data=initial[0][0]),
                                  host_cid_length=server_config.connection_id_length)
        server = QuicConnection(configuration=server_config,
                                original_destination_connection_id=header.destination_cid)
        for data, _ in initial:
            server.receive_datagram(data, pair.a_address, now)

        done: set[str] = set()
        deadline = now + SETUP_TIMEOUT
        while len(done) < 2:
            now = time.monotonic()
            pair.step(client, server, now)
            for name, conn in (("client", client), ("server", server)):
                while (event := conn.next_event()) is not None:
                    if isinstance(event, HandshakeCompleted):
                        done.add(name)
            if now > deadline:
                raise TimeoutError("QUIC handshake did not complete")
            pair.idle(client, server, now)

        tally = Tally(len(events))
        send_frame, next_event, count_event = (client.send_datagram_frame, server.next_event,
                                               tally.receive)

        def send(first: int, count: int, now: float) -> None:
            for data in events[first:first + count]:
                send_frame(data)

        def step(now: float) -> None:
            pair.step(client, server, now)
            while (event := next_event()) is not None:
                if type(event) is DatagramFrameReceived:
                    count_event(event.data)
            while client.next_event() is not None:
                pass

        pair.b_datagrams = 0
        measure(tally, send, step, lambda now: pair.idle(client, server, now))
        return tally.result(pair.b_datagrams)
    finally:
        pair.close()


# -- main ---------------------------------------------------------------------------------------


def best(run: Callable[[], Result], rounds: int) -> dict[str, Any]:
    """The best of ``rounds`` runs, as a dict; or the error that stopped them."""
    try:
        results = [run() for _ in range(rounds)]
    except Exception as error:  # a stack that cannot run reports why, not a number
        return {"error": f"{type(error).__name__}: {error}"}
    return asdict(max(results, key=lambda r: r.events_per_s))


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("pyenet", "aioquic"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv: list[str]) -> None:
    rounds = int(argv[0]) if argv else ROUNDS
    events = payloads()
    print(json.dumps({
        "enet": best(lambda: enet_round(events), rounds),
        "enet_reliable": best(lambda: enet_round(events, reliable=True), rounds),
        "aioquic": best(lambda: aioquic_round(events), rounds),
        "versions": versions(),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
