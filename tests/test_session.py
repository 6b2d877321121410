"""Sessions between two endpoints, in virtual time, over the simulated network."""

from __future__ import annotations

import random
import struct

import pytest

from p2pd.crypto.transport import OVERHEAD
from p2pd.session.config import EncryptionLevel, SessionConfig
from p2pd.session.endpoint import SessionError
from p2pd.session.events import (
    CloseReason,
    MessageReceived,
    PeerAddressChanged,
    SessionClosed,
    SessionEstablished,
)
from p2pd.session.session import MessageTooLarge, Session
from p2pd.sim.network import LinkProfile
from p2pd.wire.frames import encode_frames
from p2pd.wire.header import HEADER_SIZE
from p2pd.wire.types import COMPRESSION_FLAGS, Flag, PacketType
from tests.sessions import A_ADDR, B_ADDR, Pair, make_pair


def established(pair: Pair) -> bool:
    return bool(pair.a.events_of(SessionEstablished)) and bool(pair.b.events_of(SessionEstablished))


def handshake(pair: Pair, limit: float = 10.0) -> None:
    pair.a.endpoint.connect(pair.b_key, B_ADDR, pair.sim.now)
    assert pair.sim.run_while(lambda: not established(pair), limit)


def test_handshake_and_messages_on_a_clean_link() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.02))
    handshake(pair)
    (a_est,) = pair.a.events_of(SessionEstablished)
    (b_est,) = pair.b.events_of(SessionEstablished)
    assert (a_est.peer, a_est.initiator, a_est.address) == (pair.b_key, True, B_ADDR)
    assert (b_est.peer, b_est.initiator, b_est.address) == (pair.a_key, False, A_ADDR)
    # initiator: request out, response in at 0.04; responder: confirmed by the PING at 0.06
    a_times = [t for t, e in pair.a.events if isinstance(e, SessionEstablished)]
    b_times = [t for t, e in pair.b.events if isinstance(e, SessionEstablished)]
    assert a_times == [pytest.approx(0.04)] and b_times == [pytest.approx(0.06)]

    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"hello from a", now)
    pair.b.endpoint.send(pair.a_key, PacketType.VISUAL_EFFECT, b"\x01" * 40, now)
    pair.sim.run_until(now + 0.1)
    assert pair.b.events_of(MessageReceived) == [
        MessageReceived(pair.a_key, PacketType.CHAT_MESSAGE, b"hello from a")
    ]
    assert pair.a.events_of(MessageReceived) == [
        MessageReceived(pair.b_key, PacketType.VISUAL_EFFECT, b"\x01" * 40)
    ]


def test_messages_sent_before_the_handshake_wait_for_it() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"early", 0.0)
    assert pair.a.endpoint.session_statistics(pair.b_key).queued == len(b"early")
    pair.sim.run_until(1.0)
    assert [e.payload for e in pair.b.events_of(MessageReceived)] == [b"early"]


@pytest.mark.parametrize("level", list(EncryptionLevel))
def test_no_level_puts_content_readable_on_the_wire(level: EncryptionLevel) -> None:
    # one message per datagram (no batching), so that each shows its own header
    pair = make_pair(config=SessionConfig(encryption_level=level, coalesce_delay=0))
    handshake(pair)
    sent: list[bytes] = []
    original = pair.net.send

    def capture(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        sent.append(data)
        original(src, dst, data, now)

    pair.net.send = capture  # type: ignore[method-assign]
    marker = b"SECRET-CHAT-LINE"
    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, marker * 3, now)
    pair.a.endpoint.send(pair.b_key, PacketType.VISUAL_EFFECT, marker, now)
    pair.a.endpoint.send(pair.b_key, PacketType.AI_INTERACTION, marker * 20, now)  # compressed
    pair.sim.run_until(now + 0.1)
    assert len(pair.b.events_of(MessageReceived)) == 3
    assert sent and all(marker not in d for d in sent)
    types = {struct.unpack_from(">H", d, 8)[0] for d in sent}
    assert types == {PacketType.SEALED}  # the type of what travels is hidden at every level
    # below the compression threshold, level high sizes come in 32-byte steps
    plain = [d for d in sent if not struct.unpack_from(">H", d, 6)[0] & COMPRESSION_FLAGS]
    assert len(plain) >= 2
    assert all((len(d) - OVERHEAD) % 32 == 0 for d in plain) == (level is EncryptionLevel.HIGH)


