"""Fallback to server (spec §10.1): the coordinator relays what cannot go direct.

Daemon nodes (p2pd.node.Node, with their P2PManager) and the real coordinator
on the simulated network, in virtual time; plus the RELAY codec and the
coordinator's forwarding rules on their own."""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pd.config import CoordinatorSettings, DaemonConfig, P2PSettings, SyncSettings
from p2pd.coordinator.credentials import issue_certificate, mint_token
from p2pd.coordinator.messages import Presence, encode_presence
from p2pd.crypto.identity import Identity
from p2pd.ipc.messages import Chat, Position
from p2pd.node import Node
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import SessionEstablished
from p2pd.sim.network import LinkProfile
from p2pd.sim.nodes import CoreNode, EndpointNode
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.header import HEADER_SIZE, encode_header, parse_header_untrusted
from p2pd.wire.relay import (
    MAX_RELAYED,
    RELAY_OVERHEAD,
    decode_relay_untrusted,
    encode_relay,
    swap_daemon_id,
)
from p2pd.wire.types import Flag, PacketType
from tests.test_coordinator import COORD_ADDR, WALL, World, say, world

INNER = encode_header(0x0009, PacketType.SEALED, 30) + bytes(30)  # any p2pd datagram


# -- the codec ---------------------------------------------------------------------


def test_a_relay_packet_round_trips_and_swapping_the_id_keeps_its_size() -> None:
    packet = encode_relay(42, INNER)
    assert len(packet) == RELAY_OVERHEAD + len(INNER)
    assert decode_relay_untrusted(packet) == (42, INNER)
    swapped = swap_daemon_id(packet, 7)
    assert len(swapped) == len(packet) and decode_relay_untrusted(swapped) == (7, INNER)


@pytest.mark.parametrize(("data", "reason"), [
    (encode_relay(1, INNER)[:HEADER_SIZE + 3], DropReason.TRUNCATED),
    (encode_header(0x0020, PacketType.RELAY, 4 + len(INNER)) + bytes(4) + INNER,
     DropReason.MALFORMED),  # daemon id 0
    (encode_header(0x0020, PacketType.RELAY, 4 + 20) + b"\0\0\0\1" + bytes(20),
     DropReason.BAD_MAGIC),
    (encode_relay(1, encode_relay(2, INNER)), DropReason.UNEXPECTED),  # no relay loops
    (encode_header(0, PacketType.RELAY, 4 + len(INNER)) + b"\0\0\0\1" + INNER,
     DropReason.BAD_FLAGS),
    (encode_header(0x0020, PacketType.RELAY, 4 + 4) + b"\0\0\0\1" + bytes(4),
     DropReason.TRUNCATED),
])
def test_bad_relay_packets_are_refused_with_their_reason(data: bytes, reason: DropReason) -> None:
    with pytest.raises(BadPacket) as caught:
        decode_relay_untrusted(data)
    assert caught.value.reason is reason


def test_hostile_relay_bytes_raise_only_bad_packet() -> None:
    rng = random.Random(5)
    good = encode_relay(9, INNER)
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))] if rng.random() < 0.3 else data
        with contextlib.suppress(BadPacket):  # anything else fails the test
            decode_relay_untrusted(bytes(data))


def test_encode_refuses_what_would_not_fit() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_relay(1, bytes(MAX_RELAYED + 1))
    with pytest.raises(ValueError, match="out of range"):
        encode_relay(0, INNER)


def test_the_relayed_flag_belongs_to_relay_packets_only() -> None:
    assert parse_header_untrusted(encode_relay(3, INNER)) == (Flag.RELAYED, PacketType.RELAY)
    for packet_type in (PacketType.SEALED, PacketType.CHAT_MESSAGE):
        with pytest.raises(BadPacket) as caught:
            parse_header_untrusted(encode_header(0x0029, packet_type, 0))
        assert caught.value.reason is DropReason.BAD_FLAGS


# -- the coordinator's forwarding rules --------------------------------------------


