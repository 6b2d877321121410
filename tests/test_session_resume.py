"""Channels outlive a session (docs/protocol.md 8.10): a new session with the same
peer carries them on, and a peer that restarted makes the other side start over,
sending again what it did not acknowledge. Endpoints on the simulated network,
in virtual time."""

from __future__ import annotations

import random

import pytest

from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint, SessionError
from p2pd.session.events import MessageReceived, SessionEstablished
from p2pd.sim.network import LinkProfile
from p2pd.sim.nodes import EndpointNode
from p2pd.wire.types import PacketType
from tests.sessions import A_ADDR, B_ADDR, Pair, make_pair

CHAT = PacketType.CHAT_MESSAGE


class Restartable(EndpointNode):
    """An endpoint that can die (nothing in or out) and come back as a new process
    with the same identity and nothing else."""

    def __init__(self, address: tuple[str, int], endpoint: Endpoint) -> None:
        super().__init__(address, endpoint)
        self.dead = False

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if not self.dead:
            super().receive_datagram(data, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        out = super().datagrams_to_send(now)
        return [] if self.dead else out

    def handle_timer(self, now: float) -> None:
        if not self.dead:
            super().handle_timer(now)

    def get_timer(self) -> float | None:
        return None if self.dead else super().get_timer()

    def restart(self, seed: int) -> None:
        self.endpoint = Endpoint(self.endpoint.identity, self.endpoint.config,
                                 random_bytes=random.Random(seed).randbytes)
        self.events = []
        self.dead = False


def chats(node: EndpointNode) -> list[bytes]:
    return [e.payload for e in node.events_of(MessageReceived) if e.type == CHAT]


def linked_pair(seed: int = 0) -> tuple[Pair, Restartable]:
    pair = make_pair(seed, LinkProfile(delay=0.01))
    b = Restartable(B_ADDR, pair.b.endpoint)
    pair.sim._nodes[B_ADDR] = b  # the same endpoint, in a node that can die
    pair.b = b
    pair.a.endpoint.connect(pair.b_key, B_ADDR, pair.sim.now)
    assert pair.sim.run_while(lambda: not (pair.a.events_of(SessionEstablished)
                                           and pair.b.events_of(SessionEstablished)), 5.0)
    return pair, b


def say(pair: Pair, text: str) -> None:
    pair.a.endpoint.send(pair.b_key, CHAT, text.encode(), pair.sim.now)


def test_a_session_closed_by_a_path_loss_resumes_its_channels_without_loss_or_duplicates(
        ) -> None:
    pair, _ = linked_pair(1)
    for i in range(3):
        say(pair, f"before {i}")
    pair.sim.run_until(pair.sim.now + 1.0)
    # b -> a goes dark: b gets and delivers these, but a never hears the acks
    start = pair.sim.now
    pair.net.set_link(B_ADDR, A_ADDR, LinkProfile(delay=0.01, blackholes=((start, start + 5),)))
    for i in range(3):
        say(pair, f"unacked {i}")
    pair.sim.run_until(start + 2.0)
    assert chats(pair.b)[-3:] == [b"unacked 0", b"unacked 1", b"unacked 2"]
    # both sides give the link up (as the mesh's path monitor does) ...
    pair.a.endpoint.close(pair.b_key, pair.sim.now)
    pair.b.endpoint.close(pair.a_key, pair.sim.now)
    assert pair.a.endpoint.parked(pair.b_key, pair.sim.now)
    with pytest.raises(SessionError):  # send() wants a session ...
        say(pair, "lost")
    pair.a.endpoint.hold(pair.b_key, CHAT, b"held", pair.sim.now)  # ... hold() waits for one
    pair.sim.run_until(start + 6.0)
    # ... and a new session carries the channels on
    pair.a.endpoint.connect(pair.b_key, B_ADDR, pair.sim.now)
    pair.sim.run_until(pair.sim.now + 3.0)
    assert chats(pair.b) == [b"before 0", b"before 1", b"before 2",
                             b"unacked 0", b"unacked 1", b"unacked 2", b"held"]
    assert pair.a.endpoint.resumed == 1 and pair.b.endpoint.resumed == 1


def test_a_restarted_peer_gets_what_was_not_acknowledged_and_sends_from_scratch() -> None:
    pair, b = linked_pair(2)
    say(pair, "delivered")
    pair.sim.run_until(pair.sim.now + 1.0)
    b.dead = True  # kill -9: nothing more in or out
    for i in range(4):
        say(pair, f"during the outage {i}")
        pair.sim.run_until(pair.sim.now + 0.5)
    b.restart(seed=99)  # a new process: same key, no sessions, no channels
    b.endpoint.connect(pair.a_key, A_ADDR, pair.sim.now)
    pair.sim.run_until(pair.sim.now + 3.0)
    assert chats(b) == [f"during the outage {i}".encode() for i in range(4)]  # once, in order
    session = pair.a.endpoint._sessions[pair.b_key]
    assert session.channel_restarts == 1
    # the other way round works from seq 0 again
    b.endpoint.send(pair.a_key, CHAT, b"I am back", pair.sim.now)
    pair.sim.run_until(pair.sim.now + 1.0)
    assert chats(pair.a) == [b"I am back"]


def test_a_peer_that_restarted_while_its_session_was_parked_starts_over_when_dialled(
        ) -> None:
    pair, b = linked_pair(3)
    say(pair, "one")
    pair.sim.run_until(pair.sim.now + 1.0)
    b.dead = True
    pair.sim.run_until(pair.sim.now + 0.5)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)  # the link is given up: parked
    pair.a.endpoint.hold(pair.b_key, CHAT, b"two", pair.sim.now)
    b.restart(seed=98)
    pair.a.endpoint.connect(pair.b_key, B_ADDR, pair.sim.now)  # a dials, a restarted b answers
    pair.sim.run_until(pair.sim.now + 3.0)
    assert chats(b) == [b"two"]
    assert pair.a.endpoint._sessions[pair.b_key].channel_restarts == 1


