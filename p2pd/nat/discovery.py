"""NAT behaviour discovery (RFC 5780 4.3 and 4.4), sans-IO.

The tests, in this order, against a STUN server that gives an OTHER-ADDRESS
(an alternate IP and port; coturn with two listening addresses and
``alt-listening-port``):

1. Binding to the server: the mapped address M1 and OTHER-ADDRESS O. M1 equal
   to a host address: no NAT.
2. Filtering II: Binding with CHANGE-REQUEST (change IP and port). An answer
   (from O) means endpoint-independent filtering. Otherwise
3. Filtering III: CHANGE-REQUEST (change port). An answer means
   address-dependent filtering, none address-and-port-dependent.
4. Mapping II: Binding to O's IP and the server's port: M2 equal to M1 means
   endpoint-independent mapping. Otherwise
5. Mapping III: Binding to O: M3 equal to M2 means address-dependent
   mapping, else address-and-port-dependent ("symmetric").

Filtering goes before mapping: the mapping tests send to O's IP, which would
open an address-dependent filter to the answers of the filtering tests.
Without OTHER-ADDRESS, a second STUN server still tells whether the mapping
varies with the destination (equal mapped addresses: endpoint-independent as
far as can be told; different: address-and-port-dependent).

The object only decides: :meth:`Discovery.next_tests` says which Binding
requests to send, :meth:`Discovery.result` takes each outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from p2pd.nat.stun import Address


class Behaviour(StrEnum):
    UNKNOWN = "unknown"
    NO_NAT = "no_nat"
    ENDPOINT_INDEPENDENT = "endpoint_independent"
    ADDRESS_DEPENDENT = "address_dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address_and_port_dependent"


@dataclass(frozen=True, slots=True)
class Test:
    name: str
    address: Address
    change_ip: bool = False
    change_port: bool = False


class Discovery:
    def __init__(self, servers: list[Address], host_addresses: list[Address]) -> None:
        self.servers = servers
        self.host_addresses = host_addresses
        self.mapping = Behaviour.UNKNOWN
        self.filtering = Behaviour.UNKNOWN
        self.mapped: Address | None = None
        self.other: Address | None = None
        self.second_mapped: Address | None = None
        self._m2: Address | None = None
        self._queue: list[Test] = []
        self.running = False
        self.done = False

    def start(self) -> None:
        self.running, self.done = True, False
        self.mapping = self.filtering = Behaviour.UNKNOWN
        self._queue = [Test("m1", self.servers[0])] if self.servers else []
        if not self.servers:
            self.running, self.done = False, True

    def next_tests(self) -> list[Test]:
        out, self._queue = self._queue, []
        return out

    def result(self, name: str, mapped: Address | None, other: Address | None) -> None:
        """The outcome of test ``name``: the mapped address (None: no answer) and
        the OTHER-ADDRESS given."""
        server = self.servers[0]
        if name == "m1":
            if mapped is None:
                return self._finish()
            self.mapped, self.other = mapped, other
            if mapped in self.host_addresses:
                self.mapping = Behaviour.NO_NAT
            if other is not None:
                self._queue.append(Test("f2", server, change_ip=True, change_port=True))
            elif len(self.servers) > 1:
                self._queue.append(Test("s2", self.servers[1]))
            else:
                self._finish()
        elif name == "s2":
            if mapped is not None and self.mapping is Behaviour.UNKNOWN:
                self.second_mapped = mapped
                self.mapping = (Behaviour.ENDPOINT_INDEPENDENT if mapped == self.mapped
                                else Behaviour.ADDRESS_AND_PORT_DEPENDENT)
            self._finish()
        elif name == "f2":
            if mapped is not None:
                self.filtering = Behaviour.ENDPOINT_INDEPENDENT
                self._mapping_tests()
            else:
                self._queue.append(Test("f3", server, change_port=True))
        elif name == "f3":
            self.filtering = (Behaviour.ADDRESS_DEPENDENT if mapped is not None
                              else Behaviour.ADDRESS_AND_PORT_DEPENDENT)
            self._mapping_tests()
        elif name == "m2":
            if mapped is None:
                return self._finish()
            if mapped == self.mapped:
                if self.mapping is Behaviour.UNKNOWN:
                    self.mapping = Behaviour.ENDPOINT_INDEPENDENT
                return self._finish()
            self._m2 = mapped
            assert self.other is not None
            self._queue.append(Test("m3", self.other))
        elif name == "m3":
            if mapped is not None:
                self.mapping = (Behaviour.ADDRESS_DEPENDENT if mapped == self._m2
                                else Behaviour.ADDRESS_AND_PORT_DEPENDENT)
            self._finish()

    def _mapping_tests(self) -> None:
        if self.mapping is Behaviour.NO_NAT or self.other is None:
            return self._finish()
        self._queue.append(Test("m2", (self.other[0], self.servers[0][1])))

    def _finish(self) -> None:
        self.running, self.done = False, True

    def status(self) -> dict[str, object]:
        return {"mapping": self.mapping.value, "filtering": self.filtering.value,
                "state": "running" if self.running else "done" if self.done else "idle"}
