"""NAT traversal in virtual time: daemons behind simulated NATs, a STUN server, a TURN
server and the real coordinator on the simulated network (p2pd.sim.nat, p2pd.sim.natservers).

The matrix: every pair of NAT kinds connects, directly wherever the NATs allow it, through
the TURN server otherwise (or the coordinator's relay without one)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2pd.config import CoordinatorSettings, DaemonConfig, P2PSettings
from p2pd.config import NatSettings as NatConfig
from p2pd.coordinator.credentials import mint_token
from p2pd.crypto.identity import Identity
from p2pd.nat.discovery import Behaviour
from p2pd.node import Node
from p2pd.sim.nat import (
    FULL_CONE,
    PORT_RESTRICTED,
    RESTRICTED,
    SYMMETRIC,
    NatModel,
    SimNat,
)
from p2pd.sim.natservers import SimStunServer, SimTurnServer
from p2pd.sim.network import LinkProfile
from tests.test_coordinator import COORD_ADDR, WALL, World, world
from tests.test_relay import Daemon, chat, stand

STUN = ("192.0.2.20", 3478)
TURN = ("192.0.2.30", 3478)
PUBLIC = None  # a daemon with a public address, no NAT
KINDS: dict[str, NatModel | None] = {
    "public": PUBLIC, "full_cone": FULL_CONE, "restricted": RESTRICTED,
    "port_restricted": PORT_RESTRICTED, "symmetric": SYMMETRIC,
}
NO_DIRECT = {frozenset({"symmetric"}), frozenset({"symmetric", "port_restricted"})}


class Lab:
    def __init__(self, seed: int, *, turn: bool = False) -> None:
        self.w: World = world(seed)[0]
        self.stun = SimStunServer(STUN[0], "192.0.2.21", STUN[1], STUN[1] + 1,
                                  wake=self.w.sim.flush)
        for node in self.stun.nodes():
            self.w.sim.add_node(node)
        self.turn: SimTurnServer | None = None
        if turn:
            self.turn = SimTurnServer(TURN, {"alice": "wonderland"}, self.w.sim.add_node,
                                      wake=self.w.sim.flush)
            for node in self.turn.nodes():
                self.w.sim.add_node(node)
        self.nats: dict[int, SimNat] = {}

    def daemon(self, player: int, x: int, model: NatModel | None, *, punch_ttl: int = 2,
               relay_only: bool = False) -> Daemon:
        w = self.w
        private = (f"10.0.{player}.2", 7000)
        public_ip = f"203.0.113.{player}"
        if model is None:
            private = (public_ip, 7000)
        else:
            nat = SimNat(public_ip, {private[0]}, model, random.Random(player))
            w.net.add_nat(nat)
            self.nats[player] = nat
        identity = Identity.from_private_bytes(w.rng.randbytes(32))
        nat_config = NatConfig(stun_servers=(f"{STUN[0]}:{STUN[1]}",), punch_ttl=punch_ttl)
        if self.turn is not None:
            nat_config = NatConfig(stun_servers=nat_config.stun_servers, punch_ttl=punch_ttl,
                                   turn_server=f"{TURN[0]}:{TURN[1]}", turn_username="alice",
                                   turn_password="wonderland")
        config = DaemonConfig(
            source=Path("test.ini"), p2p=P2PSettings(max_peers=2),
            coordinator=CoordinatorSettings(public_key=w.coordinator.public_key, backups=0,
                                            relay_only=relay_only, embedded=False),
            nat=nat_config)
        node = Node(config, identity, epoch=WALL, random_bytes=random.Random(player).randbytes)
        token = mint_token(w.issuer, account_id=player, player_id=player,
                           daemon_key=identity.public_key, lifetime=3600, now=w.wall())
        daemon = Daemon(private, node)
        w.sim.add_node(daemon)
        node.start_nat([STUN], TURN if self.turn else None, [private], w.sim.now,
                       random_bytes=random.Random(player + 100).randbytes)
        node.start_mesh(COORD_ADDR, token, w.sim.now, rng=random.Random(player))
        stand(w, daemon, x)
        return daemon

    def linked(self, a: Daemon, b: Daemon, limit: float) -> bool:
        return self.w.sim.run_while(lambda: a.path_to(b) is None or b.path_to(a) is None,
                                    self.w.sim.now + limit)

    def settle(self, a: Daemon, b: Daemon, path: str, limit: float) -> bool:
        return self.w.sim.run_while(lambda: a.path_to(b) != path or b.path_to(a) != path,
                                    self.w.sim.now + limit)


PAIRS = [(x, y) for i, x in enumerate(KINDS) for y in list(KINDS)[i:]]


@pytest.mark.parametrize(("kind_a", "kind_b"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_every_pair_of_nat_kinds_connects_direct_where_possible(kind_a: str,
                                                                kind_b: str) -> None:
    lab = Lab(7)
    a = lab.daemon(1, 100, KINDS[kind_a])
    b = lab.daemon(2, 104, KINDS[kind_b])
    assert lab.linked(a, b, 20.0)
    direct = frozenset({kind_a, kind_b}) not in NO_DIRECT
    expected = "direct" if direct else "relay"
    assert lab.settle(a, b, expected, 15.0), (a.path_to(b), b.path_to(a))
    chat(lab.w, a, b, f"{kind_a} to {kind_b}")
    lab.w.sim.run_until(lab.w.sim.now + 1.0)
    assert b.chats == [f"{kind_a} to {kind_b}"]
    if direct:
        assert lab.w.coordinator.relayed_packets <= 4  # a relayed handshake copy at most


@pytest.mark.parametrize(("kind_a", "kind_b"), [("symmetric", "symmetric"),
                                                ("symmetric", "port_restricted")])
def test_where_no_direct_path_exists_the_turn_server_relays(kind_a: str, kind_b: str) -> None:
    lab = Lab(8, turn=True)
    a = lab.daemon(1, 100, KINDS[kind_a])
    b = lab.daemon(2, 104, KINDS[kind_b])
    assert lab.linked(a, b, 20.0)
    assert lab.settle(a, b, "turn", 10.0), (a.path_to(b), b.path_to(a))
    relayed = lab.w.coordinator.relayed_packets
    chat(lab.w, a, b, "through turn")
    chat(lab.w, b, a, "and back")
    lab.w.sim.run_until(lab.w.sim.now + 1.0)
    assert b.chats == ["through turn"] and a.chats == ["and back"]
    assert lab.turn is not None and lab.turn.relayed_packets > 0
    assert lab.w.coordinator.relayed_packets - relayed <= 2
    status = a.core.nat_status(lab.w.sim.now)
    assert any(c.startswith("relay 192.0.2.30:") for c in status["candidates"])
    assert status["turn"]["state"] == "allocated"
    # a peer's host address is reachable from its own network only: the TURN server
    # is never asked to permit, bind or relay to one (coturn in the NAT lab closed the
    # whole allocation when such a send failed)
    assert lab.turn.peer_ips and not any(ip.startswith("10.") for ip in lab.turn.peer_ips)


def test_with_the_turn_server_down_symmetric_pairs_still_connect_through_the_coordinator() -> None:
    lab = Lab(9, turn=True)
    assert lab.turn is not None
    lab.turn.down = True
    a = lab.daemon(1, 100, SYMMETRIC)
    b = lab.daemon(2, 104, SYMMETRIC)
    assert lab.linked(a, b, 20.0)
    assert lab.settle(a, b, "relay", 10.0)
    assert a.core.nat_status(lab.w.sim.now)["turn"]["state"] != "allocated"


def test_low_ttl_punches_beat_the_conntrack_conflict_of_two_masquerade_nats() -> None:
    """Everything the coordinator says to B takes 80 ms: one side starts punching
    well before the other, so its first packet reaches the far NAT before the far
    side sent anything. Normal-TTL punches leave a conntrack entry there that
    makes a NAT remap its flow: no direct path. Low-TTL first punches never reach
    the far NAT, and the path is direct."""
    results = {}
    for ttl in (0, 2):
        lab = Lab(10)
        a = lab.daemon(1, 100, PORT_RESTRICTED, punch_ttl=ttl)
        b = lab.daemon(2, 104, PORT_RESTRICTED, punch_ttl=ttl)
        lab.w.net.set_link(COORD_ADDR, ("203.0.113.2", 7000), LinkProfile(delay=0.08))
        assert lab.linked(a, b, 20.0)
        lab.w.sim.run_until(lab.w.sim.now + 12.0)
        results[ttl] = (a.path_to(b), b.path_to(a))
        if ttl:
            assert a.core.nat.counters.punches > 0  # type: ignore[union-attr]
        else:
            assert sum(lab.nats[n].stats.remapped_by_conflict for n in (1, 2)) > 0
    assert results[2] == ("direct", "direct")
    assert results[0] == ("relay", "relay")


def test_nat_behaviour_discovery_classifies_each_kind() -> None:
    lab = Lab(11)
    daemons = {name: lab.daemon(i + 1, 100 + i, model)
               for i, (name, model) in enumerate(KINDS.items())}
    lab.w.sim.run_until(15.0)
    seen = {name: (d.core.nat.discovery.mapping, d.core.nat.discovery.filtering)  # type: ignore[union-attr]
            for name, d in daemons.items()}
    assert seen == {
        "public": (Behaviour.NO_NAT, Behaviour.ENDPOINT_INDEPENDENT),
        "full_cone": (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ENDPOINT_INDEPENDENT),
        "restricted": (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ADDRESS_DEPENDENT),
        "port_restricted": (Behaviour.ENDPOINT_INDEPENDENT, Behaviour.ADDRESS_AND_PORT_DEPENDENT),
        "symmetric": (Behaviour.ADDRESS_AND_PORT_DEPENDENT,
                      Behaviour.ADDRESS_AND_PORT_DEPENDENT),
    }
    # candidates: a symmetric NAT's server-reflexive address is no use to peers
    full = daemons["full_cone"].core.nat_status(lab.w.sim.now)["candidates"]
    assert full == ["host 10.0.2.2:7000", "srflx 203.0.113.2:7000"]
    sym = daemons["symmetric"].core.nat_status(lab.w.sim.now)["candidates"]
    assert sym == ["host 10.0.5.2:7000"]


def test_relay_only_sends_nothing_with_its_address_to_the_peer() -> None:
    lab = Lab(12, turn=True)
    a = lab.daemon(1, 100, FULL_CONE, relay_only=True)
    b = lab.daemon(2, 104, FULL_CONE)
    assert lab.linked(a, b, 20.0)
    lab.w.sim.run_until(lab.w.sim.now + 10.0)
    assert a.path_to(b) in ("turn", "relay") and b.path_to(a) in ("turn", "relay")
    a_ips = {"10.0.1.2", "203.0.113.1"}
    assert not any(source[0] in a_ips for source in b.sources), b.sources
    status = a.core.nat_status(lab.w.sim.now)
    assert status["local"] == [] and all(c.startswith("relay ") for c in status["candidates"])
    entry = b.core.mesh.candidates[a.core.public_key]  # type: ignore[union-attr]
    assert entry.address is None and all(c.startswith("relay ") for c in entry.candidates)


def test_a_relayed_link_upgrades_to_direct_when_the_direct_path_opens() -> None:
    lab = Lab(13)
    a = lab.daemon(1, 100, FULL_CONE)
    b_public = ("203.0.113.2", 7000)
    lab.w.net.set_path(("203.0.113.1", 7000), b_public,
                       LinkProfile(delay=0.005, blackholes=((0.0, 12.0),)))
    b = lab.daemon(2, 104, FULL_CONE)
    assert lab.linked(a, b, 20.0)
    assert a.path_to(b) == b.path_to(a) == "relay"
    assert lab.settle(a, b, "direct", 30.0), (a.path_to(b), b.path_to(a))
    assert lab.w.sim.now < 12.0 + 10.0


def test_a_mapping_change_is_survived() -> None:
    lab = Lab(14)
    a = lab.daemon(1, 100, FULL_CONE)
    b = lab.daemon(2, 104, PORT_RESTRICTED)
    assert lab.linked(a, b, 20.0)
    assert lab.settle(a, b, "direct", 10.0)
    before = a.core.endpoint.address_of(b.core.public_key)
    lab.nats[2].flush()  # B's router forgets every mapping: B's packets leave from new ports
    lab.w.sim.run_until(lab.w.sim.now + 1.0)
    chat(lab.w, b, a, "after the change")
    lab.w.sim.run_until(lab.w.sim.now + 15.0)
    assert a.chats == ["after the change"]
    # A followed B's authenticated packets to B's new mapping; the path stayed direct
    after = a.core.endpoint.address_of(b.core.public_key)
    assert after != before and after[0] == before[0]
    assert a.path_to(b) == b.path_to(a) == "direct"


def test_keepalives_hold_a_short_nat_timeout_open() -> None:
    lab = Lab(15)
    short = NatModel(PORT_RESTRICTED.mapping, PORT_RESTRICTED.filtering, timeout=25.0)
    a = lab.daemon(1, 100, short)
    b = lab.daemon(2, 104, short)
    assert lab.linked(a, b, 20.0)
    assert lab.settle(a, b, "direct", 10.0)
    lab.w.sim.run_until(lab.w.sim.now + 120.0)  # idle: only keepalives flow
    assert a.path_to(b) == b.path_to(a) == "direct"
    assert lab.nats[1].stats.expired == 0 and lab.nats[2].stats.expired == 0
