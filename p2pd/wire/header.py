"""The fixed 14-byte packet header of spec §2.1 and its untrusted parser.

    offset  size  field
    0       4     magic 0x50325032 ("P2P2")
    4       2     protocol version
    6       2     flags
    8       2     packet type
    10      4     payload length
    14      n     payload

All fields are big-endian (network byte order).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.types import COMPRESSION_FLAGS, FLAG_RULES, Flag, PacketType

MAGIC = 0x50325032
PROTOCOL_VERSION = 1
HEADER = struct.Struct(">IHHHI")
HEADER_SIZE = HEADER.size  # 14
# Largest datagram accepted or produced: an IPv4 UDP payload that fits a
# 1500-byte Ethernet MTU. Links with a 1280-byte MTU are served by the payload
# budget of the layers above, not by this ceiling.
MAX_DATAGRAM = 1472
MAX_PAYLOAD = MAX_DATAGRAM - HEADER_SIZE

_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


@dataclass(frozen=True, slots=True)
class Packet:
    """A parsed datagram: header fields and the (still protected) payload."""

    flags: int
    type: PacketType
    payload: bytes
    version: int = PROTOCOL_VERSION


def encode_header(flags: int, packet_type: int, payload_length: int) -> bytes:
    return _pack_header(MAGIC, PROTOCOL_VERSION, flags, packet_type, payload_length)


def encode_packet(packet_type: int, payload: bytes, flags: int = 0) -> bytes:
    """Frame ``payload``; refuses to build what the parser would refuse."""
    check_flags_local(packet_type, flags)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _pack_header(MAGIC, PROTOCOL_VERSION, flags, packet_type, len(payload)) + payload


def check_flags_local(packet_type: int, flags: int) -> None:
    rule = FLAG_RULES.get(packet_type)
    if rule is None:
        raise ValueError(f"unknown packet type 0x{packet_type:04x}")
    required, allowed = rule
    if flags & required != required or flags & ~allowed or (
        flags & COMPRESSION_FLAGS == COMPRESSION_FLAGS
    ):
        raise ValueError(f"flags 0x{flags:04x} not valid for type 0x{packet_type:04x}")


def _valid_type_flags() -> frozenset[int]:
    """Every allowed (type << 16 | flags), so the hot path checks both at once."""
    valid = set()
    for packet_type, (required, allowed) in FLAG_RULES.items():
        optional = allowed & ~required
        for flags in range(optional + 1):
            if flags & ~optional or flags & COMPRESSION_FLAGS == COMPRESSION_FLAGS:
                continue
            valid.add(packet_type << 16 | required | flags)
    return frozenset(valid)


_VALID_TYPE_FLAGS = _valid_type_flags()


def parse_header_untrusted(data: bytes) -> tuple[int, int]:
    """Validate the header of ``data``; return ``(flags, packet_type)``.

    Every check is cheap and happens before any cryptography. Raises only
    :class:`BadPacket`. The payload is ``data[HEADER_SIZE:]``.
    """
    size = len(data)
    if HEADER_SIZE <= size <= MAX_DATAGRAM:
        magic, version, flags, packet_type, length = _unpack_header(data)
        if (
            magic == MAGIC
            and version == PROTOCOL_VERSION
            and packet_type << 16 | flags in _VALID_TYPE_FLAGS
            and length == size - HEADER_SIZE
        ):
            return flags, packet_type
    raise _header_error(data)


def _header_error(data: bytes) -> BadPacket:
    """The reason a header failed, checked in the documented order."""
    size = len(data)
    if size < HEADER_SIZE:
        return BadPacket(DropReason.TRUNCATED, f"{size} bytes, header needs {HEADER_SIZE}")
    if size > MAX_DATAGRAM:
        return BadPacket(DropReason.OVERSIZE, f"{size} bytes exceeds {MAX_DATAGRAM}")
    magic, version, flags, packet_type, length = _unpack_header(data)
    if magic != MAGIC:
        return BadPacket(DropReason.BAD_MAGIC, f"magic 0x{magic:08x}")
    if version != PROTOCOL_VERSION:
        return BadPacket(DropReason.BAD_VERSION, f"version {version}")
    if packet_type not in FLAG_RULES:
        return BadPacket(DropReason.UNKNOWN_TYPE, f"type 0x{packet_type:04x}")
    if packet_type << 16 | flags not in _VALID_TYPE_FLAGS:
        return BadPacket(
            DropReason.BAD_FLAGS, f"flags 0x{flags:04x} for type 0x{packet_type:04x}"
        )
    actual = size - HEADER_SIZE
    if length > actual:
        return BadPacket(DropReason.TRUNCATED, f"length {length}, {actual} bytes present")
    return BadPacket(DropReason.LENGTH_MISMATCH, f"length {length}, {actual} bytes present")


def parse_packet_untrusted(data: bytes) -> Packet:
    """Parse a whole datagram into a :class:`Packet`. Raises only :class:`BadPacket`."""
    flags, packet_type = parse_header_untrusted(data)
    return Packet(flags, PacketType(packet_type), bytes(data[HEADER_SIZE:]))


__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_DATAGRAM",
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "Flag",
    "Packet",
    "PacketType",
    "encode_header",
    "encode_packet",
    "parse_header_untrusted",
    "parse_packet_untrusted",
]