def test_exact_sizes_of_handshake_and_small_message() -> None:
    pair = make_pair()
    sizes: list[int] = []
    original = pair.net.send

    def capture(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        sizes.append(len(data))
        original(src, dst, data, now)

    pair.net.send = capture  # type: ignore[method-assign]
    handshake(pair)
    # request: header 14 + index 4 + e 32 + s 48 + payload (8+2)+16 + macs 32
    # response: header 14 + index 4 + e 32 + payload (4+2)+16 + macs 32
    # PING at high level: 42 overhead + frame (4+4) padded to 32
    assert sizes[:3] == [157, 105, OVERHEAD + 32]
    assert HEADER_SIZE == 14


@pytest.mark.parametrize("seed", range(100))
def test_handshake_completes_under_30_percent_loss(seed: int) -> None:
    profile = LinkProfile(loss=0.3, delay=0.03, jitter=0.02, duplicate=0.05,
                          reorder=0.1, corrupt=0.02)
    pair = make_pair(seed, profile=profile, config=SessionConfig(handshake_timeout=15.0))
    handshake(pair, limit=15.0)


def test_handshake_under_30_percent_loss_mostly_beats_the_default_timeout() -> None:
    """With the default 5 s, each attempt (request and response) succeeds with
    probability 0.49 and about seven attempts fit, so ~1% of handshakes miss."""
    profile = LinkProfile(loss=0.3, delay=0.03, jitter=0.02)
    completed = 0
    for seed in range(200):
        pair = make_pair(1000 + seed, profile=profile)
        pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
        pair.sim.run_until(6.0)
        if pair.a.events_of(SessionEstablished):
            completed += 1
        else:
            (closed,) = pair.a.events_of(SessionClosed)
            assert closed.reason is CloseReason.HANDSHAKE_TIMEOUT
    assert completed >= 190


def test_handshake_timeout_fires_when_due_and_not_before() -> None:
    pair = make_pair()
    pair.net.set_link(A_ADDR, B_ADDR, LinkProfile(blackholes=((0.0, 100.0),)))
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.sim.run_until(4.999)
    assert pair.a.events_of(SessionClosed) == []
    pair.sim.run_until(5.5)
    closed = [(t, e) for t, e in pair.a.events if isinstance(e, SessionClosed)]
    assert closed == [(5.0, SessionClosed(pair.b_key, CloseReason.HANDSHAKE_TIMEOUT))]
    assert pair.a.endpoint.get_timer() is None


def test_inactive_timeout_fires_when_due_and_not_before() -> None:
    config = SessionConfig(inactive_timeout=30.0, ping_interval=2.0)
    pair = make_pair(config=config)
    handshake(pair)
    pair.sim.run_until(10.0)
    cut = 10.0
    pair.net.set_link(B_ADDR, A_ADDR, LinkProfile(blackholes=((cut, 1e9),)))
    last = pair.a.endpoint._sessions[pair.b_key].last_received  # white-box: when A last heard B
    assert last <= cut
    pair.sim.run_until(last + 30.0 - 0.001)
    assert pair.a.events_of(SessionClosed) == []
    pair.sim.run_until(last + 31.0)
    closed = [(t, e) for t, e in pair.a.events if isinstance(e, SessionClosed)]
    assert [e for _, e in closed] == [SessionClosed(pair.b_key, CloseReason.INACTIVE)]
    assert closed[0][0] == pytest.approx(last + 30.0)
    # A said DISCONNECT on its way out, and B heard it (only B->A is cut)
    assert [e.reason for e in pair.b.events_of(SessionClosed)] == [CloseReason.PEER_DISCONNECT]


def test_session_stays_up_while_pings_flow() -> None:
    pair = make_pair(config=SessionConfig(inactive_timeout=5.0), profile=LinkProfile(delay=0.05))
    handshake(pair)
    pair.sim.run_until(120.0)
    assert pair.a.events_of(SessionClosed) == [] and pair.b.events_of(SessionClosed) == []
    rtt = pair.a.endpoint.session_statistics(pair.b_key).rtt
    assert rtt.samples > 50
    assert rtt.smoothed == pytest.approx(0.1) and rtt.min == pytest.approx(0.1)


def test_rtt_statistics_follow_jitter() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.04, jitter=0.02))
    handshake(pair)
    pair.sim.run_until(60.0)
    rtt = pair.a.endpoint.session_statistics(pair.b_key).rtt
    assert rtt.min is not None and rtt.max is not None and rtt.smoothed is not None
    assert 0.08 <= rtt.min < rtt.smoothed < rtt.max <= 0.12
    assert rtt.variance is not None and rtt.variance > 0


