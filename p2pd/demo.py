"""The protocol-core demo: two session endpoints over a simulated bad network,
in virtual time, and what happened (``p2pd protocol-demo``)."""

from __future__ import annotations

import random

from p2pd.channels.position_codec import PositionState
from p2pd.crypto.identity import Identity
from p2pd.session.config import EncryptionLevel, SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import MessageReceived, PositionReceived, SessionEstablished
from p2pd.session.stats import SessionStatistics
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import EndpointNode
from p2pd.wire.types import PacketType


def run_demo(*, seed: int, loss: float, delay: float, duration: float,
             level: EncryptionLevel) -> None:
    rng = random.Random(seed)
    config = SessionConfig(encryption_level=level)
    profile = LinkProfile(loss=loss, delay=delay, jitter=delay / 2,
                          reorder=0.05, duplicate=0.02, corrupt=0.01)
    network = SimNetwork(seed, profile)
    nodes = []
    for name, port in (("alice", 7000), ("bob", 7001)):
        own = random.Random(rng.random())
        endpoint = Endpoint(Identity.from_private_bytes(own.randbytes(32)), config,
                            random_bytes=own.randbytes)
        nodes.append(EndpointNode((f"{name}.lan", port), endpoint))
    alice, bob = nodes
    sim = Simulation(network, nodes)
    alice.endpoint.connect(bob.endpoint.identity.public_key, bob.address, 0.0)
    bob_key, alice_key = bob.endpoint.identity.public_key, alice.endpoint.identity.public_key
    print(f"demo: seed {seed}, loss {loss:.0%}, one-way delay {delay * 1000:.0f} ms"
          f" +jitter, encryption_level={level.value}, {duration:.0f} s of virtual time")
    sent = 0
    step = 1.0 / 5  # position_update_rate = 5 per second
    t = 0.0
    while t < duration:
        t += step
        sim.run_until(t)
        if alice.events_of(SessionEstablished) and bob.events_of(SessionEstablished):
            position = PositionState("prontera", 150 + sent % 30, 180, 6, 150, True,
                                     round(t * 1000))
            alice.endpoint.send_position(bob_key, position, t)
            sent += 1
            if sent % 25 == 0:
                bob.endpoint.send(alice_key, PacketType.CHAT_MESSAGE, b"hi from bob " * 12, t)
    sim.run_until(duration + 1.0)
    for node in nodes:
        established = [when for when, e in node.events if isinstance(e, SessionEstablished)]
        got = node.events_of(MessageReceived)
        print(f"\n{node.address[0]}: session established at "
              f"{established[0] if established else float('nan'):.3f} s; "
              f"{len(got)} messages received")
        peer = bob_key if node is alice else alice_key
        _print_stats(node.endpoint.session_statistics(peer))
        print(f"  endpoint drops: {node.endpoint.statistics().drops or 'none'}")
    stats = network.statistics()
    print(f"\nnetwork: {stats.sent} datagrams sent, {stats.delivered} delivered, "
          f"{stats.lost} lost, {stats.corrupted} corrupted, {stats.duplicated} duplicated")
    print(f"positions: {sent} sent by alice, {len(bob.events_of(PositionReceived))} "
          "reached bob (unreliable: the newest that gets through counts); chat: "
          f"{len(alice.events_of(MessageReceived))} of {sent // 25} from bob (reliable)")


def _print_stats(s: SessionStatistics) -> None:
    rtt = s.rtt
    print(f"  sent {s.packets_sent} packets / {s.bytes_sent} B, received {s.packets_received}"
          f" / {s.bytes_received} B, handshakes {s.handshakes}, rekeys {s.rekeys}")
    if rtt.smoothed is not None and rtt.min is not None and rtt.max is not None:
        print(f"  rtt smoothed {rtt.smoothed * 1000:.1f} ms, min {rtt.min * 1000:.1f}, "
              f"max {rtt.max * 1000:.1f}, {rtt.samples} samples")
    print(f"  session drops: {s.drops or 'none'}")
