"""The node's bandwidth policy (spec 3.3) on the simulated network, in virtual time:
adaptive quality of position and effect rates, and nearer peers first."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from p2pd.channels.position_codec import PositionState
from p2pd.config import DaemonConfig, P2PSettings, SyncSettings
from p2pd.crypto.identity import Identity
from p2pd.ipc.errors import IpcError
from p2pd.ipc.messages import Chat, LegendData, Position
from p2pd.node import Node, proximity_weight
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import CoreNode

A_ADDR = ("10.2.0.1", 7000)
B_ADDR = ("10.2.0.2", 7000)


# The chat here is load for the senders' bandwidth and queue policy, far above
# what a player types (20 lines a second; hundreds queued at once): the
# receivers allow it. The receive-side flood limit ([sync] chat_rate and
# chat_burst) has its own tests (tests/test_sync.py).
LOAD_ALLOWED = SyncSettings(chat_rate=1000.0, chat_burst=10_000)


def make_node(rng: random.Random, address: tuple[str, int], **p2p: object) -> CoreNode[Node]:
    config = DaemonConfig(source=Path("test.ini"), p2p=P2PSettings(**p2p),  # type: ignore[arg-type]
                          sync=LOAD_ALLOWED)
    return CoreNode(address, Node(config, Identity.from_private_bytes(rng.randbytes(32)),
                                 random_bytes=random.Random(rng.random()).randbytes))


def linked(net: SimNetwork, count: int = 2,
           **p2p: object) -> tuple[Simulation, list[CoreNode[Node]]]:
    rng = random.Random(3)
    nodes = [make_node(rng, (f"10.2.0.{i + 1}", 7000), **p2p) for i in range(count)]
    sim = Simulation(net, nodes)
    hub = nodes[0].core
    for other in nodes[1:]:
        hub.connect(other.address, other.core.public_key, sim.now)

    def all_linked() -> bool:
        return all(
            len(n.core.peers(sim.now)) == (count - 1 if n is nodes[0] else 1)
            and all(p["state"] == "established" for p in n.core.peers(sim.now))
            for n in nodes)

    assert sim.run_while(lambda: not all_linked(), 10.0)
    return sim, nodes


def position(x: int, tick: int) -> Position:
    # one cell per 50 ms (the tests send 20 a second): speed 50, so the moves are possible
    return Position(id=1, map="prontera", x=x, y=100, dir=6, speed=50, moving=True, tick=tick)


def zigzag(x: int, tick: int) -> Position:
    """A walk east that turns at every step (north-east, south-east, ...): every
    position is a course change, none of which dead reckoning can predict, so
    each one takes the position rate's token (a straight walk's next cells
    take none: see Node._position_allowed)."""
    up = x % 2 == 1
    return Position(id=1, map="prontera", x=x, y=101 if up else 100, dir=7 if up else 5,
                    speed=50, moving=True, tick=tick)


def test_loss_lowers_the_position_rate_first_and_it_recovers_when_the_path_clears() -> None:
    net = SimNetwork(5, LinkProfile(delay=0.02))
    sim, (a, b) = linked(net, position_update_rate=10.0)
    peer = b.core.public_key
    sent_per_phase: list[tuple[int, float]] = []
    for profile in (LinkProfile(delay=0.02), LinkProfile(delay=0.02, loss=0.3),
                    LinkProfile(delay=0.02)):
        net.set_path(A_ADDR, B_ADDR, profile)
        sent = 0
        start = sim.now
        for i in range(300):  # 15 s: positions at 20/s, chat at 20/s
            now = start + i * 0.05
            sim.run_until(now)
            x = len(sent_per_phase) * 300 + i  # on and on: no jump back at a new phase
            sent += a.core.send_event(zigzag(x, int(now * 1000)), (), now)["sent"]
            a.core.send_event(Chat(id=2, text=f"line {i}"), (), now)
        sent_per_phase.append((sent, a.core.endpoint.quality(peer, sim.now)))
    (clean, q_clean), (lossy, q_lossy), (cleared, q_cleared) = sent_per_phase
    assert q_clean == 1.0 and q_lossy < 1.0 and q_cleared == 1.0
    assert lossy < 0.8 * clean  # positions throttled while the path lost packets
    assert cleared > lossy
    # reliable data was never throttled: every chat line arrived, in order
    sim.run_until(sim.now + 2.0)
    chats = [m["text"] for m in b.core.take_notifications() if m.get("event") == "chat"]
    assert chats == [f"line {i}" for i in range(300)] * 3


def test_peers_are_prioritized_by_distance_in_cells() -> None:
    own = PositionState("prontera", 100, 100, 0, 150, False, 0)
    near = PositionState("prontera", 102, 99, 0, 150, False, 0)
    edge = PositionState("prontera", 114, 100, 0, 150, False, 0)
    far = PositionState("prontera", 150, 150, 0, 150, False, 0)
    elsewhere = PositionState("geffen", 100, 100, 0, 150, False, 0)
    weights = [proximity_weight(own, p) for p in (own, near, edge, far, elsewhere)]
    assert weights == sorted(weights, reverse=True)
    assert weights[0] == 1.0 and weights[2] == 0.5
    assert proximity_weight(None, near) == proximity_weight(own, None) == 0.25


def test_the_node_gives_nearer_peers_more_weight_as_positions_arrive() -> None:
    net = SimNetwork(6, LinkProfile(delay=0.01))
    sim, nodes = linked(net, count=3)
    hub = nodes[0].core
    now = sim.now
    hub.send_event(position(100, 1), (), now)
    nodes[1].core.send_event(position(101, 1), (), now)  # one cell away
    nodes[2].core.send_event(position(140, 1), (), now)  # 40 cells away
    sim.run_until(now + 0.5)
    sessions = hub.endpoint._sessions
    near, far = (sessions[n.core.public_key].priority for n in nodes[1:])
    assert near > far


def test_a_legend_record_larger_than_a_datagram_travels_in_fragments() -> None:
    net = SimNetwork(7, LinkProfile(delay=0.01, loss=0.1))
    sim, (a, b) = linked(net)
    rng = random.Random(1)  # text that does not compress
    dialogue = tuple((f"line{i}", rng.randbytes(1600).hex()) for i in range(8))
    legend = LegendData(id=3, ai_entity_id=77, kind="dialogue", data=dialogue, version=1)
    assert a.core.send_event(legend, (), sim.now) == {"sent": 1, "rate_limited": 0,
                                                      "out_of_view": 0, "absent": 0}
    sim.run_until(sim.now + 5.0)
    (got,) = [m for m in b.core.take_notifications() if m.get("event") == "legend"]
    assert got["data"] == dict(dialogue) and got["ai_entity_id"] == 77
    stats = a.core.endpoint.session_statistics(b.core.public_key)
    assert stats.packets_sent > 12  # 25 KB of hex, compressed to about half: many datagrams


def test_a_full_peer_queue_refuses_the_event_for_every_target() -> None:
    net = SimNetwork(8, LinkProfile(delay=0.01))
    sim, (hub, stuck, fine) = linked(net, count=3)
    net.set_path(hub.address, stuck.address, LinkProfile(blackholes=((0.0, 1e9),)))
    stuck_key, fine_key = stuck.core.public_key, fine.core.public_key
    text = "x" * 500
    busy = None
    for i in range(2000):
        try:
            hub.core.send_event(Chat(id=i, text=text), (), sim.now)
        except IpcError as error:
            busy = error
            break
        sim.run_until(sim.now + 0.001)
    assert busy is not None and busy.code == "busy" and stuck_key.hex()[:16] in busy.message
    sent_before = dict(hub.core._links[fine_key].sent)
    with pytest.raises(IpcError, match="busy"):
        hub.core.send_event(Chat(id=9999, text=text), (), sim.now)
    assert hub.core._links[fine_key].sent == sent_before  # nothing queued for anyone
    # the peer that can hear still gets every line that was accepted, once, in order
    sim.run_until(sim.now + 3.0)
    lines = [m for m in fine.core.take_notifications() if m.get("event") == "chat"]
    assert len(lines) == i


def test_a_peer_position_with_an_impossible_map_name_is_counted_not_delivered() -> None:
    net = SimNetwork(9, LinkProfile(delay=0.01))
    sim, (a, b) = linked(net)
    state = PositionState("Prontera!", 1, 2, 0, 150, False, 0)  # not a map name the game uses
    a.core.endpoint.send_position(b.core.public_key, state, sim.now)
    sim.run_until(sim.now + 0.5)
    assert [m for m in b.core.take_notifications() if m.get("event") == "position"] == []
    assert b.core.stats(sim.now)["errors"]["invalid_events"] == 1