def test_rtt_history_bounds_the_samples_kept_for_percentiles() -> None:
    pair = make_pair(config=SessionConfig(rtt_history=8), b_config=SessionConfig(rtt_history=0),
                     profile=LinkProfile(delay=0.04, jitter=0.02))
    handshake(pair)
    pair.sim.run_until(60.0)  # a dozen PINGs each way
    kept = pair.a.endpoint.session_statistics(pair.b_key).rtt
    assert kept.samples > 8 and len(pair.a.endpoint.rtt_samples(pair.b_key)) == 8
    assert kept.p50 is not None and kept.p99 is not None
    none = pair.b.endpoint.session_statistics(pair.a_key).rtt
    assert none.samples > 8 and pair.b.endpoint.rtt_samples(pair.a_key) == []
    assert none.p50 is None and none.p99 is None  # smoothed and extremes all the same:
    assert none.smoothed is not None and none.min is not None and none.max is not None


@pytest.mark.parametrize("seed", range(20))
def test_simultaneous_open_yields_one_session(seed: int) -> None:
    profile = LinkProfile(delay=0.03, jitter=0.01, loss=0.1 if seed % 2 else 0.0)
    pair = make_pair(seed, profile=profile)
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.b.endpoint.connect(pair.a_key, A_ADDR, 0.0)
    assert pair.sim.run_while(lambda: not established(pair), 10.0)
    pair.sim.run_until(pair.sim.now + 3.0)
    (a_est,) = pair.a.events_of(SessionEstablished)
    (b_est,) = pair.b.events_of(SessionEstablished)
    assert a_est.initiator != b_est.initiator
    # The lower static key keeps the initiator role.
    assert a_est.initiator == (pair.a_key < pair.b_key)
    a_session = pair.a.endpoint._sessions[pair.b_key]
    b_session = pair.b.endpoint._sessions[pair.a_key]
    assert a_session.current is not None and b_session.current is not None
    # keys of one handshake: each side opens what the other seals
    for sealer, opener in ((a_session.current, b_session.current),
                           (b_session.current, a_session.current)):
        assert opener.open_untrusted(sealer.seal(0x0009, 0x0010, b"one handshake")) == (
            b"one handshake")
    assert a_session.current.remote_index == b_session.current.local_index
    assert pair.a.endpoint.statistics().sessions == 1 == pair.b.endpoint.statistics().sessions


def test_graceful_disconnect() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    handshake(pair)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)
    pair.sim.run_until(pair.sim.now + 1.0)
    assert pair.a.events_of(SessionClosed) == [SessionClosed(pair.b_key, CloseReason.LOCAL)]
    assert pair.b.events_of(SessionClosed) == [
        SessionClosed(pair.a_key, CloseReason.PEER_DISCONNECT)
    ]
    assert pair.a.endpoint.peers() == [] and pair.b.endpoint.peers() == []
    with pytest.raises(SessionError):
        pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"x", pair.sim.now)


def test_reconnect_after_disconnect() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    handshake(pair)
    pair.a.endpoint.close(pair.b_key, pair.sim.now)
    pair.sim.run_until(pair.sim.now + 1.0)
    pair.b.endpoint.connect(pair.a_key, A_ADDR, pair.sim.now)
    pair.sim.run_until(pair.sim.now + 1.0)
    assert len(pair.a.events_of(SessionEstablished)) == 2
    assert pair.b.events_of(SessionEstablished)[-1].initiator is True


