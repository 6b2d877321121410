"""NAT routers for the simulated network (RFC 4787 behaviours), deterministic.

A :class:`SimNat` stands between a set of private hosts and the simulated
internet at one public IP. Its :class:`NatModel` chooses

- **mapping**: endpoint-independent (one public port per private endpoint,
  whatever the destination: Linux MASQUERADE keeps the port), address-dependent,
  or address-and-port-dependent ("symmetric": a new port per destination, like
  MASQUERADE ``--random-fully``);
- **filtering**: which inbound packets a mapping lets in: from anyone
  (endpoint-independent, "full cone"), from IPs it sent to (address-dependent),
  or from the exact IP:port it sent to (address-and-port-dependent: Linux
  conntrack, "port-restricted");
- ``timeout``: a mapping unused for this long (no packet out, none let in) is gone;
- ``conflict_remap``: the Linux conntrack trap that defeats naive simultaneous
  punching: an unsolicited packet from R to public port P leaves an entry
  (R, P) behind, and the private host's later first packet to R cannot take P:
  it leaves from another port.

Hops and TTL: a datagram sent with an IP TTL below 3 leaves its own NAT (whose
mapping it creates) and dies before the far side. Hairpinning (two hosts
behind one NAT reaching each other's public mapping) is not modelled; hosts
behind one NAT talk by their private addresses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

Address = tuple[str, int]
MIN_TTL_ACROSS = 3  # a packet needs this TTL to cross its NAT and the internet


class Behaviour(StrEnum):
    ENDPOINT_INDEPENDENT = "endpoint_independent"
    ADDRESS_DEPENDENT = "address_dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address_and_port_dependent"


EI = Behaviour.ENDPOINT_INDEPENDENT
AD = Behaviour.ADDRESS_DEPENDENT
APD = Behaviour.ADDRESS_AND_PORT_DEPENDENT


@dataclass(frozen=True, slots=True)
class NatModel:
    mapping: Behaviour = EI
    filtering: Behaviour = APD
    timeout: float = 120.0
    conflict_remap: bool = True
    name: str = ""


# the lab's kinds (issue 6), as NAT models
FULL_CONE = NatModel(EI, EI, conflict_remap=False, name="full_cone")
RESTRICTED = NatModel(EI, AD, name="restricted")
PORT_RESTRICTED = NatModel(EI, APD, name="port_restricted")  # Linux MASQUERADE
SYMMETRIC = NatModel(APD, APD, name="symmetric")  # MASQUERADE --random-fully


@dataclass(slots=True)
class _Mapping:
    private: Address
    port: int
    last_used: float
    contacted: dict[Address, float] = field(default_factory=dict)


@dataclass(slots=True)
class NatStats:
    mappings_created: int = 0
    filtered: int = 0
    expired: int = 0
    remapped_by_conflict: int = 0


class SimNat:
    def __init__(self, public_ip: str, inside: set[str], model: NatModel,
                 rng: random.Random) -> None:
        self.public_ip = public_ip
        self.inside = inside
        self.model = model
        self._rng = rng
        self._by_key: dict[tuple[Address, object], _Mapping] = {}
        self._by_port: dict[int, _Mapping] = {}
        self._unsolicited: dict[tuple[Address, int], float] = {}
        self.stats = NatStats()

    def _key(self, private: Address, dst: Address) -> tuple[Address, object]:
        mapping = self.model.mapping
        if mapping is EI:
            return (private, None)
        if mapping is AD:
            return (private, dst[0])
        return (private, dst)

    def _alive(self, mapping: _Mapping, now: float) -> bool:
        if now - mapping.last_used < self.model.timeout:
            return True
        self._forget(mapping)
        self.stats.expired += 1
        return False

    def _forget(self, mapping: _Mapping) -> None:
        self._by_port.pop(mapping.port, None)
        self._by_key = {k: m for k, m in self._by_key.items() if m is not mapping}

    def flush(self) -> None:
        """Every mapping is gone (a router reboot, a mapping change)."""
        self._by_key.clear()
        self._by_port.clear()

    def outbound(self, private: Address, dst: Address, now: float) -> Address:
        key = self._key(private, dst)
        mapping = self._by_key.get(key)
        if mapping is not None and not self._alive(mapping, now):
            mapping = None
        if mapping is None:
            port = self._choose_port(private, dst, now)
            mapping = _Mapping(private, port, now)
            self._by_key[key] = mapping
            self._by_port[port] = mapping
            self.stats.mappings_created += 1
        elif self.model.conflict_remap and dst not in mapping.contacted and (
                self._unsolicited.get((dst, mapping.port), -1e9) > now - self.model.timeout):
            # an existing mapping towards a new remote that already knocked on
            # this port: conntrack has (remote, port) taken; this flow leaves
            # from another port, a mapping of its own
            port = self._choose_port(private, dst, now, avoid=mapping.port)
            flow = _Mapping(private, port, now)
            self._by_key[(private, dst)] = flow
            self._by_port[port] = flow
            self.stats.remapped_by_conflict += 1
            mapping = flow
        mapping.last_used = now
        mapping.contacted[dst] = now
        return (self.public_ip, mapping.port)

    def _choose_port(self, private: Address, dst: Address, now: float,
                     avoid: int | None = None) -> int:
        preferred = private[1]
        conflict = self.model.conflict_remap and (
            self._unsolicited.get((dst, preferred), -1e9) > now - self.model.timeout)
        if (self.model.mapping is EI and preferred not in self._by_port
                and preferred != avoid and not conflict):
            return preferred  # port-preserving, as MASQUERADE is
        if conflict:
            self.stats.remapped_by_conflict += 1
        while True:
            port = self._rng.randrange(20000, 60000)
            if port not in self._by_port and port != avoid:
                return port

    def inbound(self, remote: Address, port: int, now: float) -> Address | None:
        mapping = self._by_port.get(port)
        if mapping is not None and not self._alive(mapping, now):
            mapping = None
        allowed = False
        if mapping is not None:
            filtering = self.model.filtering
            if filtering is EI:
                allowed = True
            elif filtering is AD:
                allowed = any(ip == remote[0] for ip, _ in mapping.contacted)
            else:
                allowed = remote in mapping.contacted
        if not allowed:
            self.stats.filtered += 1
            if self.model.conflict_remap:
                if len(self._unsolicited) > 4096:
                    self._unsolicited.clear()
                self._unsolicited[(remote, port)] = now
            return None
        assert mapping is not None
        mapping.last_used = now
        return mapping.private
