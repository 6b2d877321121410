"""Frame lists: the plaintext of a BATCHED packet.

A frame list is a sequence of frames, each::

    type (2 bytes, big-endian) | length (2 bytes, big-endian) | body (length bytes)

PADDING frames carry zeros and are discarded by the parser.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.types import FRAME_TYPES, PacketType

FRAME_HEADER = struct.Struct(">HH")
FRAME_HEADER_SIZE = FRAME_HEADER.size
MAX_FRAME_BODY = 0xFFFF
MAX_FRAMES = 256  # a datagram cannot hold more than a few hundred empty frames anyway


def encode_frames(frames: Iterable[tuple[int, bytes]]) -> bytes:
    parts: list[bytes] = []
    for frame_type, body in frames:
        if frame_type not in FRAME_TYPES:
            raise ValueError(f"type 0x{frame_type:04x} cannot travel as a frame")
        if len(body) > MAX_FRAME_BODY:
            raise ValueError(f"frame body of {len(body)} bytes exceeds {MAX_FRAME_BODY}")
        parts.append(FRAME_HEADER.pack(frame_type, len(body)))
        parts.append(body)
    return b"".join(parts)


def padding_frame(total_size: int) -> bytes:
    """One PADDING frame occupying exactly ``total_size`` bytes (at least 4)."""
    if total_size < FRAME_HEADER_SIZE:
        raise ValueError(f"padding of {total_size} bytes is below {FRAME_HEADER_SIZE}")
    body = total_size - FRAME_HEADER_SIZE
    return FRAME_HEADER.pack(PacketType.PADDING, body) + bytes(body)


def decode_frames_untrusted(data: bytes) -> list[tuple[PacketType, bytes]]:
    """Parse a frame list, dropping padding. Raises only :class:`BadPacket`."""
    frames: list[tuple[PacketType, bytes]] = []
    offset = 0
    size = len(data)
    count = 0
    while offset < size:
        if size - offset < FRAME_HEADER_SIZE:
            raise BadPacket(DropReason.MALFORMED, f"frame header cut at offset {offset}")
        frame_type, length = FRAME_HEADER.unpack_from(data, offset)
        offset += FRAME_HEADER_SIZE
        if frame_type not in FRAME_TYPES:
            raise BadPacket(DropReason.UNKNOWN_TYPE, f"frame type 0x{frame_type:04x}")
        if offset + length > size:
            raise BadPacket(DropReason.MALFORMED, f"frame body of {length} bytes cut short")
        count += 1
        if count > MAX_FRAMES:
            raise BadPacket(DropReason.MALFORMED, f"more than {MAX_FRAMES} frames")
        if frame_type != PacketType.PADDING:
            frames.append((PacketType(frame_type), bytes(data[offset : offset + length])))
        offset += length
    if not frames:
        raise BadPacket(DropReason.MALFORMED, "frame list without content")
    return frames
