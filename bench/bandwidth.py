"""Bytes on the wire per player-second for positions: p2pd against a naive stream.

The scene: 11 players in one view range, every one linked to the 10 others
(55 sessions on the in-process simulated network, 20 ms one way, no loss), each
sending its position to each peer 5 times a second for 60 virtual seconds. The
movement follows DOMAIN.md: a player stands (1-8 s, sometimes turning) or walks
(1-5 s, one cell per 150 ms, diagonal steps 1.4x slower, the path bending by
45 degrees about every 2 s) in one of 8 directions; in the mixed scene a
player alternates standing and walking, so about two in five walk at any
moment, as in a town. The "stand" and "walk" scenes keep every player in one
state.

- naive: every update is a full state (the compact msgpack payload the IPC API
  uses, about 30 bytes) in a datagram of its own: UDP/IPv4 headers (28) +
  the protected packet's overhead + payload, 5 per second per peer.
- p2pd: what the session core really sends, measured datagram by datagram
  (with 28 bytes of UDP/IPv4 headers added to each): delta-coded positions
  against the state the peer acknowledged, acknowledgements piggybacked on the
  peer's own positions, nothing for a player whose place the peer already
  has, PINGs, padding (level high) included; handshakes excluded.

Figures per encryption level (high pads to 32-byte steps, low does not) and
per phase (all standing, all walking) for transparency. Goal from the issue:
``ratio`` (p2pd / naive at the default level, high) at most 0.40. Ends with
one JSON line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from p2pd.channels.position_codec import PositionState
from p2pd.channels.positions import STEPS
from p2pd.crypto.identity import Identity
from p2pd.crypto.transport import OVERHEAD
from p2pd.ipc.messages import Position
from p2pd.ipc.peer_codec import encode_peer_event
from p2pd.session.config import EncryptionLevel, SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import SessionEstablished
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import EndpointNode

PLAYERS = 11  # each linked to the 10 others
RATE = 5.0  # position updates per second per peer
SECONDS = 60.0
UDP_IP = 28  # IPv4 + UDP headers per datagram


@dataclass
class Walker:
    """One player's movement: stand or walk, cell by cell, as DOMAIN.md says."""

    rng: random.Random
    x: int
    y: int
    dir: int = 0
    walking: bool = True  # the first phase flips it: players start standing
    until: float = 0.0
    next_step: float = 0.0
    mode: str = "mixed"  # "mixed", "stand" or "walk"

    def state(self, now: float) -> PositionState:
        if now >= self.until:  # the next phase: walk or stand, in a new direction
            if self.mode == "mixed":
                self.walking = not self.walking
            else:
                self.walking = self.mode == "walk"
            self.dir = self.rng.randrange(8)
            self.until = now + (self.rng.uniform(1, 5) if self.walking
                                else self.rng.uniform(1, 8))
            self.next_step = now
        if not self.walking and self.rng.random() < 0.02:
            self.dir = self.rng.randrange(8)  # turning in place, about every 10 s
        if self.walking and self.rng.random() < 0.1:
            self.dir = (self.dir + self.rng.choice((-1, 1))) % 8  # paths bend, every ~2 s
        while self.walking and now >= self.next_step:
            dx, dy = STEPS[self.dir]
            self.x = min(max(self.x + dx, 0), 399)
            self.y = min(max(self.y + dy, 0), 399)
            self.next_step += 0.150 * (1.4 if dx and dy else 1.0)
        return PositionState("prontera", self.x, self.y, self.dir, 150, self.walking,
                             int(now * 1000) + 10_000_000)


def naive_bytes_per_update(state: PositionState) -> int:
    position = Position(id=0, map=state.map, x=state.x, y=state.y, dir=state.dir,
                        speed=state.speed, moving=state.moving, tick=state.tick)
    _, payload = encode_peer_event(position)
    return UDP_IP + OVERHEAD + len(payload)


def run(level: EncryptionLevel, mode: str, seed: int = 1) -> tuple[float, float, dict[str, int]]:
    """(p2pd bytes, naive bytes) per player-second, and channel counters summed."""
    rng = random.Random(seed)
    net = SimNetwork(seed, LinkProfile(delay=0.020))
    config = SessionConfig(encryption_level=level)
    nodes = []
    for i in range(PLAYERS):
        own = random.Random(rng.random())
        endpoint = Endpoint(Identity.from_private_bytes(own.randbytes(32)), config,
                            random_bytes=own.randbytes)
        nodes.append(EndpointNode((f"10.1.0.{i + 1}", 7000), endpoint))
    sim = Simulation(net, nodes)
    keys = [n.endpoint.identity.public_key for n in nodes]
    for i, node in enumerate(nodes):
        for j in range(i + 1, PLAYERS):
            node.endpoint.connect(keys[j], nodes[j].address, 0.0)
    links = PLAYERS * (PLAYERS - 1)
    assert sim.run_while(
        lambda: sum(len(n.events_of(SessionEstablished)) for n in nodes) < links, 10.0)
    walkers = [Walker(random.Random(seed * 100 + i), 100 + 3 * i, 100, mode=mode)
               for i in range(PLAYERS)]
    wire = 0
    original = net.send

    def count(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        nonlocal wire
        wire += UDP_IP + len(data)
        original(src, dst, data, now)

    net.send = count  # type: ignore[method-assign]
    naive = 0
    start = sim.now
    ticks = int(SECONDS * RATE)
    for tick in range(ticks):
        for i, node in enumerate(nodes):
            # players are not in phase: each sends at its own offset in the period
            now = start + (tick + i / PLAYERS) / RATE
            sim.run_until(now)
            state = walkers[i].state(now - start)
            for j, key in enumerate(keys):
                if j != i:
                    node.endpoint.send_position(key, state, now)
                    naive += naive_bytes_per_update(state)
    sim.run_until(start + SECONDS)
    counters: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for j, key in enumerate(keys):
            if j != i:
                for name, value in node.endpoint.session_statistics(key).channels.items():
                    counters[name] = counters.get(name, 0) + value
    per = PLAYERS * SECONDS
    return wire / per, naive / per, counters


def main() -> None:
    figures: dict[str, float] = {}
    print(f"{PLAYERS} players, each linked to {PLAYERS - 1} peers, {RATE:g} position"
          f" updates per second per peer, {SECONDS:g} s; bytes per player-second"
          " (UDP/IPv4 headers included)")
    for level in (EncryptionLevel.HIGH, EncryptionLevel.LOW):
        for mode in ("mixed", "stand", "walk"):
            ours, naive, counters = run(level, mode)
            ratio = ours / naive
            name = f"{level.value}_{mode}"
            figures[f"{name}_bytes_per_player_s"] = round(ours, 1)
            figures[f"{name}_ratio"] = round(ratio, 3)
            sent = counters["positions_sent"]
            print(f"  level {level.value:<4} {mode:<5}: p2pd {ours:8.0f} B/s, naive"
                  f" {naive:8.0f} B/s, ratio {ratio:.3f}; positions sent {sent}, not sent:"
                  f" peer had the place {counters['positions_unchanged']}, peer's"
                  f" prediction close enough {counters['positions_predicted']};"
                  f" full states {counters['positions_full']}")
            if mode == "mixed":
                figures[f"{level.value}_naive_bytes_per_player_s"] = round(naive, 1)
    figures["ratio"] = figures["high_mixed_ratio"]
    print(f"ratio (level high, mixed movement): {figures['ratio']:.3f}; goal: at most 0.40")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
