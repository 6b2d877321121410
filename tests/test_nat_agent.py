"""The NAT agent's connectivity checks, sans-IO: which paths a handshake request goes
to, and when (docs/protocol.md 13C)."""

from __future__ import annotations

import random

from p2pd.nat.agent import NatAgent, NatSettings
from p2pd.nat.candidates import Candidate

PEER = b"\x07" * 32
REQUEST = b"P2P2\x00\x00\x00\x00\x00\x01" + bytes(270)  # a handshake request's header
HOST = ("10.2.0.2", 7000)
SRFLX = ("203.0.113.6", 7000)
PEER_RELAYED = ("192.0.2.1", 49200)
RELAY = ("relay", 5)


def checking() -> tuple[NatAgent, list[tuple[str, int]]]:
    agent = NatAgent(NatSettings())
    paths = agent.plan([Candidate("host", HOST), Candidate("srflx", SRFLX),
                        Candidate("relay", PEER_RELAYED)], SRFLX, RELAY)
    assert agent.begin_checks(PEER, paths, RELAY, 0.0) == HOST
    return agent, paths


def test_paths_join_the_checks_when_due_not_at_the_next_retransmission() -> None:
    agent, paths = checking()
    assert paths == [HOST, SRFLX, PEER_RELAYED, RELAY]
    sent = agent.expand(REQUEST, HOST, 0.0)
    assert sent == [(REQUEST, HOST, 2), (REQUEST, SRFLX, 2)]  # low TTL punches only
    assert agent.deadline() == 0.5  # the peer's relayed address joins
    agent.handle_timer(0.5)
    assert agent.take_datagrams() == [(REQUEST, PEER_RELAYED, None)]
    assert agent.deadline() == 1.5  # the coordinator's relay joins
    agent.handle_timer(1.5)
    assert agent.take_datagrams() == [(REQUEST, RELAY, None)]
    assert agent.deadline() is None
    # a retransmission goes everywhere, at the normal TTL
    assert agent.expand(REQUEST, HOST, 1.75) == [(REQUEST, p, None) for p in paths]


def test_a_path_the_peer_opened_gets_the_request_in_flight_at_once() -> None:
    agent, _ = checking()
    agent.expand(REQUEST, HOST, 0.0)
    reflexive = ("203.0.113.6", 40123)  # the peer's request came from there
    agent.learned_path(PEER, reflexive)
    assert agent.take_datagrams() == [(REQUEST, reflexive, None)]
    assert agent.expand(REQUEST, HOST, 0.3)[0] == (REQUEST, reflexive, None)  # checked first
    agent.learned_path(PEER, ("relay", 9))  # not an IP address: not sent raw
    assert agent.take_datagrams() == []


class Mapper:
    def __init__(self, state: str = "failed") -> None:
        self.address: tuple[str, int] | None = None
        self.state = state

    def mapped_address(self) -> tuple[str, int] | None:
        return self.address

    def status(self) -> dict[str, object]:
        return {"state": self.state}


def test_a_port_mapping_that_comes_or_goes_runs_behaviour_discovery_again() -> None:
    server = ("192.0.2.1", 3478)
    agent = NatAgent(NatSettings(stun_servers=(server,)),
                     random_bytes=random.Random(1).randbytes)
    agent.port_mapper = mapper = Mapper()
    agent.start(0.0)
    first = agent.take_datagrams()  # the refresh Binding and discovery's first test
    assert [address for _, address, _ in first] == [server, server]
    agent.notice_port_mapping(0.05)  # nothing changed
    assert agent.take_datagrams() == []
    mapper.address, mapper.state = ("203.0.113.2", 7001), "mapped"
    agent.notice_port_mapping(0.1)
    again = agent.take_datagrams()
    assert [address for _, address, _ in again] == [server]  # discovery from its first test
    assert again[0][0] not in [data for data, _, _ in first]  # a new transaction
    assert agent.status()["behaviour"]["state"] == "running"
    assert "mapped 203.0.113.2:7001" in agent.status()["candidates"]
    # at 0.25 s the first requests are due again: only the refresh is; the first
    # run's test was given up
    agent.handle_timer(0.3)
    assert [data for data, _, _ in agent.take_datagrams()] == [first[0][0]]
    mapper.address = None  # the mapping is lost: discovery again
    agent.notice_port_mapping(0.4)
    assert len(agent.take_datagrams()) == 1


def test_discovery_waits_for_a_port_mapping_being_asked_for() -> None:
    server = ("192.0.2.1", 3478)
    for mapped_at in (0.02, None):  # a router that maps at once; one that never answers
        agent = NatAgent(NatSettings(stun_servers=(server,), mapping_wait=2.0),
                         random_bytes=random.Random(2).randbytes)
        agent.port_mapper = mapper = Mapper("requesting")
        agent.start(0.0)
        assert len(agent.take_datagrams()) == 1  # the refresh Binding only
        assert agent.status()["behaviour"]["state"] == "idle"
        if mapped_at is not None:
            mapper.address, mapper.state = ("203.0.113.2", 7000), "mapped"
            agent.notice_port_mapping(mapped_at)
            assert agent.status()["behaviour"]["state"] == "running"
            assert len(agent.take_datagrams()) == 1  # discovery's first test, at once
        else:
            agent.notice_port_mapping(1.0)
            assert agent.status()["behaviour"]["state"] == "idle"
            assert agent.deadline() == 0.25  # the refresh's retransmission first
            agent.handle_timer(2.0)  # the wait is over
            assert agent.status()["behaviour"]["state"] == "running"