def _capture_to(pair: Pair, to: tuple[str, int]) -> list[bytes]:
    seen: list[bytes] = []
    original = pair.net.send

    def capture(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        if dst == to:
            seen.append(data)
        original(src, dst, data, now)

    pair.net.send = capture  # type: ignore[method-assign]
    return seen


def test_forged_packets_change_no_state() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    handshake(pair)
    seen = _capture_to(pair, B_ADDR)
    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"genuine", now)
    pair.a.endpoint.flush(now)
    genuine = pair.a.endpoint.datagrams_to_send(now)[0][0]  # taken off the wire by us
    assert seen == []
    b = pair.b.endpoint
    session = b._sessions[pair.a_key]
    before = (session.last_received, session.address, session.current and
              session.current._replay.highest)
    for bit in range(len(genuine) * 8):
        forged = bytearray(genuine)
        forged[bit // 8] ^= 1 << (bit % 8)
        b.receive_datagram(bytes(forged), ("203.0.113.9", 4444), now + 5.0)
    after = (session.last_received, session.address, session.current and
             session.current._replay.highest)
    assert after == before
    assert b.next_event() is None
    drops = b.statistics().drops
    assert sum(drops.values()) == len(genuine) * 8
    assert drops.get("auth_failed", 0) > 0
    # the genuine packet still gets through afterwards: the window did not move
    b.receive_datagram(genuine, A_ADDR, now + 5.0)
    assert b.next_event() == MessageReceived(pair.a_key, PacketType.CHAT_MESSAGE, b"genuine")


def test_replayed_packets_are_dropped_and_counted() -> None:
    pair = make_pair()
    handshake(pair)
    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"once", now)
    pair.a.endpoint.flush(now)
    (datagram, _), = pair.a.endpoint.datagrams_to_send(now)
    b = pair.b.endpoint
    for _ in range(3):
        b.receive_datagram(datagram, A_ADDR, now)
    assert b.next_event() == MessageReceived(pair.a_key, PacketType.CHAT_MESSAGE, b"once")
    assert b.next_event() is None
    assert b.statistics().drops == {"replayed": 2}
    assert b.session_statistics(pair.a_key).drops == {"replayed": 2}


def test_replayed_handshake_request_is_refused() -> None:
    pair = make_pair()
    requests = _capture_to(pair, B_ADDR)
    handshake(pair)
    request = requests[0]
    pair.b.endpoint.receive_datagram(request, A_ADDR, pair.sim.now)
    assert pair.b.endpoint.statistics().drops == {"handshake_replayed": 1}


def test_peer_address_follows_authenticated_packets_only() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    handshake(pair)
    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"from a new port", now)
    pair.a.endpoint.flush(now)
    (datagram, _), = pair.a.endpoint.datagrams_to_send(now)
    roamed = ("10.0.0.1", 7777)
    pair.b.receive_datagram(datagram, roamed, now)
    assert pair.b.events_of(PeerAddressChanged) == [PeerAddressChanged(pair.a_key, A_ADDR, roamed)]
    assert pair.b.endpoint.session_statistics(pair.a_key).address == roamed


def test_rekey_by_message_count_never_reuses_a_nonce() -> None:
    config = SessionConfig(rekey_after_messages=50, reject_after_messages=80, ping_interval=0.5)
    pair = make_pair(profile=LinkProfile(delay=0.01), config=config)
    seen = _capture_to(pair, B_ADDR)
    handshake(pair)
    for i in range(400):
        pair.a.endpoint.send(pair.b_key, PacketType.VISUAL_EFFECT, i.to_bytes(4, "big"),
                             pair.sim.now)
        pair.sim.run_until(pair.sim.now + 0.02)
    received = [e.payload for e in pair.b.events_of(MessageReceived)]
    assert received == [i.to_bytes(4, "big") for i in range(400)]
    nonces = [struct.unpack_from(">IQ", d, 14) for d in seen if d[6:8] != b"\x00\x00"]
    assert len(nonces) == len(set(nonces))  # (receiver index, counter): unique per key
    stats = pair.a.endpoint.session_statistics(pair.b_key)
    assert stats.rekeys >= 400 // 80
    assert max(counter for _, counter in nonces) < 80


def test_rekey_by_time() -> None:
    config = SessionConfig(encryption_level=EncryptionLevel.MEDIUM)
    pair = make_pair(profile=LinkProfile(delay=0.01), config=config)
    handshake(pair)
    pair.sim.run_until(600.0)
    assert pair.a.endpoint.session_statistics(pair.b_key).rekeys == 4  # at 120, 240, 360, 480
    assert pair.a.events_of(SessionClosed) == []
    now = pair.sim.now
    pair.b.endpoint.send(pair.a_key, PacketType.CHAT_MESSAGE, b"still here", now)
    pair.sim.run_until(now + 0.1)
    assert pair.a.events_of(MessageReceived)[-1].payload == b"still here"