def test_channels_kept_longer_than_the_resume_window_are_forgotten() -> None:
    config = SessionConfig(resume_window=5.0)
    pair = make_pair(4, LinkProfile(delay=0.01), config)
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.sim.run_until(1.0)
    say(pair, "hello")
    pair.sim.run_until(2.0)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)
    pair.a.endpoint.hold(pair.b_key, CHAT, b"soon", pair.sim.now)
    pair.sim.run_until(pair.sim.now + 6.0)
    assert not pair.a.endpoint.parked(pair.b_key, pair.sim.now)
    with pytest.raises(SessionError, match="no channels kept"):
        pair.a.endpoint.hold(pair.b_key, CHAT, b"too late", pair.sim.now)


def test_without_a_resume_window_nothing_is_kept() -> None:
    pair = make_pair(5, LinkProfile(delay=0.01), SessionConfig(resume_window=0.0))
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.sim.run_until(1.0)
    say(pair, "hello")
    pair.sim.run_until(2.0)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)
    assert not pair.a.endpoint.parked(pair.b_key, pair.sim.now)


def test_effects_are_not_held() -> None:
    pair, _ = linked_pair(6)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)
    with pytest.raises(SessionError, match="not a reliable"):
        pair.a.endpoint.hold(pair.b_key, PacketType.VISUAL_EFFECT, b"boom", pair.sim.now)


def test_a_link_that_never_carried_anything_is_not_kept_and_not_started_over() -> None:
    pair, _ = linked_pair(7)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)  # nothing was ever sent: nothing to keep
    assert not pair.a.endpoint.parked(pair.b_key, pair.sim.now)


def test_both_sides_dialling_at_once_do_not_start_each_other_over() -> None:
    pair = make_pair(8, LinkProfile(delay=0.02))
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.sim.run_until(0.03)  # a's request is at b: b answers, then dials too
    pair.b.endpoint.connect(pair.a_key, A_ADDR, pair.sim.now)
    say(pair, "first")
    pair.sim.run_until(2.0)
    pair.b.endpoint.send(pair.a_key, CHAT, b"second", pair.sim.now)
    pair.sim.run_until(3.0)
    assert chats(pair.b) == [b"first"] and chats(pair.a) == [b"second"]
    assert len(pair.a.events_of(SessionEstablished)) == 1
    assert len(pair.b.events_of(SessionEstablished)) == 1
    for node, peer in ((pair.a, pair.b_key), (pair.b, pair.a_key)):
        assert node.endpoint._sessions[peer].channel_restarts == 0
