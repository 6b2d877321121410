"""RELAY packets: whole datagrams forwarded by the coordinator (spec §10.1).

When two daemons cannot reach each other directly, each sends its datagrams
for the other to the coordinator, wrapped in a RELAY packet::

    offset  size  field
    0       14    header: flags 0x0020 RELAYED, type 0x0021, payload length 4 + n
    14      4     daemon id (u32): to the coordinator, the daemon it is for;
                  from the coordinator, the daemon it came from
    18      n     the datagram, as it would have travelled directly (its own
                  header first): end-to-end protected, opaque to the coordinator

The coordinator swaps the id and sends the packet on, the same size (nothing
to amplify). Like TURN's ChannelData, the outer packet is not authenticated:
the coordinator accepts it only from the address of a registered daemon, for
a daemon it introduced to that one, within a per-daemon rate; the receiver
accepts it only from its coordinator's address, and the inner datagram is
authenticated end to end by the session it belongs to.

A daemon sees a relayed peer at a pseudo-address, ``("relay", daemon id)``,
so that sessions, rebinding and statistics need nothing new: a session
"moves" between its direct path and the relay like a roaming peer.
"""

from __future__ import annotations

import struct
from typing import Final

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.header import HEADER_SIZE, MAGIC, MAX_DATAGRAM, encode_header, parse_header_untrusted
from p2pd.wire.types import Flag, PacketType

RELAY_HOST: Final = "relay"  # the host of a pseudo-address; never an IP literal
RELAY_OVERHEAD: Final = HEADER_SIZE + 4
MAX_RELAYED: Final = MAX_DATAGRAM - RELAY_OVERHEAD  # the largest datagram a RELAY carries
MAX_DAEMON_ID: Final = 0xFFFFFFFF
_ID = struct.Struct(">I")
_MAGIC = struct.Struct(">I")
_RELAY = int(PacketType.RELAY)
_FLAGS = int(Flag.RELAYED)


def relay_address(daemon_id: int) -> tuple[str, int]:
    return (RELAY_HOST, daemon_id)


def is_relay_address(address: tuple[str, int]) -> bool:
    return address[0] == RELAY_HOST


def encode_relay(daemon_id: int, datagram: bytes) -> bytes:
    if not 0 < daemon_id <= MAX_DAEMON_ID:
        raise ValueError(f"daemon id {daemon_id} out of range")
    if len(datagram) > MAX_RELAYED:
        raise ValueError(f"datagram of {len(datagram)} bytes exceeds {MAX_RELAYED}")
    return encode_header(_FLAGS, _RELAY, 4 + len(datagram)) + _ID.pack(daemon_id) + datagram


def is_relay(data: bytes) -> bool:
    """Whether ``data`` claims to be a RELAY packet (type field only; cheap)."""
    return len(data) >= HEADER_SIZE and data[8] == 0 and data[9] == _RELAY


def decode_relay_untrusted(data: bytes) -> tuple[int, bytes]:
    """Return (daemon id, inner datagram). Raises only :class:`BadPacket`.

    The inner datagram is checked only for a p2pd magic and not being a RELAY
    itself (no relay loops); its receiver parses it in full.
    """
    _, packet_type = parse_header_untrusted(data)
    if packet_type != _RELAY:
        raise BadPacket(DropReason.UNEXPECTED, f"type 0x{packet_type:04x} is not RELAY")
    if len(data) < RELAY_OVERHEAD + HEADER_SIZE:
        raise BadPacket(DropReason.TRUNCATED, f"RELAY of {len(data)} bytes")
    (daemon_id,) = _ID.unpack_from(data, HEADER_SIZE)
    if daemon_id == 0:
        raise BadPacket(DropReason.MALFORMED, "RELAY for daemon id 0")
    inner = data[RELAY_OVERHEAD:]
    if _MAGIC.unpack_from(inner)[0] != MAGIC:
        raise BadPacket(DropReason.BAD_MAGIC, "relayed datagram")
    if is_relay(inner):
        raise BadPacket(DropReason.UNEXPECTED, "RELAY inside RELAY")
    return daemon_id, inner


def swap_daemon_id(data: bytes, daemon_id: int) -> bytes:
    """The same RELAY packet naming another daemon (the coordinator's forwarding)."""
    return data[:HEADER_SIZE] + _ID.pack(daemon_id) + data[RELAY_OVERHEAD:]