def registered_pair(w: World) -> tuple[list[int], list[tuple[str, int]]]:
    a, b = w.daemon(150001), w.daemon(150002)
    w.sim.run_until(1.0)
    for node, x in ((a, 100), (b, 103)):
        say(w, node, Presence("prontera", x, 100, 4, False))
    w.sim.run_until(2.0)
    ids = [w.coordinator.store.by_key(n.endpoint.identity.public_key).daemon_id  # type: ignore[union-attr]
           for n in (a, b)]
    return ids, [a.address, b.address]


def test_the_coordinator_forwards_between_introduced_daemons_only() -> None:
    w, _ = world(21)
    (id_a, id_b), (addr_a, addr_b) = registered_pair(w)
    coordinator = w.coordinator
    packet = encode_relay(id_b, INNER)
    coordinator.receive_datagram(packet, addr_a, 3.0)
    out = coordinator.datagrams_to_send(3.0)
    assert out == [(swap_daemon_id(packet, id_a), addr_b)]  # same size, names the sender
    # from an address that is no registered daemon: nothing
    coordinator.receive_datagram(packet, ("198.51.100.9", 4000), 3.0)
    # to a daemon it was never introduced to (far away)
    far = w.daemon(150003)
    w.sim.run_until(4.0)
    say(w, far, Presence("prontera", 300, 300, 4, False))
    w.sim.run_until(5.0)
    far_id = coordinator.store.by_key(far.endpoint.identity.public_key).daemon_id  # type: ignore[union-attr]
    coordinator.receive_datagram(encode_relay(far_id, INNER), addr_a, 5.0)
    coordinator.receive_datagram(encode_relay(999, INNER), addr_a, 5.0)  # nobody
    coordinator.receive_datagram(encode_relay(id_a, INNER), addr_a, 5.0)  # itself
    assert [d for d in coordinator.datagrams_to_send(5.0) if d[0][8:10] == b"\0\x21"] == []
    assert coordinator.relay_drops == Counter(unknown_source=1, not_introduced=1,
                                              unknown_target=2)


