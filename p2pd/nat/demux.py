"""What a datagram on the daemon's one UDP socket is, from its first bytes (RFC 7983 in spirit).

=========================  ===============================================  ===========
first bytes                kind                                             goes to
=========================  ===============================================  ===========
``50 32 50 32`` ("P2P2")    a p2pd packet (docs/protocol.md 2)               the endpoint
``00``-``03``, cookie at 4  a STUN message (RFC 8489: two zero bits, then    its transaction
                           0x2112A442 at offset 4)
``40``-``4F``               TURN ChannelData (RFC 8656 12: channel numbers   the TURN client
                           0x4000-0x4FFF)
anything else              unknown                                          dropped, counted
=========================  ===============================================  ===========

The kinds cannot be confused: a p2pd packet starts with 0x50, outside both
other ranges; a STUN message starts with 0x00-0x03; ChannelData with
0x40-0x4F. RFC 5766 allowed channels up to 0x7FFF, whose first byte 0x50
would meet "P2P2": RFC 8656 reserved 0x5000-0x7FFF, and this client binds
only 0x4000-0x4FFF, so a datagram starting "P2P2" is always p2pd's. The
checks cost a comparison or two, before any parsing.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from p2pd.nat.stun import COOKIE_BYTES, HEADER_SIZE

P2P_MAGIC: Final = b"P2P2"
CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = 0x4FFF


class Kind(Enum):
    P2P = "p2p"
    STUN = "stun"
    CHANNEL_DATA = "channel_data"
    UNKNOWN = "unknown"


def classify(data: bytes) -> Kind:
    if data[:4] == P2P_MAGIC:
        return Kind.P2P
    if not data:
        return Kind.UNKNOWN
    first = data[0]
    if first < 0x04 and len(data) >= HEADER_SIZE and data[4:8] == COOKIE_BYTES:
        return Kind.STUN
    if 0x40 <= first <= 0x4F and len(data) >= 4:
        return Kind.CHANNEL_DATA
    return Kind.UNKNOWN
