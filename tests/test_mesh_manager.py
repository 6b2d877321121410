"""The P2PManager (p2pd.mesh.manager) with real endpoints and the real coordinator,
in virtual time: links follow proximity, stay within max_peers, survive the
coordinator going away, and the manager reconnects when it comes back."""

from __future__ import annotations

import random

from p2pd.coordinator.credentials import mint_token
from p2pd.crypto.identity import Identity
from p2pd.mesh.manager import ManagerSettings, P2PManager
from p2pd.mesh.policy import MeshSettings
from p2pd.session.endpoint import Endpoint
from p2pd.sim.network import LinkProfile
from tests.test_coordinator import COORD_ADDR, World, world


class ManagedNode:
    """An endpoint and its manager, as the node will hold them."""

    def __init__(self, w: World, player: int, settings: ManagerSettings) -> None:
        self.address = (f"10.9.3.{player}", 7000)
        identity = Identity.from_private_bytes(w.rng.randbytes(32))
        self.key = identity.public_key
        self.endpoint = Endpoint(identity, random_bytes=random.Random(w.rng.random()).randbytes)
        token = mint_token(w.issuer, account_id=player, player_id=player, daemon_key=self.key,
                           lifetime=3600, now=w.wall())
        self.manager = P2PManager(self.endpoint, w.coordinator.public_key, COORD_ADDR, token,
                                  settings, rng=random.Random(player), clock=w.wall)
        self.manager.start(w.sim.now)

    def _events(self, now: float) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.manager.on_event(event, now)

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.endpoint.receive_datagram(data, addr, now)
        self._events(now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._events(now)
        deadline = self.manager.deadline()
        if deadline is not None and now >= deadline:
            self.manager.handle_timer(now)
            self._events(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        self.endpoint.flush(now)
        return self.endpoint.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        times = [t for t in (self.endpoint.get_timer(), self.manager.deadline()) if t is not None]
        return min(times) if times else None


SETTINGS = ManagerSettings(mesh=MeshSettings(max_peers=2, backups=1, min_lifetime=5.0),
                           discovery_interval=5.0, plan_interval=0.5)


def town(w: World, count: int) -> list[ManagedNode]:
    nodes = [ManagedNode(w, i + 1, SETTINGS) for i in range(count)]
    for node in nodes:
        w.sim.add_node(node)
    return nodes


def test_links_follow_proximity_within_max_peers_and_backups() -> None:
    w, _ = world(11)
    nodes = town(w, 6)
    spots = [100, 102, 104, 106, 130, 160]  # x on prontera, y = 100
    for node, x in zip(nodes, spots, strict=True):
        node.manager.set_own_position("prontera", x, 100, w.sim.now)
    w.sim.run_until(10.0)
    first = nodes[0].manager
    assert first.registered is not None and not first.degraded
    assert len(first.active()) <= 2 and len(first.backups()) <= 1
    near = {nodes[1].key, nodes[2].key, nodes[3].key}
    assert set(first.active()) | set(first.backups()) <= near  # 130 and 160: out of range
    for node in nodes:  # nobody holds more than the policy allows
        assert len(node.manager.active()) <= 2 and len(node.manager.backups()) <= 1
    # the player at 160 is alone: nobody within 14 cells
    assert nodes[5].manager.links == {}
    # player 1 walks away to the far end: its links go, the far player's come
    for x in range(100, 161, 2):
        nodes[0].manager.set_own_position("prontera", x, 100, w.sim.now)
        w.sim.run_until(w.sim.now + 1.0)
    w.sim.run_until(w.sim.now + 10.0)
    assert nodes[0].manager.links.keys() == {nodes[5].key}
    assert nodes[5].key in nodes[0].manager.links


def test_without_the_coordinator_links_stay_and_it_reconnects_when_back() -> None:
    w, _ = world(12)
    nodes = town(w, 3)
    for node, x in zip(nodes, (50, 52, 54), strict=True):
        node.manager.set_own_position("payon", x, 50, w.sim.now)
    w.sim.run_until(5.0)
    linked = dict(nodes[0].manager.links)
    assert linked
    # the coordinator's network goes dark for 70 s: longer than inactive_timeout
    for node in nodes:
        w.net.set_path(node.address, COORD_ADDR,
                       LinkProfile(delay=0.005, blackholes=((5.0, 75.0),)))
    w.sim.run_until(70.0)
    assert all(node.manager.degraded for node in nodes)
    assert nodes[0].manager.links.keys() == linked.keys()  # peer links kept working
    w.sim.run_until(120.0)  # back: the managers found it again, with backoff
    assert not any(node.manager.degraded for node in nodes)
    assert len(w.coordinator.store) == 3  # all registered again (the same tokens, addresses)