def test_peer_policy_refuses_unknown_initiators() -> None:
    pair = make_pair(b_policy=lambda key, cert: False)
    pair.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    pair.sim.run_until(6.0)
    assert pair.b.events == []
    assert pair.b.endpoint.statistics().drops.get("peer_refused", 0) >= 1
    assert [e.reason for e in pair.a.events_of(SessionClosed)] == [CloseReason.HANDSHAKE_TIMEOUT]


def test_certificates_travel_in_the_handshake() -> None:
    seen: list[tuple[bytes, bytes | None]] = []

    def policy(key: bytes, cert: bytes | None) -> bool:
        seen.append((key, cert))
        return cert == b"cert-of-a"

    pair = make_pair(b_policy=policy)
    a = pair.a.endpoint
    a.identity = a.identity.with_certificate(b"cert-of-a")
    handshake(pair)
    assert seen == [(pair.a_key, b"cert-of-a")]
    assert pair.b.events_of(SessionEstablished)[0].certificate == b"cert-of-a"


def test_cookie_under_load_still_lets_a_real_peer_in() -> None:
    config = SessionConfig(handshake_load_limit=2)
    pair = make_pair(profile=LinkProfile(delay=0.01), b_config=config)
    # a flood of requests from other (spoofed) addresses fills this second's budget
    flood = make_pair(seed=99)
    flood.a.endpoint.connect(pair.b_key, B_ADDR, 0.0)
    (request, _), = flood.a.endpoint.datagrams_to_send(0.0)
    for port in range(10):
        pair.b.endpoint.receive_datagram(request, ("198.51.100.1", port), 0.0)
    assert pair.b.endpoint.statistics().cookie_replies == 8
    pair.b.endpoint.datagrams_to_send(0.0)  # the cookie replies go nowhere
    handshake(pair, limit=5.0)
    assert pair.b.endpoint.statistics().cookie_replies >= 9  # A had to fetch one too


def test_local_misuse_raises_clear_errors() -> None:
    pair = make_pair()
    a = pair.a.endpoint
    with pytest.raises(SessionError, match="32 bytes"):
        a.connect(b"short", B_ADDR, 0.0)
    with pytest.raises(SessionError, match="own key"):
        a.connect(pair.a_key, B_ADDR, 0.0)
    with pytest.raises(SessionError, match="no session"):
        a.send(pair.b_key, PacketType.CHAT_MESSAGE, b"x", 0.0)
    handshake(pair)
    with pytest.raises(SessionError, match="not an application message"):
        a.send(pair.b_key, PacketType.PING, b"x", 0.0)
    with pytest.raises(SessionError, match="send_position"):
        a.send(pair.b_key, PacketType.POSITION_UPDATE, b"x", 0.0)
    with pytest.raises(SessionError, match="need a key"):
        a.send(pair.b_key, PacketType.ENVIRONMENTAL, b"x", 0.0)
    with pytest.raises(SessionError, match="need a key"):
        a.send(pair.b_key, PacketType.CHAT_MESSAGE, b"x", 0.0, key=b"k")
    with pytest.raises(MessageTooLarge, match="max_message_size"):  # reliable: up to 64 KiB
        a.send(pair.b_key, PacketType.CHAT_MESSAGE, bytes(65537), 0.0)
    with pytest.raises(MessageTooLarge, match="unreliable"):  # unreliable: one datagram
        a.send(pair.b_key, PacketType.VISUAL_EFFECT, bytes(1200), 0.0)