def test_relaying_is_rate_limited_per_daemon() -> None:
    w, _ = world(22)
    (_, id_b), (addr_a, _) = registered_pair(w)
    coordinator = w.coordinator
    big = encode_relay(id_b, encode_header(0x0009, PacketType.SEALED, 1000) + bytes(1000))
    for _ in range(100):  # 100 KB at once: beyond the burst
        coordinator.receive_datagram(big, addr_a, 10.0)
    forwarded = len(coordinator.datagrams_to_send(10.0))
    burst = coordinator.settings.relay_burst
    assert forwarded == int(burst // len(big))
    assert coordinator.relay_drops["rate_limited"] == 100 - forwarded
    coordinator.receive_datagram(big, addr_a, 11.0)  # a second later: allowed again
    assert len(coordinator.datagrams_to_send(11.0)) == 1


# -- daemons falling back and coming back --------------------------------------------


class Daemon(CoreNode[Node]):
    """A Node at an address that remembers where its datagrams came from."""

    def __init__(self, address: tuple[str, int], core: Node) -> None:
        super().__init__(address, core)
        self.sources: Counter[tuple[str, int]] = Counter()
        self.chats: list[str] = []
        self.notes: list[dict[str, Any]] = []  # every pushed event, in order

    def _take(self) -> None:
        for note in self.core.take_notifications():
            self.notes.append(note)
            if note.get("event") == "chat":
                self.chats.append(note["text"])

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.sources[addr] += 1
        super().receive_datagram(data, addr, now)
        self._take()

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        self._take()

    def path_to(self, other: Daemon) -> str | None:
        for row in self.core.peers(0.0):
            if row["peer"] == other.core.public_key.hex() and row["state"] == "established":
                return str(row["path"])
        return None


def mesh_daemon(w: World, player: int, x: int, *, relay_only: bool = False,
                max_peers: int = 2, backups: int = 0,
                sync: SyncSettings | None = None) -> Daemon:
    identity = Identity.from_private_bytes(w.rng.randbytes(32))
    config = DaemonConfig(
        source=Path("test.ini"), p2p=P2PSettings(max_peers=max_peers),
        coordinator=CoordinatorSettings(public_key=w.coordinator.public_key, backups=backups,
                                        relay_only=relay_only, embedded=False),
        sync=sync or SyncSettings())
    node = Node(config, identity, epoch=WALL, random_bytes=random.Random(player).randbytes)
    token = mint_token(w.issuer, account_id=player, player_id=player,
                       daemon_key=identity.public_key, lifetime=3600, now=w.wall())
    daemon = Daemon((f"10.9.5.{player % 250}", 7000), node)
    w.sim.add_node(daemon)
    node.start_mesh(COORD_ADDR, token, w.sim.now, rng=random.Random(player))
    stand(w, daemon, x)
    return daemon


def stand(w: World, daemon: Daemon, x: int, y: int = 100) -> None:
    daemon.core.send_event(Position(id=1, map="prontera", x=x, y=y, dir=0, tick=0), (),
                           w.sim.now)


def chat(w: World, sender: Daemon, receiver: Daemon, text: str) -> None:
    sender.core.send_event(Chat(id=1, text=text), (receiver.core.public_key,), w.sim.now)


def test_a_blocked_direct_path_falls_back_to_the_relay_and_returns_when_it_heals() -> None:
    w, _ = world(23)
    a, b = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(b) != "direct" or b.path_to(a) != "direct", 10.0)
    blocked_at = w.sim.now
    w.net.set_path(a.address, b.address, LinkProfile(
        delay=0.005, blackholes=((blocked_at, blocked_at + 20.0),)))
    for i in range(5):  # chat sent as the path dies
        chat(w, a, b, f"line {i}")
        w.sim.run_until(w.sim.now + 0.5)
    assert w.sim.run_while(lambda: a.path_to(b) != "relay" or b.path_to(a) != "relay",
                            w.sim.now + 10.0)
    fell_back = w.sim.now - blocked_at
    assert fell_back <= 6.0, f"relay fallback took {fell_back:.1f} s"
    for i in range(5, 10):  # and through the relay
        chat(w, a, b, f"line {i}")
        w.sim.run_until(w.sim.now + 0.5)
    w.sim.run_until(blocked_at + 19.0)
    assert b.chats == [f"line {i}" for i in range(10)]  # each once, in order
    assert w.coordinator.relayed_packets > 0
    assert a.path_to(b) == b.path_to(a) == "relay"
    assert w.sim.run_while(lambda: a.path_to(b) != "direct" or b.path_to(a) != "direct",
                            w.sim.now + 15.0)
    back = w.sim.now - (blocked_at + 20.0)
    assert back <= 12.0, f"return to direct took {back:.1f} s after the path healed"
    relayed = w.coordinator.relayed_packets
    w.sim.run_until(w.sim.now + 5.0)
    chat(w, b, a, "direct again")
    w.sim.run_until(w.sim.now + 1.0)
    assert a.chats == ["direct again"]
    assert w.coordinator.relayed_packets - relayed <= 2  # stragglers at most
    manager = a.core.mesh
    assert manager is not None and manager.paths.fallbacks == 1 and manager.paths.recoveries == 1


def test_a_direct_dial_that_cannot_get_through_is_made_through_the_relay() -> None:
    w, _ = world(24)
    a = mesh_daemon(w, 1, 100)
    b_address = ("10.9.5.2", 7000)
    w.net.set_path(a.address, b_address, LinkProfile(delay=0.005, blackholes=((0.0, 1e9),)))
    b = mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(b) is None or b.path_to(a) is None,
                            w.sim.now + 15.0)
    assert a.path_to(b) == b.path_to(a) == "relay"
    assert w.sim.now <= 10.0  # one handshake timeout (5 s), then the relay
    chat(w, a, b, "hello through the coordinator")
    w.sim.run_until(w.sim.now + 1.0)
    assert b.chats == ["hello through the coordinator"]


