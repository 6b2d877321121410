"""The coordinator's sans-IO core with daemons' endpoints, on the simulated network."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pd.coordinator.core import (
    AdmissionRefused,
    Coordinator,
    DaemonRegistered,
    ReportReceived,
)
from p2pd.coordinator.credentials import (
    certificate_policy,
    mint_token,
    verify_certificate_untrusted,
)
from p2pd.coordinator.messages import (
    Candidates,
    ControlMessage,
    Dial,
    Introduce,
    PeerEntry,
    Presence,
    Registered,
    Report,
    decode_control_untrusted,
    encode_control,
    encode_presence,
)
from p2pd.crypto.identity import Identity
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import MessageReceived, SessionEstablished
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import EndpointNode
from p2pd.wire.frames import encode_frames
from p2pd.wire.types import PacketType

WALL = 1_800_000_000.0  # the virtual wall clock at t=0
COORD_ADDR = ("10.9.0.1", 7300)


@dataclass
class World:
    sim: Simulation
    net: SimNetwork
    coordinator: Coordinator
    issuer: Ed25519PrivateKey
    rng: random.Random
    daemons: list[EndpointNode] = field(default_factory=list)

    def wall(self) -> float:
        return WALL + self.sim.now

    def daemon(self, player_id: int, *, token: bytes | None = None, lifetime: float = 600.0,
               address: tuple[str, int] | None = None) -> EndpointNode:
        identity = Identity.from_private_bytes(self.rng.randbytes(32))
        if token is None:
            token = mint_token(self.issuer, account_id=player_id, player_id=player_id,
                               daemon_key=identity.public_key, lifetime=lifetime,
                               now=self.wall())
        own = random.Random(self.rng.random())
        endpoint = Endpoint(identity.with_certificate(token), random_bytes=own.randbytes)
        node = EndpointNode(address or (f"10.9.1.{len(self.daemons) + 1}", 7000), endpoint)
        self.sim.add_node(node)
        self.daemons.append(node)
        endpoint.connect(self.coordinator.public_key, COORD_ADDR, self.sim.now)
        return node


class CoordinatorNode:
    def __init__(self, coordinator: Coordinator) -> None:
        self.address = COORD_ADDR
        self.coordinator = coordinator
        self.events: list[object] = []

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.coordinator.receive_datagram(data, addr, now)
        self._drain()

    def handle_timer(self, now: float) -> None:
        self.coordinator.handle_timer(now)
        self._drain()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return self.coordinator.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.coordinator.get_timer()

    def _drain(self) -> None:
        while (event := self.coordinator.next_event()) is not None:
            self.events.append(event)


def world(seed: int = 1) -> tuple[World, CoordinatorNode]:
    rng = random.Random(seed)
    issuer = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    signing = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    net = SimNetwork(seed, LinkProfile(delay=0.005))
    sim = Simulation(net, [])
    holder: list[World] = []

    def clock() -> float:  # the world's virtual wall clock, once the world exists
        return holder[0].wall()

    coordinator = Coordinator(Identity.from_private_bytes(rng.randbytes(32)), signing,
                              [issuer.public_key()], clock=clock,
                              random_bytes=random.Random(rng.random()).randbytes)
    node = CoordinatorNode(coordinator)
    sim.add_node(node)
    w = World(sim, net, coordinator, issuer, rng)
    holder.append(w)
    return w, node


def control(node: EndpointNode) -> list[ControlMessage]:
    return [decode_control_untrusted(e.payload) for e in node.events_of(MessageReceived)
            if e.type == PacketType.COORDINATOR]


_PRESENCE_SEQ = itertools.count(1)  # increasing for every daemon: newer reports


def say(w: World, node: EndpointNode, message: ControlMessage | Presence) -> None:
    if isinstance(message, Presence):
        node.endpoint.send_presence(w.coordinator.public_key,
                                    encode_presence(message, next(_PRESENCE_SEQ)), w.sim.now)
        return
    node.endpoint.send(w.coordinator.public_key, PacketType.COORDINATOR,
                       encode_control(message), w.sim.now)


def registered(node: EndpointNode) -> Registered | None:
    return next((m for m in control(node) if isinstance(m, Registered)), None)


def test_a_daemon_with_a_valid_token_gets_a_certificate_for_its_key() -> None:
    w, coord = world()
    daemon = w.daemon(150001)
    w.sim.run_until(1.0)
    reply = registered(daemon)
    assert reply is not None and reply.address == "10.9.1.1:7000"
    assert reply.signing_key == w.coordinator.signing_public_key
    certificate = verify_certificate_untrusted(
        reply.certificate, [w.coordinator._signing_key.public_key()],
        daemon.endpoint.identity.public_key, w.wall())
    assert certificate.player_id == 150001
    assert [type(e) for e in coord.events] == [DaemonRegistered]


def test_a_coordinators_sessions_keep_128_counters_against_replays_and_no_rtt_history(
        ) -> None:
    """A coordinator holds a session per daemon, each a few packets a second: its
    replay window is 128 counters (docs/protocol.md 5.3); the daemon's stays 2048."""
    w, _ = world()
    daemon = w.daemon(150001)
    w.sim.run_until(12.0)  # registered, and PINGs both ways
    key = daemon.endpoint.identity.public_key
    stats = w.coordinator.endpoint.session_statistics(key)
    assert stats.rtt.samples > 0 and stats.rtt.p50 is None  # smoothed, no sample kept
    keypair = daemon.endpoint._sessions[w.coordinator.public_key].current
    assert keypair is not None and keypair._replay.size == 2048  # the daemon's own
    ping = encode_frames([(PacketType.PING, bytes(4))])
    sealed = [keypair.seal(0x0009, int(PacketType.SEALED), ping) for _ in range(130)]
    now = w.sim.now
    w.coordinator.receive_datagram(sealed[-1], daemon.address, now)
    for late in sealed[:3]:  # 129, 128 and 127 counters behind the newest
        w.coordinator.receive_datagram(late, daemon.address, now)
    assert w.coordinator.endpoint.statistics().drops == {"replayed": 2}
    assert w.coordinator.endpoint.session_statistics(key).drops == {"replayed": 2}
    received = w.coordinator.endpoint.session_statistics(key).packets_received
    w.coordinator.receive_datagram(sealed[2], daemon.address, now)  # seen: a replay now
    assert w.coordinator.endpoint.session_statistics(key).packets_received == received