def test_hostile_datagrams_never_raise_and_are_counted() -> None:
    pair = make_pair()
    captured = _capture_to(pair, B_ADDR)
    handshake(pair)
    pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, b"x" * 300, pair.sim.now)
    pair.sim.run_until(pair.sim.now + 0.1)
    rng = random.Random(7)
    b = pair.b.endpoint
    fed = 0
    for _ in range(3000):
        base = bytearray(rng.choice(captured))
        choice = rng.random()
        if choice < 0.3:
            data = bytes(base[: rng.randrange(len(base))])
        elif choice < 0.8:
            for _ in range(rng.randint(1, 4)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            data = bytes(base)
        else:
            data = rng.randbytes(rng.randrange(0, 1600))
        b.receive_datagram(data, ("192.0.2.1", rng.randrange(65536)), pair.sim.now)
        fed += 1
    stats = b.statistics()
    assert sum(stats.drops.values()) >= fed - 5  # a mutation may leave a datagram intact
    assert stats.sessions == 1


def _seal_frames(pair: Pair, frames: list[tuple[int, bytes]]) -> bytes:
    """A datagram from A to B carrying ``frames``, sealed with A's real keys."""
    keypair = pair.a.endpoint._sessions[pair.b_key].current
    assert keypair is not None
    return keypair.seal(int(Flag.ENCRYPTED | Flag.BATCHED), PacketType.SEALED,
                        encode_frames(frames))


def test_many_pings_in_one_datagram_get_one_pong() -> None:
    pair = make_pair()
    handshake(pair)
    datagram = _seal_frames(pair, [(PacketType.PING, bytes(4))] * 100)
    b = pair.b.endpoint
    b.datagrams_to_send(pair.sim.now)
    b.receive_datagram(datagram, A_ADDR, pair.sim.now)
    assert len(b.datagrams_to_send(pair.sim.now)) == 1


def test_frames_after_a_disconnect_are_not_delivered() -> None:
    pair = make_pair()
    handshake(pair)
    datagram = _seal_frames(pair, [(PacketType.CHAT_MESSAGE, bytes(4) + b"before"),
                                   (PacketType.DISCONNECT, b""),
                                   (PacketType.CHAT_MESSAGE, b"\x00\x00\x00\x01after")])
    pair.b.receive_datagram(datagram, A_ADDR, pair.sim.now)
    assert [e.payload for e in pair.b.events_of(MessageReceived)] == [b"before"]
    assert pair.b.events_of(SessionClosed) == [
        SessionClosed(pair.a_key, CloseReason.PEER_DISCONNECT)
    ]


def test_messages_beyond_the_key_limit_wait_for_the_new_keys() -> None:
    config = SessionConfig(rekey_after_messages=50, reject_after_messages=80, coalesce_delay=0)
    pair = make_pair(profile=LinkProfile(delay=0.01), config=config)
    seen = _capture_to(pair, B_ADDR)
    handshake(pair)
    now = pair.sim.now
    for i in range(100):  # all at once: the last 20 exceed the first keys
        pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, i.to_bytes(2, "big"), now)
    assert pair.a.endpoint.session_statistics(pair.b_key).queued > 0
    pair.sim.run_until(now + 1.0)
    received = [e.payload for e in pair.b.events_of(MessageReceived)]
    assert received == [i.to_bytes(2, "big") for i in range(100)]
    counters = [struct.unpack_from(">Q", d, 18)[0] for d in seen if d[6:8] != b"\x00\x00"]
    assert max(counters) < 80


def test_a_peer_counter_at_the_64_bit_limit_is_dropped_not_raised() -> None:
    pair = make_pair()
    handshake(pair)
    keypair = pair.a.endpoint._sessions[pair.b_key].current
    assert keypair is not None
    keypair.send_counter = 2**64 - 1  # a peer with the keys can put any counter
    datagram = keypair.seal(int(Flag.ENCRYPTED), PacketType.CHAT_MESSAGE, b"x")
    pair.b.endpoint.receive_datagram(datagram, A_ADDR, pair.sim.now)
    assert pair.b.endpoint.statistics().drops == {"replayed": 1}


def test_responder_learns_the_address_before_it_reports_the_session() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01))
    # The node with the higher key loses a simultaneous open: it will answer.
    low, high = sorted([pair.a, pair.b], key=lambda n: n.endpoint.identity.public_key)
    low_key, high_key = low.endpoint.identity.public_key, high.endpoint.identity.public_key
    stale = ("10.9.9.9", 9)
    high.endpoint.connect(low_key, stale, 0.0)  # dials a wrong address...
    high.endpoint.send(low_key, PacketType.CHAT_MESSAGE, b"held", 0.0)
    low.endpoint.connect(high_key, high.address, 0.0)  # ...then hears from the right one
    pair.sim.run_until(3.0)
    (established,) = high.events_of(SessionEstablished)
    assert established.address == low.address
    assert [e.payload for e in low.events_of(MessageReceived)] == [b"held"]