def test_a_relay_only_daemon_never_shows_a_peer_its_address() -> None:
    w, _ = world(25)
    hidden = mesh_daemon(w, 1, 100, relay_only=True)
    other = mesh_daemon(w, 2, 104)
    assert w.sim.run_while(
        lambda: hidden.path_to(other) is None or other.path_to(hidden) is None, 15.0)
    chat(w, hidden, other, "you cannot see where I am")
    chat(w, other, hidden, "indeed")
    w.sim.run_until(w.sim.now + 20.0)  # long enough for any direct probe
    assert other.chats == ["you cannot see where I am"] and hidden.chats == ["indeed"]
    assert hidden.address not in other.sources  # never a datagram from its address
    assert set(other.sources) == {COORD_ADDR}
    assert other.path_to(hidden) == hidden.path_to(other) == "relay"
    peers = other.core.peers(w.sim.now)
    assert all(hidden.address[0] not in str(row) for row in peers)


def test_a_relay_packet_from_anyone_but_the_coordinator_is_dropped() -> None:
    w, _ = world(26)
    a = mesh_daemon(w, 1, 100)
    w.sim.run_until(2.0)
    before = a.core.endpoint.statistics().drops.get("unexpected", 0)
    a.core.receive_datagram(encode_relay(5, INNER), ("10.9.9.9", 7000), w.sim.now)
    assert a.core.endpoint.statistics().drops["unexpected"] == before + 1


def test_a_dead_peer_is_dropped_within_seconds_and_a_backup_takes_its_place() -> None:
    w, _ = world(27)
    a = mesh_daemon(w, 1, 100, max_peers=1, backups=1)
    b, c = mesh_daemon(w, 2, 102), mesh_daemon(w, 3, 106)
    manager = a.core.mesh
    assert manager is not None
    assert w.sim.run_while(lambda: len(manager.links) < 2, w.sim.now + 15.0)
    active = manager.active()[0]
    dead = b if active == b.core.public_key else c
    other = c if dead is b else b
    died = w.sim.now
    for peer in (a, other):  # the daemon is gone: nothing reaches it, nothing comes from it
        w.net.set_path(peer.address, dead.address,
                       LinkProfile(delay=0.005, blackholes=((died, 1e9),)))
    w.net.set_path(dead.address, COORD_ADDR, LinkProfile(delay=0.005, blackholes=((died, 1e9),)))
    assert w.sim.run_while(lambda: manager.active() != [other.core.public_key],
                            w.sim.now + 15.0)
    assert w.sim.now - died <= 10.0
    assert dead.core.public_key not in manager.links and manager.dead_links == 1


