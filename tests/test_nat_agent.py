"""The NAT agent's connectivity checks, sans-IO: which paths a handshake request goes
to, and when (docs/protocol.md 13C)."""

from __future__ import annotations

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