@pytest.mark.parametrize(("a_level", "b_level"), [(EncryptionLevel.LOW, EncryptionLevel.HIGH),
                                                  (EncryptionLevel.HIGH, EncryptionLevel.LOW)])
def test_peers_with_different_levels_keep_their_session(a_level: EncryptionLevel,
                                                        b_level: EncryptionLevel) -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01),
                     config=SessionConfig(encryption_level=a_level),
                     b_config=SessionConfig(encryption_level=b_level))
    handshake(pair)
    pair.sim.run_until(1300.0)
    assert pair.a.events_of(SessionClosed) == [] and pair.b.events_of(SessionClosed) == []
    assert pair.a.endpoint.session_statistics(pair.b_key).rekeys >= 1300 // 130


def test_high_level_pads_whatever_the_compression_threshold() -> None:
    config = SessionConfig(compression_threshold=0, zstd_threshold=1000, coalesce_delay=0)
    pair = make_pair(config=config)
    seen = _capture_to(pair, B_ADDR)
    handshake(pair)
    rng = random.Random(3)
    for size in (5, 40, 300, 1000):  # random bytes: incompressible, so padded
        pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, rng.randbytes(size),
                             pair.sim.now)
    pair.sim.run_until(pair.sim.now + 0.1)
    data = [d for d in seen if d[8:10] == b"\x00\x10"]
    assert len(data) >= 4
    assert all((len(d) - OVERHEAD) % 32 == 0 for d in data)
    assert len(pair.b.events_of(MessageReceived)) == 4


def test_statistics_estimate_inbound_loss_and_rtt_percentiles() -> None:
    pair = make_pair(profile=LinkProfile(delay=0.02, jitter=0.01))
    handshake(pair)
    pair.net.set_link(A_ADDR, B_ADDR, LinkProfile(delay=0.02, loss=0.25))
    for _ in range(2000):
        pair.a.endpoint.send(pair.b_key, PacketType.VISUAL_EFFECT, bytes(40), pair.sim.now)
        pair.sim.run_until(pair.sim.now + 0.01)
    stats = pair.b.endpoint.session_statistics(pair.a_key)
    assert 0.2 < stats.inbound_loss < 0.3
    rtt = pair.a.endpoint.session_statistics(pair.b_key).rtt
    assert rtt.p50 is not None and rtt.p99 is not None and rtt.min is not None
    assert rtt.min <= rtt.p50 <= rtt.p99 <= 0.07


def test_a_flooding_peer_is_limited_and_flagged() -> None:
    config = SessionConfig(incoming_packet_rate=50, incoming_byte_rate=100_000,
                           coalesce_delay=0)
    pair = make_pair(profile=LinkProfile(delay=0.01), config=SessionConfig(coalesce_delay=0),
                     b_config=config)
    handshake(pair)
    pair.sim.run_until(pair.sim.now + 2.0)  # the allowance is full again
    assert not pair.b.endpoint.session_statistics(pair.a_key).anomalous
    start = pair.sim.now
    for i in range(300):  # 300 messages within one second
        pair.a.endpoint.send(pair.b_key, PacketType.VISUAL_EFFECT, i.to_bytes(4, "big"),
                             pair.sim.now)
        pair.sim.run_until(start + (i + 1) / 300)
    pair.sim.run_until(start + 1.5)
    delivered = len(pair.b.events_of(MessageReceived))
    stats = pair.b.endpoint.session_statistics(pair.a_key)
    assert 50 <= delivered <= 50 + 50 * 1.05 + 2  # the burst, then 50 per second
    # every undelivered message was dropped as rate_limited (a PING or two may share it)
    assert 300 - delivered <= stats.drops["rate_limited"] <= 300 - delivered + 5
    assert stats.anomalous
    # a calm peer is never flagged
    assert not pair.a.endpoint.session_statistics(pair.b_key).anomalous


