"""Rebinding (NAT mapping changes): a session follows a new source address only on an
authenticated packet, the newest it has; a spoofed or replayed one cannot redirect it."""

from __future__ import annotations

from p2pd.session.events import MessageReceived, PeerAddressChanged
from p2pd.sim.network import LinkProfile
from p2pd.wire.types import PacketType
from tests.sessions import A_ADDR, Pair, make_pair
from tests.test_session import handshake

SPOOFER = ("198.51.100.66", 4444)
REBOUND = ("203.0.113.9", 40000)


def _sealed(pair: Pair, text: bytes) -> bytes:
    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, text, now)
    pair.a.endpoint.flush(now)
    (datagram, _), = pair.a.endpoint.datagrams_to_send(now)
    return bytes(datagram)


def test_a_spoofed_source_cannot_redirect_a_session() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    handshake(pair)
    b = pair.b.endpoint
    node = pair.b  # records the events
    now = pair.sim.now
    first = _sealed(pair, b"one")
    second = _sealed(pair, b"two")
    node.receive_datagram(first, A_ADDR, now)
    node.receive_datagram(second, A_ADDR, now)
    # forged: a genuine packet under a counter not seen yet, from the spoofer's address
    forged = bytearray(second)
    forged[18:26] = (int.from_bytes(second[18:26], "big") + 1000).to_bytes(8, "big")
    node.receive_datagram(bytes(forged), SPOOFER, now)
    # replayed: a genuine packet already taken, from the spoofer's address
    node.receive_datagram(second, SPOOFER, now)
    # stale: genuine and never seen, but older than the newest (a straggler)
    third, fourth = _sealed(pair, b"three"), _sealed(pair, b"four")
    node.receive_datagram(fourth, A_ADDR, now)
    node.receive_datagram(third, SPOOFER, now)
    assert b.session_statistics(pair.a_key).address == A_ADDR
    assert pair.b.events_of(PeerAddressChanged) == []
    assert b.statistics().drops == {"auth_failed": 1, "replayed": 1}
    # the genuine sender behind a new NAT mapping: followed at once
    fifth = _sealed(pair, b"five")
    node.receive_datagram(fifth, REBOUND, now)
    assert b.session_statistics(pair.a_key).address == REBOUND
    assert pair.b.events_of(PeerAddressChanged) == [
        PeerAddressChanged(pair.a_key, A_ADDR, REBOUND)]
    texts = [event.payload for event in node.events_of(MessageReceived)]
    assert texts == [b"one", b"two", b"three", b"four", b"five"]  # in order, each once
