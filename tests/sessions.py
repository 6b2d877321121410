"""Helpers for tests that run endpoint pairs over the simulated network."""

from __future__ import annotations

import random
from dataclasses import dataclass

from p2pd.crypto.identity import Identity
from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint, PeerPolicy
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import EndpointNode

A_ADDR = ("10.0.0.1", 7000)
B_ADDR = ("10.0.0.2", 7000)


def seeded_identity(rng: random.Random) -> Identity:
    return Identity.from_private_bytes(rng.randbytes(32))


def seeded_endpoint(rng: random.Random, config: SessionConfig | None = None,
                    policy: PeerPolicy | None = None) -> Endpoint:
    own = random.Random(rng.random())
    return Endpoint(seeded_identity(own), config, peer_policy=policy, random_bytes=own.randbytes)


@dataclass
class Pair:
    sim: Simulation
    net: SimNetwork
    a: EndpointNode
    b: EndpointNode

    @property
    def a_key(self) -> bytes:
        return self.a.endpoint.identity.public_key

    @property
    def b_key(self) -> bytes:
        return self.b.endpoint.identity.public_key


def make_pair(seed: int = 0, profile: LinkProfile | None = None,
              config: SessionConfig | None = None,
              b_config: SessionConfig | None = None,
              b_policy: PeerPolicy | None = None) -> Pair:
    rng = random.Random(seed)
    net = SimNetwork(seed, profile or LinkProfile())
    a = EndpointNode(A_ADDR, seeded_endpoint(rng, config))
    b = EndpointNode(B_ADDR, seeded_endpoint(rng, b_config or config, b_policy))
    return Pair(Simulation(net, [a, b]), net, a, b)
