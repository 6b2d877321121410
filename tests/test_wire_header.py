"""The packet header codec: round trips, every malformed class, hostile bytes."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.header import (
    HEADER_SIZE,
    MAGIC,
    MAX_DATAGRAM,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    encode_packet,
    parse_header_untrusted,
    parse_packet_untrusted,
)
from p2pd.wire.types import FLAG_RULES, KNOWN_FLAGS, Flag, PacketType


def valid_flags(packet_type: PacketType) -> int:
    return FLAG_RULES[packet_type][0]


def raw(magic: int = MAGIC, version: int = PROTOCOL_VERSION, flags: int = 1,
        ptype: int = 3, length: int | None = None, payload: bytes = b"abc") -> bytes:
    if length is None:
        length = len(payload)
    return struct.pack(">IHHHI", magic, version, flags, ptype, length) + payload


def test_header_layout_is_the_specification_s() -> None:
    data = encode_packet(PacketType.CHAT_MESSAGE, b"hi", Flag.ENCRYPTED)
    assert data == bytes.fromhex("50325032" "0001" "0001" "0005" "00000002") + b"hi"
    assert HEADER_SIZE == 14


def test_specification_type_ids_keep_their_numbers() -> None:
    spec = {
        0x0001: "HANDSHAKE_REQUEST", 0x0002: "HANDSHAKE_RESPONSE", 0x0003: "POSITION_UPDATE",
        0x0004: "VISUAL_EFFECT", 0x0005: "CHAT_MESSAGE", 0x0006: "AI_INTERACTION",
        0x0007: "ENVIRONMENTAL", 0x0008: "PING", 0x0009: "PONG", 0x000A: "DISCONNECT",
    }
    for number, name in spec.items():
        assert PacketType(number).name == name
    extra = [t for t in PacketType if t.value not in spec]
    assert all(t.value > 0x000A for t in extra)


@pytest.mark.parametrize("ptype", [t for t in PacketType if t in FLAG_RULES])
def test_round_trip_of_every_type(ptype: PacketType) -> None:
    payload = bytes(range(40))
    packet = parse_packet_untrusted(encode_packet(ptype, payload, valid_flags(ptype)))
    assert (packet.type, packet.flags, packet.payload) == (ptype, valid_flags(ptype), payload)


@given(
    ptype=st.sampled_from(sorted(FLAG_RULES)),
    payload=st.binary(max_size=MAX_PAYLOAD),
    extra=st.sampled_from([0, int(Flag.LZ4), int(Flag.ZSTD)]),
)
def test_round_trip_generated(ptype: int, payload: bytes, extra: int) -> None:
    required, allowed = FLAG_RULES[ptype]
    flags = required | (extra & allowed)
    packet = parse_packet_untrusted(encode_packet(ptype, payload, flags))
    assert packet.type == ptype and packet.flags == flags and packet.payload == payload


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.TRUNCATED),
        (raw()[:13], DropReason.TRUNCATED),
        (raw(payload=bytes(MAX_DATAGRAM)), DropReason.OVERSIZE),
        (raw(magic=0x50325033), DropReason.BAD_MAGIC),
        (raw(version=2), DropReason.BAD_VERSION),
        (raw(version=0), DropReason.BAD_VERSION),
        (raw(ptype=0x000B), DropReason.UNKNOWN_TYPE),
        (raw(ptype=0x0000), DropReason.UNKNOWN_TYPE),
        (raw(ptype=PacketType.PADDING), DropReason.UNKNOWN_TYPE),
        (raw(flags=0), DropReason.BAD_FLAGS),  # data type without ENCRYPTED
        (raw(flags=0x0001 | 0x0010), DropReason.BAD_FLAGS),  # reserved FRAGMENT bit
        (raw(flags=0x0001 | 0x8000), DropReason.BAD_FLAGS),
        (raw(flags=0x0001 | 0x0002 | 0x0004), DropReason.BAD_FLAGS),  # two codecs
        (raw(flags=0x0001 | 0x0008), DropReason.BAD_FLAGS),  # BATCHED on a typed packet
        (raw(ptype=0x0010, flags=0x0001), DropReason.BAD_FLAGS),  # SEALED without BATCHED
        (raw(ptype=0x0001, flags=0x0001), DropReason.BAD_FLAGS),  # handshake is flagless
        (raw(length=4), DropReason.TRUNCATED),
        (raw(length=2), DropReason.LENGTH_MISMATCH),
    ],
)
def test_malformed_headers_are_refused_with_their_reason(data: bytes, reason: DropReason) -> None:
    with pytest.raises(BadPacket) as caught:
        parse_header_untrusted(data)
    assert caught.value.reason is reason


def test_unknown_flags_are_exactly_the_undeclared_bits() -> None:
    for bit in range(16):
        flag = 1 << bit
        data = raw(ptype=PacketType.SEALED, flags=int(Flag.ENCRYPTED | Flag.BATCHED) | flag)
        if flag & KNOWN_FLAGS:
            parse_header_untrusted(data)
        else:
            with pytest.raises(BadPacket) as caught:
                parse_header_untrusted(data)
            assert caught.value.reason is DropReason.BAD_FLAGS


def test_truncation_at_every_offset_raises_only_bad_packet() -> None:
    data = encode_packet(PacketType.POSITION_UPDATE, bytes(60), Flag.ENCRYPTED)
    for cut in range(len(data)):
        with pytest.raises(BadPacket) as caught:
            parse_header_untrusted(data[:cut])
        assert caught.value.reason is DropReason.TRUNCATED


@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        parse_packet_untrusted(data)


@given(st.data())
def test_random_mutations_raise_only_bad_packet(data: st.DataObject) -> None:
    packet = bytearray(encode_packet(PacketType.SEALED, bytes(50), Flag.ENCRYPTED | Flag.BATCHED))
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(packet) - 1))
        packet[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(BadPacket):
        parse_packet_untrusted(bytes(packet))


def test_encoder_refuses_what_the_parser_refuses() -> None:
    with pytest.raises(ValueError, match="flags"):
        encode_packet(PacketType.CHAT_MESSAGE, b"x", 0)
    with pytest.raises(ValueError, match="unknown packet type"):
        encode_packet(0x00FF, b"x", 0)
    with pytest.raises(ValueError, match="exceeds"):
        encode_packet(PacketType.CHAT_MESSAGE, bytes(MAX_PAYLOAD + 1), Flag.ENCRYPTED)
