"""Bodies of the channel frames that travel inside a SEALED frame list.

Every data message now carries a small channel header in front of its payload
(all integers big-endian)::

    POSITION_UPDATE 0x0003  seq u16 | baseline u16 | position (position_codec)
                            baseline == seq: a full state, no baseline
    VISUAL_EFFECT   0x0004  payload (unreliable, no header)
    CHAT_MESSAGE    0x0005  seq u32 | payload              (reliable, ordered)
    AI_INTERACTION  0x0006  seq u32 | payload              (reliable, ordered)
    COORDINATOR     0x0020  seq u32 | payload              (reliable, ordered)
    ENVIRONMENTAL   0x0007  seq u32 | floor u32 | content  (reliable, latest value)
                            content = key length u8 | key | payload
    ACK             0x0013  channel u8 | next u32 | bits u64
                            every seq < next arrived (or was given up by the
                            sender, below its floor); bit i (LSB first) set:
                            seq next + 1 + i arrived
    POSITION_ACK    0x0014  seq u16, the newest position received
    FRAGMENT        0x0015  type u16 | seq u32 | index u16 | count u16 | part
                            one of ``count`` consecutive seqs of a reliable
                            channel carrying one message (ENVIRONMENTAL: also
                            floor u32 after count); the parts, joined in index
                            order, are what the unfragmented body would carry
                            after its header

The ``_untrusted`` parsers raise only :class:`~p2pd.wire.errors.BadPacket`.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.types import PacketType


class Channel(IntEnum):
    """Reliable channels, as numbered in ACK frames."""

    CHAT = 0
    AI = 1
    ENVIRONMENT = 2
    CONTROL = 3  # daemon <-> coordinator


CHANNEL_OF_TYPE: Final[dict[int, Channel]] = {
    int(PacketType.CHAT_MESSAGE): Channel.CHAT,
    int(PacketType.AI_INTERACTION): Channel.AI,
    int(PacketType.ENVIRONMENTAL): Channel.ENVIRONMENT,
    int(PacketType.COORDINATOR): Channel.CONTROL,
}
TYPE_OF_CHANNEL: Final[dict[Channel, PacketType]] = {
    Channel.CHAT: PacketType.CHAT_MESSAGE,
    Channel.AI: PacketType.AI_INTERACTION,
    Channel.ENVIRONMENT: PacketType.ENVIRONMENTAL,
    Channel.CONTROL: PacketType.COORDINATOR,
}
ORDERED_CHANNELS: Final = frozenset({Channel.CHAT, Channel.AI, Channel.CONTROL})

SEQ = struct.Struct(">I")
SEQ_FLOOR = struct.Struct(">II")
POSITION_HEADER = struct.Struct(">HH")
ACK = struct.Struct(">BIQ")
POSITION_ACK = struct.Struct(">H")
FRAGMENT = struct.Struct(">HIHH")
FRAGMENT_FLOOR = struct.Struct(">HIHHI")
ACK_BITS: Final = 64
MAX_FRAGMENTS: Final = 128  # parts of one message; with the smallest budget still > 64 KiB
MAX_KEY: Final = 64  # bytes of a latest-value key

_CHANNEL_OF_NUMBER: Final = tuple(Channel(n) for n in range(len(Channel)))  # numbers 0, 1, ...
_ENVIRONMENTAL = int(PacketType.ENVIRONMENTAL)


def parse_seq_untrusted(body: bytes) -> tuple[int, bytes]:
    if len(body) < SEQ.size:
        raise BadPacket(DropReason.MALFORMED, "reliable frame shorter than its header")
    return SEQ.unpack_from(body)[0], body[SEQ.size:]


def parse_seq_floor_untrusted(body: bytes) -> tuple[int, int, bytes]:
    if len(body) < SEQ_FLOOR.size:
        raise BadPacket(DropReason.MALFORMED, "latest-value frame shorter than its header")
    seq, floor = SEQ_FLOOR.unpack_from(body)
    if floor > seq:
        raise BadPacket(DropReason.MALFORMED, f"floor {floor} above seq {seq}")
    return seq, floor, body[SEQ_FLOOR.size:]


def encode_keyed(key: bytes, payload: bytes) -> bytes:
    if not 0 < len(key) <= MAX_KEY:
        raise ValueError(f"a latest-value key has 1..{MAX_KEY} bytes, got {len(key)}")
    return bytes((len(key),)) + key + payload


def split_keyed_untrusted(content: bytes) -> tuple[bytes, bytes]:
    """(key, payload) of a latest-value message."""
    if not content:
        raise BadPacket(DropReason.MALFORMED, "latest-value message without a key")
    size = content[0]
    if not 0 < size <= MAX_KEY or len(content) < 1 + size:
        raise BadPacket(DropReason.MALFORMED, f"latest-value key of {size} bytes")
    return content[1:1 + size], content[1 + size:]


def parse_position_header_untrusted(body: bytes) -> tuple[int, int, bytes]:
    if len(body) < POSITION_HEADER.size:
        raise BadPacket(DropReason.MALFORMED, "position frame shorter than its header")
    seq, baseline = POSITION_HEADER.unpack_from(body)
    return seq, baseline, body[POSITION_HEADER.size:]


def parse_ack_untrusted(body: bytes) -> tuple[Channel, int, int]:
    if len(body) != ACK.size:
        raise BadPacket(DropReason.MALFORMED, f"ack body of {len(body)} bytes")
    channel, next_seq, bits = ACK.unpack(body)
    if channel >= len(_CHANNEL_OF_NUMBER):
        raise BadPacket(DropReason.MALFORMED, f"ack for unknown channel {channel}")
    return _CHANNEL_OF_NUMBER[channel], next_seq, bits


def parse_position_ack_untrusted(body: bytes) -> int:
    if len(body) != POSITION_ACK.size:
        raise BadPacket(DropReason.MALFORMED, f"position ack body of {len(body)} bytes")
    seq: int = POSITION_ACK.unpack(body)[0]
    return seq


class Fragment:
    """One parsed FRAGMENT frame."""

    __slots__ = ("channel", "count", "floor", "index", "part", "seq")

    def __init__(self, channel: Channel, seq: int, index: int, count: int, floor: int,
                 part: bytes) -> None:
        self.channel = channel
        self.seq = seq
        self.index = index
        self.count = count
        self.floor = floor
        self.part = part

    @property
    def first_seq(self) -> int:
        return self.seq - self.index


def parse_fragment_untrusted(body: bytes) -> Fragment:
    if len(body) < FRAGMENT.size:
        raise BadPacket(DropReason.MALFORMED, "fragment shorter than its header")
    packet_type, seq, index, count = FRAGMENT.unpack_from(body)
    channel = CHANNEL_OF_TYPE.get(packet_type)
    if channel is None:
        raise BadPacket(DropReason.MALFORMED, f"fragment of type 0x{packet_type:04x}")
    if not 2 <= count <= MAX_FRAGMENTS or index >= count or index > seq:
        raise BadPacket(DropReason.MALFORMED, f"fragment {index} of {count} at seq {seq}")
    floor = seq
    header = FRAGMENT.size
    if packet_type == _ENVIRONMENTAL:
        if len(body) < FRAGMENT_FLOOR.size:
            raise BadPacket(DropReason.MALFORMED, "latest-value fragment shorter than its header")
        floor = FRAGMENT_FLOOR.unpack_from(body)[4]
        if floor > seq:
            raise BadPacket(DropReason.MALFORMED, f"floor {floor} above seq {seq}")
        header = FRAGMENT_FLOOR.size
    part = body[header:]
    if not part:
        raise BadPacket(DropReason.MALFORMED, "empty fragment")
    return Fragment(channel, seq, index, count, floor, part)


def seq16_newer(a: int, b: int) -> bool:
    """True when 16-bit sequence number ``a`` is newer than ``b`` (wrapping)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