@pytest.mark.parametrize("level", list(EncryptionLevel))
def test_small_messages_share_datagrams_within_the_budget(level: EncryptionLevel) -> None:
    pair = make_pair(profile=LinkProfile(delay=0.01),
                     config=SessionConfig(encryption_level=level))
    handshake(pair)
    seen = _capture_to(pair, B_ADDR)
    now = pair.sim.now
    lines = [f"chat line {i:03d} ".encode() * 3 for i in range(100)]
    # each frame: header, seq, line; a datagram's frame list holds 1200 - OVERHEAD bytes
    full_batches = sum(len(line) + 4 + 4 for line in lines) // (1200 - OVERHEAD)
    for line in lines:
        pair.a.endpoint.send(pair.b_key, PacketType.CHAT_MESSAGE, line, now)
    pair.sim.flush()  # hand what the endpoint has to the network, before any timer
    assert len(seen) == full_batches  # full batches left at once, the rest waits
    pair.sim.run_until(now + 0.1)
    assert [e.payload for e in pair.b.events_of(MessageReceived)] == lines
    data = [d for d in seen if d[6:8] != b"\x00\x00"]
    assert all(len(d) <= 1200 for d in data)
    assert len(data) == full_batches + 1


def test_a_lone_message_waits_at_most_the_coalescing_delay() -> None:
    pair = make_pair(config=SessionConfig(coalesce_delay=0.005))
    handshake(pair)
    now = pair.sim.now
    pair.a.endpoint.send(pair.b_key, PacketType.VISUAL_EFFECT, bytes(40), now)
    assert pair.a.endpoint.datagrams_to_send(now) == []
    assert pair.a.endpoint.get_timer() == pytest.approx(now + 0.005)
    pair.sim.run_until(now + 0.0049)
    assert pair.b.events_of(MessageReceived) == []
    pair.sim.run_until(now + 0.006)
    assert len(pair.b.events_of(MessageReceived)) == 1


def test_flush_and_control_messages_send_the_batch_at_once() -> None:
    pair = make_pair()
    handshake(pair)
    now = pair.sim.now
    a = pair.a.endpoint
    a.send(pair.b_key, PacketType.CHAT_MESSAGE, b"first", now)
    a.send(pair.b_key, PacketType.CHAT_MESSAGE, b"second", now)
    a.flush(now)
    ((datagram, _),) = a.datagrams_to_send(now)
    pair.b.endpoint.receive_datagram(datagram, A_ADDR, now)
    events = []
    while (event := pair.b.endpoint.next_event()) is not None:
        events.append(event)
    assert [e.payload for e in events if isinstance(e, MessageReceived)] == [b"first", b"second"]
    a.send(pair.b_key, PacketType.CHAT_MESSAGE, b"bye", now)
    a.close(pair.b_key, now)  # DISCONNECT joins the batch and sends it
    ((datagram, _),) = a.datagrams_to_send(now)
    pair.b.endpoint.receive_datagram(datagram, A_ADDR, now)
    assert pair.b.endpoint.next_event() == MessageReceived(pair.a_key, PacketType.CHAT_MESSAGE,
                                                           b"bye")
    assert pair.b.endpoint.next_event() == SessionClosed(pair.a_key, CloseReason.PEER_DISCONNECT)


def test_flush_visits_only_the_sessions_given_data(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = make_pair()
    handshake(pair)
    a = pair.a.endpoint
    session = a._sessions[pair.b_key]
    calls: list[float] = []
    original = Session.flush

    def counting_flush(self: Session, now: float) -> None:
        if self is session:
            calls.append(now)
        original(self, now)

    monkeypatch.setattr(Session, "flush", counting_flush)
    now = pair.sim.now
    a.flush(now)
    assert calls == []  # nothing queued: not visited
    a.send(pair.b_key, PacketType.VISUAL_EFFECT, b"x", now)
    a.flush(now)
    a.flush(now)
    assert calls == [now]  # once for the data, not again
    assert len(a.datagrams_to_send(now)) == 1


def test_a_timer_that_fires_without_changing_the_deadline_fires_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pair = make_pair()
    handshake(pair)
    a = pair.a.endpoint
    session = a._sessions[pair.b_key]
    deadline = a.get_timer()
    assert deadline is not None
    fired: list[float] = []
    original = Session.on_timer

    def on_timer(self: Session, now: float) -> None:  # changes nothing for this session
        if self is session:
            fired.append(now)
        else:
            original(self, now)

    monkeypatch.setattr(Session, "on_timer", on_timer)
    a.handle_timer(deadline)
    assert fired == [deadline]
    assert a.get_timer() == deadline  # still due: not lost from the heap
    a.handle_timer(deadline)
    assert fired == [deadline, deadline]