def test_expired_forged_and_foreign_tokens_get_no_answer_at_all() -> None:
    w, coord = world(2)
    stranger = Ed25519PrivateKey.from_private_bytes(bytes(32))
    other_key = Identity.from_private_bytes(bytes(range(32))).public_key
    tokens = {
        "expired": mint_token(w.issuer, account_id=1, player_id=1, daemon_key=bytes(32),
                              lifetime=10, now=WALL - 3600),
        "forged": mint_token(stranger, account_id=2, player_id=2, daemon_key=bytes(32),
                             lifetime=600, now=WALL),
        "wrong_key": mint_token(w.issuer, account_id=3, player_id=3, daemon_key=other_key,
                                lifetime=600, now=WALL),
    }
    sent_by_coordinator: list[bytes] = []
    original = w.net.send

    def watch(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        if src == COORD_ADDR:
            sent_by_coordinator.append(data)
        original(src, dst, data, now)

    w.net.send = watch  # type: ignore[method-assign]
    for name, token in tokens.items():
        daemon = w.daemon(9, token=token)
        w.sim.run_until(w.sim.now + 2.0)
        assert registered(daemon) is None, name
        assert daemon.events_of(SessionEstablished) == [], name
    assert sent_by_coordinator == []  # not one byte back: nothing to amplify
    assert len(w.coordinator.store) == 0
    reasons = {e.reason for e in coord.events if isinstance(e, AdmissionRefused)}
    assert reasons == {"expired", "bad_signature", "wrong_key"} == set(w.coordinator.refused)


def test_a_token_replayed_from_another_address_is_refused() -> None:
    w, _ = world(3)
    first = w.daemon(7)
    w.sim.run_until(1.0)
    assert registered(first) is not None
    # the same identity and token from elsewhere (a stolen key file and token)
    stolen = EndpointNode(("10.9.7.7", 9000), Endpoint(first.endpoint.identity,
                                                        random_bytes=w.rng.randbytes))
    w.sim.add_node(stolen)
    stolen.endpoint.connect(w.coordinator.public_key, COORD_ADDR, w.sim.now)
    w.sim.run_until(3.0)
    assert registered(stolen) is None and stolen.events_of(SessionEstablished) == []
    assert w.coordinator.refused["replayed"] >= 1  # each retransmitted request, refused
    record = w.coordinator.store.by_key(first.endpoint.identity.public_key)
    assert record is not None and record.address == first.address  # undisturbed


def test_candidates_are_the_nearest_within_view_range_and_a_dial_introduces_the_dialler(
        ) -> None:
    w, _ = world(4)
    coord = w.coordinator
    spots = {1: ("prontera", 100, 100), 2: ("prontera", 105, 103), 3: ("prontera", 110, 90),
             4: ("prontera", 140, 100), 5: ("geffen", 100, 100)}
    daemons = {pid: w.daemon(pid) for pid in spots}
    w.sim.run_until(1.0)
    for pid in (2, 3, 4, 5):
        say(w, daemons[pid], Presence(*spots[pid]))
        w.sim.run_until(w.sim.now + 0.2)
    say(w, daemons[1], Presence(*spots[1], want=13, relay_only=False))
    w.sim.run_until(w.sim.now + 0.5)
    (offer,) = [m for m in control(daemons[1]) if isinstance(m, Candidates)]
    # nearest first (5 and 10 cells), each at its cell; no certificate in a list
    assert [(e.player_id, e.x, e.y) for e in offer.peers] == [(2, 105, 103), (3, 110, 90)]
    assert all(e.address is not None and e.certificate is None for e in offer.peers)

    def introductions_of_1(pid: int) -> list[PeerEntry]:
        return [m.peer for m in control(daemons[pid])
                if isinstance(m, Introduce) and m.peer.player_id == 1]

    assert not any(introductions_of_1(pid) for pid in spots)  # a list introduces nobody
    # 1 dials 2: 2 is told, with 1's cell and certificate, so that it dials back
    ids = {pid: coord.store.by_player(pid).daemon_id for pid in spots}  # type: ignore[union-attr]
    say(w, daemons[1], Dial(ids[2]))
    # dials of daemons never offered to 1 (26 cells away, another map) introduce nobody
    say(w, daemons[1], Dial(ids[4]))
    say(w, daemons[1], Dial(ids[5]))
    w.sim.run_until(w.sim.now + 0.5)
    (intro,) = introductions_of_1(2)
    assert (intro.x, intro.y, intro.key) == (100, 100, daemons[1].endpoint.identity.public_key)
    assert intro.certificate is not None
    assert verify_certificate_untrusted(
        intro.certificate, [w.coordinator._signing_key.public_key()], intro.key,
        w.wall()).player_id == 1
    assert not any(introductions_of_1(pid) for pid in (3, 4, 5))
    assert coord.refused_dials == {"not_offered": 2}


def test_dials_are_rate_limited_per_daemon() -> None:
    w, _ = world(41)
    coord = w.coordinator
    a, b = w.daemon(1), w.daemon(2)
    w.sim.run_until(1.0)
    say(w, b, Presence("payon", 50, 52))
    w.sim.run_until(1.2)
    say(w, a, Presence("payon", 50, 50))
    w.sim.run_until(1.5)
    target = coord.store.by_player(2).daemon_id  # type: ignore[union-attr]
    burst = int(coord.settings.dial_burst)
    for _ in range(burst + 10):
        say(w, a, Dial(target))
    w.sim.run_until(1.6)
    introductions = [m for m in control(b) if isinstance(m, Introduce)]
    assert len(introductions) == burst
    assert coord.refused_dials["rate_limited"] == 10


def test_a_relay_only_daemon_never_has_its_address_handed_out() -> None:
    w, _ = world(5)
    hidden, seeker = w.daemon(1), w.daemon(2)
    w.sim.run_until(1.0)
    say(w, hidden, Presence("payon", 50, 50, 13, True))
    w.sim.run_until(1.2)
    say(w, seeker, Presence("payon", 52, 50))
    w.sim.run_until(1.5)
    (offer,) = [m for m in control(seeker) if isinstance(m, Candidates)]
    assert [(e.player_id, e.address) for e in offer.peers] == [(1, None)]
    # the hidden one came first (an empty list) and has room: it gets a fresh list
    # naming the seeker at once, with its address (the seeker is not hiding)
    first, fresh = [m for m in control(hidden) if isinstance(m, Candidates)]
    assert first.peers == ()
    assert [(e.player_id, e.address) for e in fresh.peers] == [(2, "10.9.1.2:7000")]
    say(w, seeker, Dial(offer.peers[0].daemon_id))
    w.sim.run_until(2.0)
    (intro,) = [m for m in control(hidden) if isinstance(m, Introduce)]
    assert intro.peer.address == "10.9.1.2:7000"
    # the hidden one's own dial: the seeker is told of it without an address
    say(w, hidden, Dial(fresh.peers[0].daemon_id))
    w.sim.run_until(3.0)
    (back,) = [m for m in control(seeker) if isinstance(m, Introduce)]
    assert (back.peer.player_id, back.peer.address) == (1, None)


def test_a_standing_daemon_with_room_hears_at_once_of_one_that_arrives_in_view() -> None:
    """It reports only every discovery_interval while it stands; the arrival's
    report gets it a fresh list, unless its list is full (then it waits)."""
    w, _ = world(51)
    standing, full, arriving = w.daemon(1), w.daemon(2), w.daemon(3)
    w.sim.run_until(1.0)
    say(w, standing, Presence("payon", 50, 50, 13))
    say(w, full, Presence("payon", 60, 50, 1))  # wants one: its list is full with 1
    w.sim.run_until(1.2)
    say(w, arriving, Presence("payon", 55, 50))
    w.sim.run_until(1.5)
    lists = [m for m in control(standing) if isinstance(m, Candidates)]
    assert [[e.player_id for e in m.peers] for m in lists] == [[], [2], [3, 2]]
    full_lists = [m for m in control(full) if isinstance(m, Candidates)]
    assert [[e.player_id for e in m.peers] for m in full_lists] == [[1]]


def test_reports_reach_the_operator() -> None:
    w, coord = world(6)
    daemon = w.daemon(42)
    w.sim.run_until(1.0)
    say(w, daemon, Report("critical", "auth_failures", bytes(32), "5 failed handshakes"))
    w.sim.run_until(1.5)
    (report,) = [e for e in coord.events if isinstance(e, ReportReceived)]
    assert report.player_id == 42 and report.report.code == "auth_failures"
    assert len(w.coordinator.reports) == 1


def test_certified_daemons_link_and_an_uncertified_one_is_refused() -> None:
    """The whole credential flow: a token to the coordinator, a certificate back,
    peers that admit only certificates from that coordinator."""
    w, _ = world(7)
    nodes = []
    for player in (1, 2):
        identity = Identity.from_private_bytes(w.rng.randbytes(32))
        token = mint_token(w.issuer, account_id=player, player_id=player,
                           daemon_key=identity.public_key, lifetime=600, now=w.wall())
        node = EndpointNode((f"10.9.2.{player}", 7000),
                            Endpoint(identity, random_bytes=w.rng.randbytes))
        w.sim.add_node(node)
        node.endpoint.connect(w.coordinator.public_key, COORD_ADDR, w.sim.now, credential=token)
        nodes.append(node)
    w.sim.run_until(1.0)
    for node in nodes:
        reply = registered(node)
        assert reply is not None
        node.endpoint.set_certificate(reply.certificate)
        trusted = [Ed25519PublicKey.from_public_bytes(reply.signing_key)]
        node.endpoint.set_peer_policy(certificate_policy(trusted, w.wall))
    a, b = nodes
    a.endpoint.connect(b.endpoint.identity.public_key, b.address, w.sim.now)
    w.sim.run_until(2.0)
    assert any(e.peer == b.endpoint.identity.public_key for e in a.events_of(SessionEstablished))
    assert any(e.peer == a.endpoint.identity.public_key for e in b.events_of(SessionEstablished))
    # a daemon without a certificate from this coordinator is refused by both
    stranger = EndpointNode(("10.9.2.9", 7000), Endpoint(
        Identity.from_private_bytes(w.rng.randbytes(32)), random_bytes=w.rng.randbytes))
    w.sim.add_node(stranger)
    stranger.endpoint.connect(a.endpoint.identity.public_key, a.address, w.sim.now)
    w.sim.run_until(4.0)
    assert stranger.events_of(SessionEstablished) == []
    assert a.endpoint.statistics().drops.get("peer_refused", 0) > 0