class Mortal(Daemon):
    """A daemon process that can be killed (-9) and started again with its key."""

    def __init__(self, address: tuple[str, int], core: Node) -> None:
        super().__init__(address, core)
        self.dead = False

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        if not self.dead:
            super().receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        if not self.dead:
            super().handle_timer(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        out = super().datagrams_to_send(now)
        return [] if self.dead else out

    def get_timer(self) -> float | None:
        return None if self.dead else super().get_timer()


def test_a_killed_daemon_is_replaced_by_a_backup_and_gets_the_chat_of_its_outage_once(
        ) -> None:
    w, _ = world(28)
    a = mesh_daemon(w, 1, 100, max_peers=1, backups=1)
    c = mesh_daemon(w, 3, 106)
    b_old = mesh_daemon(w, 2, 102)  # nearest to a: its active link
    manager = a.core.mesh
    assert manager is not None
    assert w.sim.run_while(lambda: manager.active() != [b_old.core.public_key]
                           or manager.backups() != [c.core.public_key], w.sim.now + 15.0)
    chat(w, a, b_old, "before")
    w.sim.run_until(w.sim.now + 1.0)
    assert b_old.chats == ["before"]
    # kill -9: its node stops, in and out; a mortal stand-in takes its address
    w.sim._nodes[b_old.address] = b = Mortal(b_old.address, b_old.core)
    b.dead = True
    died = w.sim.now
    chat(w, a, b_old, "outage 0")  # the link still stands: queued, never acknowledged
    assert w.sim.run_while(lambda: manager.active() != [c.core.public_key], died + 12.0)
    assert w.sim.now - died <= 10.0  # the backup stepped in
    answer = a.core.send_event(Chat(id=2, text="outage 1"), (b_old.core.public_key,), w.sim.now)
    assert answer["absent"] == 1 and answer["sent"] == 0  # held for the link to come back
    chat(w, a, b_old, "outage 2")
    w.sim.run_until(died + 13.0)
    # it comes back: a new process with the same key, registering afresh
    identity = b.core.endpoint.identity
    node = Node(b.core.config, identity, epoch=WALL, random_bytes=random.Random(77).randbytes)
    b.core, b.dead = node, False
    token = mint_token(w.issuer, account_id=2, player_id=2, daemon_key=identity.public_key,
                       lifetime=3600, now=w.wall())
    node.start_mesh(COORD_ADDR, token, w.sim.now, rng=random.Random(78))
    stand(w, b, 102)
    back = w.sim.now
    assert w.sim.run_while(lambda: b.path_to(a) is None, back + 15.0)
    w.sim.run_until(w.sim.now + 3.0)
    assert b_old.chats == ["before"]  # the process that died
    assert b.chats == ["outage 0", "outage 1", "outage 2"]  # its successor: each once, in order
    # linked again: one of the two active, the other the backup
    assert sorted(manager.active() + manager.backups()) == sorted(
        [b.core.public_key, c.core.public_key])
    assert len(manager.active()) == 1


def test_a_peer_that_refuses_a_link_is_not_dialled_again_at_once() -> None:
    w, _ = world(29)
    full = mesh_daemon(w, 1, 100, max_peers=1, backups=0)
    first = mesh_daemon(w, 2, 101, max_peers=2, backups=0)
    manager = first.core.mesh
    assert manager is not None
    assert w.sim.run_while(lambda: full.path_to(first) is None, w.sim.now + 10.0)
    late = mesh_daemon(w, 3, 102, max_peers=2, backups=0)
    late_manager = late.core.mesh
    assert late_manager is not None
    w.sim.run_until(w.sim.now + 30.0)
    assert full.path_to(first) == "direct"  # it kept the link it had
    assert full.path_to(late) is None  # and refused the newcomer, which ...
    dials = late_manager.connects  # first, full, then full after 5, 10 (+5) and 20 (+10) s
    assert dials <= 2 + 3, f"{dials} dials in 30 s: it insists on a full peer"


def walk(w: World, daemon: Daemon, xs: range, step: float = 0.15) -> None:
    for x in xs:
        daemon.core.send_event(Position(id=1, map="prontera", x=x, y=100, dir=6, moving=True,
                                        tick=int(w.sim.now * 1000)), (), w.sim.now)
        w.sim.run_until(w.sim.now + step)


def test_a_walker_that_passed_by_is_not_dialled_after_it_has_gone() -> None:
    w, _ = world(30)
    still = mesh_daemon(w, 1, 100, max_peers=1, backups=0)
    friend = mesh_daemon(w, 3, 101, max_peers=1, backups=0)
    manager = still.core.mesh
    assert manager is not None
    assert w.sim.run_while(lambda: still.path_to(friend) is None, w.sim.now + 10.0)
    walker = mesh_daemon(w, 2, 95, max_peers=3, backups=0)  # introduced: still is full
    walk(w, walker, range(96, 150))  # through and far away
    assert walker.core.public_key in manager.candidates  # what the introduction said
    dials = manager.connects
    walk(w, friend, range(102, 140))  # the friend leaves too: still has room again
    assert w.sim.run_while(lambda: still.path_to(friend) is not None, w.sim.now + 20.0)
    w.sim.run_until(w.sim.now + 10.0)
    assert still.path_to(walker) is None and walker.path_to(still) is None
    assert manager.connects == dials  # neither is dialled from where it was last seen


def test_the_coordinator_offers_anew_after_a_few_steps_within_its_bucket() -> None:
    w, _ = world(32)
    anchor = mesh_daemon(w, 1, 114)
    pacer = mesh_daemon(w, 2, 131)  # 17 cells: out of range, the same 14-cell bucket row
    w.sim.run_until(5.0)
    assert anchor.path_to(pacer) is None
    walk(w, pacer, range(130, 125, -1))  # 11 cells away now, a few steps within the bucket
    assert w.sim.run_while(lambda: anchor.path_to(pacer) is None, w.sim.now + 5.0)


def test_daemons_report_a_peer_sending_garbage_and_relay_fallbacks_to_the_coordinator() -> None:
    w, _ = world(33)
    a, b = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(b) != "direct", w.sim.now + 10.0)
    for _ in range(6):  # authentic, but not events: a broken or hostile peer
        b.core.endpoint.send(a.core.public_key, PacketType.CHAT_MESSAGE, b"\xc1 not msgpack",
                             w.sim.now)
    w.sim.run_until(w.sim.now + 3.0)
    reports = [(r.player_id, r.report.code, r.report.peer) for r in w.coordinator.reports]
    assert (1, "invalid_events", b.core.public_key) in reports
    assert reports.count((1, "invalid_events", b.core.public_key)) == 1  # not repeated
    blocked_at = w.sim.now
    w.net.set_path(a.address, b.address, LinkProfile(
        delay=0.005, blackholes=((blocked_at, blocked_at + 10.0),)))
    assert w.sim.run_while(lambda: a.path_to(b) != "relay", w.sim.now + 10.0)
    w.sim.run_until(w.sim.now + 2.0)
    codes = {(r.player_id, r.report.code) for r in w.coordinator.reports}
    assert (1, "relay_fallback") in codes or (2, "relay_fallback") in codes


