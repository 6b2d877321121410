"""Packet types and header flags: the one table of what may appear on the wire.

Type ids 0x0001-0x000A are the specification's (§2.1.2) and keep their numbers
and meanings. Ids the protocol needs beyond them live at 0x0010 and up; the
ranges reserved for later layers are listed in docs/protocol.md.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class PacketType(IntEnum):
    HANDSHAKE_REQUEST = 0x0001
    HANDSHAKE_RESPONSE = 0x0002
    POSITION_UPDATE = 0x0003
    VISUAL_EFFECT = 0x0004
    CHAT_MESSAGE = 0x0005
    AI_INTERACTION = 0x0006
    ENVIRONMENTAL = 0x0007
    PING = 0x0008
    PONG = 0x0009
    DISCONNECT = 0x000A
    # beyond the specification's table
    SEALED = 0x0010  # protected frame list; the real types travel inside
    COOKIE_REPLY = 0x0011  # stateless anti-DoS cookie for a handshake request
    PADDING = 0x0012  # only as a frame inside SEALED; hides the payload size
    ACK = 0x0013  # frame: cumulative ack and bitfield of one reliable channel
    POSITION_ACK = 0x0014  # frame: newest position seq received
    FRAGMENT = 0x0015  # frame: one part of a reliable message larger than a datagram
    # coordinator range 0x0020-0x003F
    COORDINATOR = 0x0020  # frame: a message between a daemon and its coordinator
    RELAY = 0x0021  # a whole datagram forwarded by the coordinator (p2pd.wire.relay)
    PRESENCE = 0x0022  # frame: a daemon's map and cell for its coordinator, unreliable


class Flag(IntFlag):
    ENCRYPTED = 0x0001  # payload is receiver index, counter, AES-256-GCM ciphertext
    LZ4 = 0x0002  # plaintext is LZ4-block compressed
    ZSTD = 0x0004  # plaintext is Zstandard compressed
    BATCHED = 0x0008  # plaintext is a frame list (type, length, body)*
    RELAYED = 0x0020  # the payload is a relay header and a whole datagram (RELAY only)
    # 0x0010 FRAGMENT is reserved and refused by this version, as is every
    # other bit.


# the flags of protected packets (RELAYED belongs to RELAY alone)
KNOWN_FLAGS = int(Flag.ENCRYPTED | Flag.LZ4 | Flag.ZSTD | Flag.BATCHED)
COMPRESSION_FLAGS = int(Flag.LZ4 | Flag.ZSTD)

# Packets that carry their own handshake cryptography travel with no flags.
HANDSHAKE_TYPES = frozenset(
    {PacketType.HANDSHAKE_REQUEST, PacketType.HANDSHAKE_RESPONSE, PacketType.COOKIE_REPLY}
)
# Types that applications send through a session (spec §2.1.2, 0x0003-0x0007).
DATA_TYPES = frozenset(
    {
        PacketType.POSITION_UPDATE,
        PacketType.VISUAL_EFFECT,
        PacketType.CHAT_MESSAGE,
        PacketType.AI_INTERACTION,
        PacketType.ENVIRONMENTAL,
    }
)
# Session control types, always protected.
CONTROL_TYPES = frozenset({PacketType.PING, PacketType.PONG, PacketType.DISCONNECT})
# Types that may appear as frames inside a SEALED packet.
# Frames of the channel layer (p2pd.channels), only inside SEALED packets.
CHANNEL_TYPES = frozenset({PacketType.ACK, PacketType.POSITION_ACK, PacketType.FRAGMENT})
# Frames between a daemon and its coordinator (p2pd.coordinator), only inside SEALED.
COORDINATOR_TYPES = frozenset({PacketType.COORDINATOR})
FRAME_TYPES = (DATA_TYPES | CONTROL_TYPES | CHANNEL_TYPES | COORDINATOR_TYPES
               | {PacketType.PADDING, PacketType.PRESENCE})


def _flag_rules() -> dict[int, tuple[int, int]]:
    """type -> (flags that must be set, flags that may be set)."""
    # Plain ints: the complement of an IntFlag drops undeclared bits, and
    # undeclared bits are exactly what the parser must catch.
    rules: dict[int, tuple[int, int]] = {}
    for t in HANDSHAKE_TYPES:
        rules[int(t)] = (0, 0)
    for t in DATA_TYPES | CONTROL_TYPES:
        rules[int(t)] = (int(Flag.ENCRYPTED), int(Flag.ENCRYPTED | COMPRESSION_FLAGS))
    rules[int(PacketType.SEALED)] = (
        int(Flag.ENCRYPTED | Flag.BATCHED),
        int(Flag.ENCRYPTED | Flag.BATCHED | COMPRESSION_FLAGS),
    )
    rules[int(PacketType.RELAY)] = (int(Flag.RELAYED), int(Flag.RELAYED))
    return rules


# Indexed by raw type id for the hot path: a dict lookup, no enum construction.
FLAG_RULES: dict[int, tuple[int, int]] = _flag_rules()
