"""The port mapper in virtual time against a gateway played in the test: PCP first,
NAT-PMP and UPnP as fallbacks, retransmission times, renewal at half the lease,
expiry of an unrenewed mapping, retries after every protocol failed, deletion."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pd.portmap import (
    MapperConfig,
    MapperState,
    MappingChanged,
    PortMapper,
    Protocol,
    natpmp,
    pcp,
)
from p2pd.portmap.mapper import UpnpAdd, UpnpCommand, UpnpDelete, UpnpFailed, UpnpMapped

NONCE = bytes(12)
EXTERNAL = "203.0.113.2"
CONFIG = MapperConfig(lifetime=600, retry_interval=60)


@dataclass
class Gateway:
    """A router's PCP and NAT-PMP server: ``pcp`` / ``natpmp`` is "ok", "silent", a
    result code to refuse with, or (pcp only) "natpmp-only"."""

    pcp: str | int = "ok"
    natpmp: str | int = "ok"
    external_port: int = 7000
    granted: int | None = None  # lifetime granted (None: what was asked)
    seen: list[tuple[float, str, int]] = field(default_factory=list)  # (time, protocol, lifetime)

    def answer(self, data: bytes, now: float) -> list[bytes]:
        if data[0] == pcp.VERSION:
            request = pcp.decode_map_request_untrusted(data)
            self.seen.append((now, "pcp", request.lifetime))
            if self.pcp == "silent":
                return []
            if self.pcp == "natpmp-only":
                return [bytes.fromhex("0081 0001 00000064")]
            result = 0 if self.pcp == "ok" else int(self.pcp)
            lifetime = request.lifetime if self.granted is None else min(self.granted,
                                                                         request.lifetime)
            return [pcp.encode_map_response(pcp.MapResponse(
                result, lifetime, 100, request.nonce, request.protocol, request.internal_port,
                self.external_port if request.lifetime else 0, EXTERNAL))]
        parsed = natpmp.decode_request_untrusted(data)
        if isinstance(parsed, natpmp.ExternalAddressRequest):
            self.seen.append((now, "natpmp-address", 0))
            if self.natpmp == "silent":
                return []
            return [natpmp.encode_response(natpmp.ExternalAddressResponse(0, 100, EXTERNAL))]
        self.seen.append((now, "natpmp", parsed.lifetime))
        if self.natpmp == "silent":
            return []
        result = 0 if self.natpmp == "ok" else int(self.natpmp)
        lifetime = parsed.lifetime if self.granted is None else min(self.granted,
                                                                    parsed.lifetime)
        return [natpmp.encode_response(natpmp.MapResponse(
            parsed.opcode, result, 100, parsed.internal_port, self.external_port, lifetime))]

    def times(self, protocol: str) -> list[float]:
        return [t for t, p, _ in self.seen if p == protocol]


Upnp = Callable[[UpnpCommand], UpnpMapped | UpnpFailed | None]


def upnp_ok(lifetime: int = 600) -> Upnp:
    def call(command: UpnpCommand) -> UpnpMapped:
        port = command.external_port
        return UpnpMapped(EXTERNAL, port, lifetime if isinstance(command, UpnpAdd) else 0)
    return call


@dataclass
class Run:
    mapper: PortMapper
    gateway: Gateway
    upnp: Upnp | None = None
    now: float = 0.0
    events: list[tuple[float, MappingChanged]] = field(default_factory=list)
    commands: list[tuple[float, UpnpCommand]] = field(default_factory=list)

    def exchange(self) -> None:
        """Deliver requests and answers (instantly) until the mapper has nothing to send."""
        mapper = self.mapper
        while (datagrams := mapper.datagrams_to_send()) + (commands := mapper.upnp_commands()):
            for data in datagrams:
                for answer in self.gateway.answer(data, self.now):
                    mapper.receive_datagram(answer, self.now)
            for command in commands:
                self.commands.append((self.now, command))
                result = None if self.upnp is None else self.upnp(command)
                if result is not None:
                    mapper.upnp_result(command.command, result, self.now)
        while (event := mapper.next_event()) is not None:
            self.events.append((self.now, event))

    def until(self, end: float) -> Run:
        """Exchange, then step from deadline to deadline up to ``end``."""
        self.exchange()
        while (deadline := self.mapper.get_timer()) is not None and deadline <= end:
            self.now = deadline
            self.mapper.handle_timer(self.now)
            self.exchange()
        self.now = end
        return self

    def stop(self) -> Run:
        self.mapper.stop(self.now)
        self.exchange()
        return self


def start(gateway: Gateway, upnp: Upnp | None = None, config: MapperConfig = CONFIG,
          client_ip: str | None = "10.1.0.2", gateway_known: bool = True) -> Run:
    mapper = PortMapper(config, 7000, 0.0, client_ip=client_ip, nonce=NONCE,
                        gateway_known=gateway_known)
    return Run(mapper, gateway, upnp)


def test_pcp_maps_at_once_and_renews_at_half_the_granted_lifetime() -> None:
    run = start(Gateway(granted=400)).until(0)
    mapping = run.mapper.current()
    assert mapping is not None
    assert (mapping.protocol, mapping.external, mapping.lifetime) == (Protocol.PCP,
                                                                      (EXTERNAL, 7000), 400)
    assert run.events == [(0.0, MappingChanged(mapping, "mapped"))]
    assert run.mapper.get_timer() == 200.0
    run.until(1000)
    assert run.gateway.times("pcp") == [0, 200, 400, 600, 800, 1000]
    assert [lifetime for _, _, lifetime in run.gateway.seen] == [600] * 6
    status = run.mapper.status()
    assert status.state is MapperState.MAPPED
    assert status.renewals == 5
    assert status.mapping is not None and status.mapping.expires == 1400
    assert len(run.events) == 1  # renewals at the same address are not changes


def test_unanswered_pcp_falls_back_to_natpmp_after_four_requests() -> None:
    run = start(Gateway(pcp="silent")).until(10)
    assert run.gateway.times("pcp") == [0, 0.25, 0.75, 1.75]
    assert run.gateway.times("natpmp") == [3.75]
    assert run.gateway.times("natpmp-address") == [3.75]
    mapping = run.mapper.current()
    assert mapping is not None and mapping.protocol is Protocol.NATPMP
    assert mapping.external == (EXTERNAL, 7000)
    assert run.mapper.status().last_error == "pcp: no answer after 4 requests"
    assert run.events == [(3.75, MappingChanged(mapping, "mapped"))]


def test_a_pcp_error_or_a_natpmp_only_gateway_moves_on_at_once() -> None:
    for behaviour, error in ((pcp.Result.NOT_AUTHORIZED, "pcp: result NOT_AUTHORIZED"),
                             ("natpmp-only", "pcp: the gateway speaks NAT-PMP only")):
        run = start(Gateway(pcp=behaviour)).until(0)
        mapping = run.mapper.current()
        assert mapping is not None and mapping.protocol is Protocol.NATPMP
        assert run.mapper.status().last_error == error


def test_upnp_comes_last_and_a_permanent_lease_is_still_renewed() -> None:
    run = start(Gateway(pcp="silent", natpmp=natpmp.Result.NOT_AUTHORIZED),
                upnp=upnp_ok(lifetime=0)).until(3.75)
    assert run.commands == [(3.75, UpnpAdd(1, 7000, 7000, 600))]
    mapping = run.mapper.current()
    assert mapping is not None and mapping.protocol is Protocol.UPNP
    assert mapping.lifetime == 600  # permanent: renewed as if it were the configured lease
    run.until(700)
    assert [t for t, _ in run.commands] == [3.75, 303.75, 603.75]
    run.now = 700
    run.stop()
    assert run.commands[-1] == (700, UpnpDelete(4, 7000))
    assert run.mapper.stopped


def test_every_protocol_failing_waits_retry_interval_then_starts_over() -> None:
    gateway = Gateway(pcp="silent", natpmp="silent")
    run = start(gateway, upnp=lambda _: UpnpFailed("no UPnP IGD: no device")).until(30)
    assert run.mapper.status().state is MapperState.FAILED
    assert run.mapper.status().last_error == "upnp: no UPnP IGD: no device"
    assert run.mapper.get_timer() == 7.5 + 60
    gateway.pcp = "ok"
    run.until(70)
    assert run.gateway.times("pcp")[-1] == 67.5
    mapping = run.mapper.current()
    assert mapping is not None and mapping.protocol is Protocol.PCP


def test_an_unanswered_renewal_is_repeated_until_the_lease_ends_then_lost() -> None:
    gateway = Gateway()
    run = start(gateway).until(0)
    gateway.pcp = "silent"
    run.until(700)
    renewals = [t for t in gateway.times("pcp") if t > 0]
    # at half the lease, then 0.25 s doubling, capped at 64 s, until expiry at 600
    assert renewals[:4] == [300, 300.25, 300.75, 301.75]
    assert max(b - a for a, b in itertools.pairwise(renewals)) == 64
    assert renewals[-1] < 600
    lost = [(t, e) for t, e in run.events if e.mapping is None]
    assert lost == [(600, MappingChanged(None, "lost"))]
    assert run.mapper.status().last_error == "pcp: renewal unanswered until the lease ended"
    # NAT-PMP, next in line, took over at the same moment
    mapping = run.mapper.current()
    assert mapping is not None and mapping.protocol is Protocol.NATPMP
    assert mapping.obtained == 600


def test_a_renewal_at_another_external_port_is_a_change() -> None:
    gateway = Gateway()
    run = start(gateway).until(0)
    gateway.external_port = 7123
    run.until(300)
    mapping = run.mapper.current()
    assert mapping is not None and mapping.external == (EXTERNAL, 7123)
    assert run.events[-1] == (300, MappingChanged(mapping, "changed"))


def test_stop_deletes_with_lifetime_zero_and_waits_at_most_stop_timeout() -> None:
    gateway = Gateway()
    run = start(gateway).until(10)
    run.stop()
    assert gateway.seen[-1] == (10, "pcp", 0)
    assert run.mapper.stopped
    assert run.events[-1] == (10, MappingChanged(None, "stopped"))
    assert run.mapper.current() is None
    # a gateway that does not answer the deletion: one more request, then give up
    gateway = Gateway(pcp="silent", natpmp="ok")
    run = start(gateway).until(10)
    gateway.natpmp = "silent"
    run.stop()
    assert not run.mapper.stopped
    run.until(20)
    assert gateway.times("natpmp")[-2:] == [10, 10.25]
    assert run.mapper.stopped
    assert run.mapper.get_timer() is None


def test_without_a_gateway_only_upnp_is_tried() -> None:
    run = start(Gateway(), upnp=upnp_ok(), client_ip=None, gateway_known=False).until(0)
    assert run.gateway.seen == []
    mapping = run.mapper.current()
    assert mapping is not None and mapping.protocol is Protocol.UPNP
    assert run.mapper.status().last_error == "no gateway address: PCP and NAT-PMP skipped"


def test_upnp_that_never_answers_times_out_and_its_late_answer_is_ignored() -> None:
    config = MapperConfig(protocols=(Protocol.UPNP, Protocol.PCP), upnp_timeout=15)
    run = start(Gateway(), upnp=lambda _: None, config=config).until(20)
    mapping = run.mapper.current()
    assert mapping is not None and mapping.protocol is Protocol.PCP
    assert run.gateway.times("pcp") == [15]
    assert run.mapper.status().last_error == "upnp: no answer from UPnP"
    run.mapper.upnp_result(1, UpnpMapped(EXTERNAL, 7000, 600), 20)
    assert run.mapper.current() == mapping
    assert run.mapper.counters["stale_upnp_results"] == 1


def test_hostile_or_foreign_answers_are_counted_and_change_nothing() -> None:
    gateway = Gateway(pcp="silent", natpmp="silent")
    run = start(gateway).until(0)
    mapper = run.mapper
    wrong_nonce = pcp.encode_map_response(pcp.MapResponse(0, 600, 1, b"x" * 12, 17, 7000, 7000,
                                                          EXTERNAL))
    other_port = pcp.encode_map_response(pcp.MapResponse(0, 600, 1, NONCE, 17, 7001, 7001,
                                                         EXTERNAL))
    for data in (b"", b"\x02" * 7, bytes(60), wrong_nonce, other_port):
        mapper.receive_datagram(data, 0.1)
    assert mapper.current() is None
    assert mapper.counters["bad_packets"] == 3
    assert mapper.counters["not_ours"] == 2
    assert mapper.status().state is MapperState.REQUESTING
    assert mapper.status().protocol is Protocol.PCP