def test_reports_are_rate_limited_and_wait_for_the_coordinator() -> None:
    w, _ = world(34)
    a = mesh_daemon(w, 1, 100)
    manager = a.core.mesh
    assert manager is not None and not manager.coordinator_up  # not registered yet
    sent = [manager.report("warn", f"code{i}", "detail", 0.0) for i in range(7)]
    assert sent == [True] * 5 + [False] * 2  # a burst of 5, then 1 per 5 s
    assert not manager.report("warn", "code0", "again", 30.0)  # once a minute per (code, peer)
    w.sim.run_until(2.0)  # registered: the five waiting ones go
    assert sorted(r.report.code for r in w.coordinator.reports) == [f"code{i}" for i in range(5)]


def test_the_client_is_told_when_the_coordinator_goes_and_comes_back() -> None:
    w, _ = world(35)
    a, b = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(b) != "direct", w.sim.now + 10.0)
    gone = w.sim.now
    for daemon in (a, b):
        w.net.set_path(daemon.address, COORD_ADDR,
                       LinkProfile(delay=0.005, blackholes=((gone, gone + 90.0),)))
    w.sim.run_until(gone + 80.0)
    states = [(n["state"], n["degraded"]) for n in a.notes if n["event"] == "coordinator"]
    assert states == [("registered", False), ("unreachable", True)]
    assert a.path_to(b) == "direct"  # the link stands
    chat(w, a, b, "still here")
    w.sim.run_until(w.sim.now + 1.0)
    assert b.chats == ["still here"]
    w.sim.run_until(gone + 150.0)
    states = [(n["state"], n["degraded"]) for n in a.notes if n["event"] == "coordinator"]
    assert states[-1] == ("registered", False) and len(states) == 3


def test_a_peer_with_a_forged_or_borrowed_certificate_is_refused() -> None:
    w, _ = world(36)
    a = mesh_daemon(w, 1, 100)
    honest = mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(honest) is None, w.sim.now + 10.0)
    manager = honest.core.mesh
    assert manager is not None and manager.registered is not None
    borrowed = manager.registered.certificate  # a real certificate, for honest's key
    forger = Ed25519PrivateKey.generate()  # not the coordinator's signing key
    for n, certificate in enumerate(("forged", "borrowed")):
        identity = Identity.from_private_bytes(w.rng.randbytes(32))
        cert = (issue_certificate(forger, player_id=9, identity_key=identity.public_key,
                                  lifetime=600, now=w.wall())
                if certificate == "forged" else borrowed)
        intruder = EndpointNode((f"10.9.7.{n + 1}", 7000), Endpoint(
            identity.with_certificate(cert), random_bytes=random.Random(n).randbytes))
        w.sim.add_node(intruder)
        before = a.core.endpoint.statistics().drops.get("peer_refused", 0)
        intruder.endpoint.connect(a.core.public_key, a.address, w.sim.now)
        w.sim.run_until(w.sim.now + 3.0)
        assert intruder.events_of(SessionEstablished) == [], certificate
        assert identity.public_key.hex() not in {p["peer"] for p in a.core.peers(w.sim.now)}
        assert a.core.endpoint.statistics().drops["peer_refused"] > before, certificate


