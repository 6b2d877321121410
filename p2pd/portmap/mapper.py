"""One port mapping's life, across protocols, in ``now`` (sans-IO).

:class:`PortMapper` tries each protocol of ``MapperConfig.protocols`` in turn
(PCP, then NAT-PMP, then UPnP IGD by default) until one maps the daemon's UDP
port; renews the mapping at half the lifetime the gateway granted; and deletes
it at :meth:`PortMapper.stop`. It never touches a socket or a clock:

- PCP and NAT-PMP: :meth:`PortMapper.datagrams_to_send` gives the datagrams
  for the gateway's port 5351, :meth:`PortMapper.receive_datagram` takes what
  came back from it. A request is sent again after 0.25 s, doubling
  (RFC 6886 3.1); after ``attempts`` unanswered transmissions the protocol has
  failed. A renewal is repeated (the interval capped at
  ``max_retransmit_interval``) until the mapping expires.
- UPnP: :meth:`PortMapper.upnp_commands` gives :class:`UpnpAdd` and
  :class:`UpnpDelete` for the shell to carry out (miniupnpc, blocking), which
  reports back with :meth:`PortMapper.upnp_result`; no answer within
  ``upnp_timeout`` fails the protocol.

Transitions (state, what happens -> next state):

================  ===============================  ==========================================
REQUESTING        success                          MAPPED (renewal at half the lifetime)
REQUESTING        error result, or no answer       REQUESTING the next protocol, or FAILED
REQUESTING        renewal unanswered at expiry     the mapping is lost; as an error
MAPPED            renewal time                     REQUESTING (the same protocol, renewing)
FAILED            ``retry_interval`` passed        REQUESTING the first protocol
any               stop()                           STOPPING (delete sent) or STOPPED
STOPPING          answer, or ``stop_timeout``      STOPPED
================  ===============================  ==========================================

A mapping that appears, moves to another external address or is lost is a
:class:`MappingChanged` event (:meth:`PortMapper.next_event`).
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass

from p2pd.portmap import natpmp, pcp
from p2pd.portmap.errors import BadPortMapPacket
from p2pd.portmap.events import MapperState, Mapping, MappingChanged, PortMapStatus, Protocol

MAX_EVENTS = 16


@dataclass(frozen=True, slots=True)
class MapperConfig:
    protocols: tuple[Protocol, ...] = (Protocol.PCP, Protocol.NATPMP, Protocol.UPNP)
    lifetime: int = 7200  # seconds asked for (RFC 6886 recommends 7200)
    first_timeout: float = 0.25  # first retransmission; doubles each time
    attempts: int = 4  # transmissions before a protocol is given up (3.75 s in all)
    max_retransmit_interval: float = 64.0  # while renewing
    upnp_timeout: float = 15.0  # discovery and the SOAP call together
    retry_interval: float = 300.0  # after every protocol failed
    stop_timeout: float = 1.0  # waiting for the answer to a deletion


@dataclass(frozen=True, slots=True)
class UpnpAdd:
    command: int
    internal_port: int
    external_port: int
    lifetime: int


@dataclass(frozen=True, slots=True)
class UpnpDelete:
    command: int
    external_port: int


UpnpCommand = UpnpAdd | UpnpDelete


@dataclass(frozen=True, slots=True)
class UpnpMapped:
    external_ip: str
    external_port: int
    lifetime: int  # 0: the gateway only grants permanent leases


@dataclass(frozen=True, slots=True)
class UpnpFailed:
    error: str


UpnpResult = UpnpMapped | UpnpFailed


class PortMapper:
    """See the module's docstring. ``client_ip``: the daemon's address towards the
    gateway (PCP's client address); without it, or without a gateway, PCP and
    NAT-PMP are skipped. ``nonce``: 12 random bytes (PCP's mapping nonce)."""

    def __init__(self, config: MapperConfig, internal_port: int, now: float, *,
                 client_ip: str | None, nonce: bytes, gateway_known: bool = True) -> None:
        self.config = config
        self.internal_port = internal_port
        self._client_ip = client_ip
        self._nonce = nonce
        direct = gateway_known and client_ip is not None
        self._protocols = tuple(p for p in config.protocols if p is Protocol.UPNP or direct)
        self._last_error: str | None = None
        if not direct and len(self._protocols) < len(config.protocols):
            self._last_error = "no gateway address: PCP and NAT-PMP skipped"
        self._state = MapperState.REQUESTING
        self._protocol: Protocol | None = None
        self._mapping: Mapping | None = None
        self._queue: list[Protocol] = []
        self._renewals = 0
        self._outgoing: list[bytes] = []
        self._upnp_out: list[UpnpCommand] = []
        self._events: deque[MappingChanged] = deque(maxlen=MAX_EVENTS)
        self._commands = itertools.count(1)
        self._upnp_command: int | None = None
        self._renewing = False
        self._transmissions = 0
        self._next_send: float | None = None
        self._give_up: float | None = None
        self._renew_at: float | None = None
        self._retry_at: float | None = None
        self._stop_deadline: float | None = None
        self._natpmp_external: str | None = None
        self._natpmp_map: natpmp.MapResponse | None = None
        self.counters: Counter[str] = Counter()
        self._start_cycle(now)

    # -- what the shell reads ---------------------------------------------------------

    def current(self) -> Mapping | None:
        """The mapping in force, or None."""
        return self._mapping

    def status(self) -> PortMapStatus:
        return PortMapStatus(self._state, self._protocol, self._mapping, self._last_error,
                             self._renewals)

    @property
    def stopped(self) -> bool:
        return self._state is MapperState.STOPPED

    def datagrams_to_send(self) -> list[bytes]:
        """For the gateway's port 5351."""
        out, self._outgoing = self._outgoing, []
        return out

    def upnp_commands(self) -> list[UpnpCommand]:
        out, self._upnp_out = self._upnp_out, []
        return out

    def next_event(self) -> MappingChanged | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        state = self._state
        if state is MapperState.REQUESTING:
            return _earliest(self._next_send, self._give_up)
        if state is MapperState.MAPPED:
            return self._renew_at
        if state is MapperState.FAILED:
            return self._retry_at
        if state is MapperState.STOPPING:
            return _earliest(self._next_send, self._stop_deadline)
        return None

    # -- input ---------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        state = self._state
        if state is MapperState.REQUESTING:
            if self._give_up is not None and now >= self._give_up:
                self._fail("no answer from UPnP" if self._protocol is Protocol.UPNP
                           else "renewal unanswered until the lease ended", now)
            elif self._next_send is not None and now >= self._next_send:
                if not self._renewing and self._transmissions >= self.config.attempts:
                    self._fail(f"no answer after {self._transmissions} requests", now)
                else:
                    self._transmit(now)
        elif state is MapperState.MAPPED:
            if self._renew_at is not None and now >= self._renew_at:
                self._request(now, renewing=True)
        elif state is MapperState.FAILED:
            if self._retry_at is not None and now >= self._retry_at:
                self._start_cycle(now)
        elif state is MapperState.STOPPING:
            if self._stop_deadline is not None and now >= self._stop_deadline:
                self._state = MapperState.STOPPED
            elif self._next_send is not None and now >= self._next_send:
                self._outgoing += self._delete_requests()
                self._next_send = None

    def receive_datagram(self, data: bytes, now: float) -> None:
        """A datagram from the gateway's port 5351 (hostile bytes are counted, dropped)."""
        protocol = self._protocol
        if self._state not in (MapperState.REQUESTING, MapperState.STOPPING) or (
                protocol not in (Protocol.PCP, Protocol.NATPMP)):
            self.counters["unexpected"] += 1
            return
        try:
            if protocol is Protocol.PCP:
                self._on_pcp(pcp.decode_response_untrusted(data), now)
            else:
                self._on_natpmp(natpmp.decode_response_untrusted(data), now)
        except BadPortMapPacket:
            self.counters["bad_packets"] += 1

    def upnp_result(self, command: int, result: UpnpResult, now: float) -> None:
        """What the shell's UPnP call for ``command`` came to."""
        if command != self._upnp_command:
            self.counters["stale_upnp_results"] += 1
            return
        self._upnp_command = None
        if self._state is MapperState.STOPPING:
            self._state = MapperState.STOPPED
        elif self._state is MapperState.REQUESTING:
            if isinstance(result, UpnpFailed):
                self._fail(result.error, now)
            else:
                lifetime = result.lifetime or self.config.lifetime
                self._mapped(Mapping(Protocol.UPNP, self.internal_port, result.external_ip,
                                     result.external_port, lifetime, now), now)

    def stop(self, now: float) -> None:
        """Delete the mapping (or the one a request in flight may have made)."""
        if self._state in (MapperState.STOPPING, MapperState.STOPPED):
            return
        protocol = self._mapping.protocol if self._mapping else None
        if protocol is None and self._state is MapperState.REQUESTING:
            protocol = self._protocol
        if self._mapping is not None:
            self._events.append(MappingChanged(None, "stopped"))
        self._protocol = protocol
        if protocol is None:
            self._state = MapperState.STOPPED
            self._mapping = None
            return
        self._state = MapperState.STOPPING
        self._stop_deadline = now + self.config.stop_timeout
        if protocol is Protocol.UPNP:
            external = self._mapping.external_port if self._mapping else self.internal_port
            self._upnp_command = next(self._commands)
            self._upnp_out.append(UpnpDelete(self._upnp_command, external))
            self._next_send = None
        else:
            self._outgoing += self._delete_requests()
            self._next_send = now + self.config.first_timeout  # one more, if unanswered
        self._mapping = None

    # -- the protocols ---------------------------------------------------------------

    def _on_pcp(self, response: pcp.MapResponse, now: float) -> None:
        if response.result == pcp.Result.UNSUPP_VERSION and not response.nonce:
            if self._state is MapperState.STOPPING:
                self._state = MapperState.STOPPED
            else:
                self._fail("the gateway speaks NAT-PMP only", now)
            return
        if (response.nonce != self._nonce or response.internal_port != self.internal_port
                or response.protocol != pcp.UDP):
            self.counters["not_ours"] += 1
            return
        if self._state is MapperState.STOPPING:
            self._state = MapperState.STOPPED
        elif response.result != pcp.Result.SUCCESS:
            self._fail(f"result {_name(pcp.Result, response.result)}", now)
        elif response.lifetime == 0:
            self._fail("granted lifetime 0", now)
        else:
            self._mapped(Mapping(Protocol.PCP, self.internal_port, response.external_ip,
                                 response.external_port, response.lifetime, now), now)

    def _on_natpmp(self, response: natpmp.Response, now: float) -> None:
        if isinstance(response, natpmp.ExternalAddressResponse):
            if self._state is MapperState.STOPPING:
                return
            if response.result != natpmp.Result.SUCCESS or response.external_ip is None:
                self._fail(f"external address: result "
                           f"{_name(natpmp.Result, response.result)}", now)
                return
            self._natpmp_external = response.external_ip
        else:
            if (response.opcode is not natpmp.Opcode.MAP_UDP
                    or (response.internal_port != self.internal_port and not response.result)):
                self.counters["not_ours"] += 1
                return
            if self._state is MapperState.STOPPING:
                self._state = MapperState.STOPPED
                return
            if response.result != natpmp.Result.SUCCESS:
                self._fail(f"result {_name(natpmp.Result, response.result)}", now)
                return
            if response.lifetime == 0:
                self._fail("granted lifetime 0", now)
                return
            self._natpmp_map = response
        if self._natpmp_external is not None and self._natpmp_map is not None:
            granted = self._natpmp_map
            self._mapped(Mapping(Protocol.NATPMP, self.internal_port, self._natpmp_external,
                                 granted.external_port, granted.lifetime, now), now)

    def _requests(self) -> list[bytes]:
        mapping = self._mapping
        suggested = mapping.external_port if mapping else self.internal_port
        if self._protocol is Protocol.PCP:
            assert self._client_ip is not None
            return [pcp.encode_map_request(pcp.MapRequest(
                self.config.lifetime, self._client_ip, self._nonce, self.internal_port,
                suggested, mapping.external_ip if mapping else "0.0.0.0"))]
        out = []
        if self._natpmp_external is None:
            out.append(natpmp.encode_external_address_request())
        if self._natpmp_map is None:
            out.append(natpmp.encode_map_request(natpmp.MapRequest(
                natpmp.Opcode.MAP_UDP, self.internal_port, suggested, self.config.lifetime)))
        return out

    def _delete_requests(self) -> list[bytes]:
        if self._protocol is Protocol.PCP:
            assert self._client_ip is not None
            return [pcp.encode_map_request(pcp.MapRequest(0, self._client_ip, self._nonce,
                                                          self.internal_port))]
        return [natpmp.encode_map_request(natpmp.MapRequest(natpmp.Opcode.MAP_UDP,
                                                            self.internal_port, 0, 0))]

    # -- transitions -----------------------------------------------------------------

    def _start_cycle(self, now: float) -> None:
        self._queue = list(self._protocols)
        self._next_protocol(now)

    def _next_protocol(self, now: float) -> None:
        self._next_send = self._give_up = self._renew_at = None
        if not self._queue:
            self._state = MapperState.FAILED
            self._protocol = None
            self._retry_at = now + self.config.retry_interval
            return
        self._protocol = self._queue.pop(0)
        self._request(now, renewing=False)

    def _request(self, now: float, *, renewing: bool) -> None:
        self._state = MapperState.REQUESTING
        self._renewing = renewing
        self._transmissions = 0
        self._natpmp_external = None
        self._natpmp_map = None
        self._renew_at = None
        mapping = self._mapping
        self._give_up = mapping.expires if renewing and mapping else None
        if self._protocol is Protocol.UPNP:
            self._upnp_command = next(self._commands)
            self._upnp_out.append(UpnpAdd(
                self._upnp_command, self.internal_port,
                mapping.external_port if mapping else self.internal_port, self.config.lifetime))
            self._next_send = None
            self._give_up = _earliest(self._give_up, now + self.config.upnp_timeout)
        else:
            self._transmit(now)

    def _transmit(self, now: float) -> None:
        self._outgoing += self._requests()
        self.counters["requests"] += 1
        self._transmissions += 1
        interval = self.config.first_timeout * 2 ** (self._transmissions - 1)
        if self._renewing:
            interval = min(interval, self.config.max_retransmit_interval)
        self._next_send = now + interval

    def _mapped(self, mapping: Mapping, now: float) -> None:
        old = self._mapping
        self._mapping = mapping
        self._state = MapperState.MAPPED
        self._next_send = self._give_up = None
        self._renew_at = now + mapping.lifetime / 2
        if old is None:
            self._events.append(MappingChanged(mapping, "mapped"))
        elif old.external != mapping.external or old.protocol is not mapping.protocol:
            self._events.append(MappingChanged(mapping, "changed"))
        else:
            self._renewals += 1

    def _fail(self, reason: str, now: float) -> None:
        assert self._protocol is not None
        self._last_error = f"{self._protocol.value}: {reason}"
        self.counters[f"failed_{self._protocol.value}"] += 1
        self._upnp_command = None
        if self._mapping is not None:
            self._mapping = None
            self._events.append(MappingChanged(None, "lost"))
        self._next_protocol(now)


def _earliest(*times: float | None) -> float | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _name(enum: type[pcp.Result] | type[natpmp.Result], code: int) -> str:
    try:
        return enum(code).name
    except ValueError:
        return str(code)