def positions_from(daemon: Daemon, sender: Daemon) -> list[int]:
    return [n["x"] for n in daemon.notes
            if n["event"] == "position" and n.get("from") == sender.core.public_key.hex()]


def test_positions_go_only_to_players_in_view() -> None:
    w, _ = world(37)
    a, b = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(b) != "direct", w.sim.now + 10.0)
    walk(w, b, range(105, 118))  # to 17 cells from a: out of view, still linked (drop at 18)
    w.sim.run_until(w.sim.now + 2.0)
    assert a.path_to(b) == "direct"
    # at most the step that left a's view (walks a can dead-reckon are not sent)
    assert max(positions_from(a, b)) <= 115
    before = len(positions_from(b, a))
    for tick in range(5):  # a turns on the spot: nothing of it may reach b
        answer = a.core.send_event(Position(id=1, map="prontera", x=100, y=100, dir=tick % 8,
                                            tick=tick), (), w.sim.now)
        assert answer["out_of_view"] == 1 and answer["sent"] == 0
        w.sim.run_until(w.sim.now + 0.5)
    assert len(positions_from(b, a)) == before
    walk(w, b, range(116, 109, -1))  # back within 14 cells
    a.core.send_event(Position(id=1, map="prontera", x=100, y=100, dir=3, tick=99), (),
                      w.sim.now)
    w.sim.run_until(w.sim.now + 1.0)
    assert len(positions_from(b, a)) > before


def test_a_player_with_room_for_peers_is_offered_anew_at_every_step() -> None:
    w, _ = world(38)
    anchor = mesh_daemon(w, 1, 114)
    pacer = mesh_daemon(w, 2, 130)  # 16 cells: out of range; each of them alone
    w.sim.run_until(5.0)
    assert anchor.path_to(pacer) is None
    walk(w, pacer, range(129, 127, -1))  # two steps: 14 cells, then it stands
    assert w.sim.run_while(lambda: anchor.path_to(pacer) is None, w.sim.now + 5.0)


# -- presence, lists and dials ---------------------------------------------------


def test_a_presence_on_a_new_map_that_is_lost_is_sent_again_until_its_list_arrives() -> None:
    """Presence is unreliable; a map change must not stay unknown for a discovery
    interval (30 s) because one datagram was lost."""
    w, _ = world(40)
    a = mesh_daemon(w, 1, 100)
    w.sim.run_until(3.0)
    record = w.coordinator.store.by_key(a.core.public_key)
    assert record is not None and record.map == "prontera"
    lost_from = w.sim.now
    w.net.set_link(a.address, COORD_ADDR, LinkProfile(
        delay=0.005, blackholes=((lost_from, lost_from + 0.5),)))
    a.core.send_event(Position(id=1, map="geffen", x=50, y=50, dir=0, tick=0), (), w.sim.now)
    w.sim.run_until(lost_from + 0.5)
    assert record.map == "prontera"  # the report was lost
    assert w.sim.run_while(lambda: record.map != "geffen", lost_from + 2.5)
    # and once the coordinator answered, the daemon stops repeating itself
    taken = w.coordinator.messages["presence"]
    w.sim.run_until(w.sim.now + 10.0)
    assert w.coordinator.messages["presence"] == taken


def test_the_coordinator_takes_no_presence_older_than_the_newest() -> None:
    w, _ = world(41)
    a = mesh_daemon(w, 1, 100)
    w.sim.run_until(3.0)
    record = w.coordinator.store.by_key(a.core.public_key)
    assert record is not None
    newest = record.presence_seq
    endpoint = a.core.endpoint
    key = w.coordinator.public_key
    endpoint.send_presence(key, encode_presence(Presence("prontera", 120, 100), newest + 2),
                           w.sim.now)
    w.sim.run_until(w.sim.now + 0.1)
    endpoint.send_presence(key, encode_presence(Presence("prontera", 110, 100), newest + 1),
                           w.sim.now)  # overtaken on the way
    w.sim.run_until(w.sim.now + 0.1)
    assert w.coordinator.presence.position(record.daemon_id) == ("prontera", 120, 100)
    assert w.coordinator.messages["presence_stale"] == 1


def test_a_walker_alone_gets_one_list_until_someone_comes_into_view() -> None:
    w, _ = world(42)
    walker = mesh_daemon(w, 1, 100)
    w.sim.run_until(3.0)
    sent = w.coordinator.sent["candidates"]
    walk(w, walker, range(101, 109))  # eight steps; nobody anywhere near
    assert w.coordinator.sent["candidates"] == sent  # the same empty list: not sent again
    other = mesh_daemon(w, 2, 120)  # 12 cells ahead: in view at once
    w.sim.run_until(w.sim.now + 0.5)
    walk(w, walker, range(109, 110))
    manager = walker.core.mesh
    assert manager is not None
    assert w.sim.run_while(lambda: other.core.public_key not in manager.candidates,
                            w.sim.now + 2.0)


def dials_seen(w: World) -> list[tuple[int, int]]:
    """(dialler's player id, dialled daemon id) of every dial the coordinator takes."""
    seen: list[tuple[int, int]] = []
    coordinator = w.coordinator
    take = coordinator._on_dial

    def recording(record: Any, dial: Any, now: float) -> None:
        seen.append((record.player_id, dial.daemon_id))
        take(record, dial, now)

    coordinator._on_dial = recording  # type: ignore[method-assign]
    return seen


def test_two_daemons_that_list_each_other_each_dial_once_and_link() -> None:
    w, _ = world(43)
    dials = dials_seen(w)
    a = mesh_daemon(w, 1, 100)
    w.sim.run_until(2.0)
    b = mesh_daemon(w, 2, 104)  # b's report gets a, alone and with room, a fresh list
    assert w.sim.run_while(lambda: a.path_to(b) is None or b.path_to(a) is None,
                            w.sim.now + 10.0)
    w.sim.run_until(w.sim.now + 5.0)
    assert sorted(player for player, _ in dials) == [1, 2]  # both dialled at once, once
    assert w.coordinator.sent["introduce"] == 2


def test_a_daemon_answering_an_introduction_sends_no_dial_of_its_own() -> None:
    w, _ = world(45)
    dials = dials_seen(w)
    a = mesh_daemon(w, 1, 100, max_peers=1)  # wants 2 candidates: c and d fill its list
    c, d = mesh_daemon(w, 3, 109), mesh_daemon(w, 4, 110)
    w.sim.run_until(5.0)
    manager = a.core.mesh
    assert manager is not None and set(manager.candidates) == {c.core.public_key,
                                                               d.core.public_key}
    b = mesh_daemon(w, 2, 101)  # nearest to a; a's full list gets no fresh one
    assert w.sim.run_while(lambda: a.path_to(b) is None, w.sim.now + 10.0)
    w.sim.run_until(w.sim.now + 3.0)
    b_id = w.coordinator.store.by_key(b.core.public_key).daemon_id  # type: ignore[union-attr]
    assert (2, w.coordinator.store.by_key(a.core.public_key).daemon_id) in dials  # type: ignore[union-attr]
    assert (1, b_id) not in dials  # a heard of b from b's dial, and answered it


def test_a_presence_frame_from_a_peer_is_dropped_as_invalid() -> None:
    w, _ = world(44)
    a, b = mesh_daemon(w, 1, 100), mesh_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: a.path_to(b) is None, w.sim.now + 10.0)
    invalid = a.core.events_invalid
    b.core.endpoint.send_presence(a.core.public_key,
                                  encode_presence(Presence("prontera", 1, 1), 1), w.sim.now)
    w.sim.run_until(w.sim.now + 0.5)
    assert a.core.events_invalid == invalid + 1
    assert a.path_to(b) is not None  # counted, not fatal
