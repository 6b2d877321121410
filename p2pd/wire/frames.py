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


def padding_for(size: int, step: int) -> bytes:
    """What to append to a ``size``-byte frame list to reach a multiple of ``step``.

    Empty when ``size`` is already a multiple; otherwise one PADDING frame, one
    step longer when the gap is too small to hold a frame header.
    """
    gap = -size % step
    if gap == 0:
        return b""
    return padding_frame(gap if gap >= FRAME_HEADER_SIZE else gap + step)


_FRAME_TYPE_BY_ID = {int(t): t for t in FRAME_TYPES}
_PADDING = int(PacketType.PADDING)
_unpack_frame_header = FRAME_HEADER.unpack_from


def decode_frames_untrusted(data: bytes) -> list[tuple[PacketType, bytes]]:
    """Parse a frame list, dropping padding. Raises only :class:`BadPacket`."""
    size = len(data)
    types = _FRAME_TYPE_BY_ID
    if size >= FRAME_HEADER_SIZE:
        # fast path: one content frame, alone or followed by one padding frame
        frame_type, length = _unpack_frame_header(data)
        end = FRAME_HEADER_SIZE + length
        member = types.get(frame_type)
        if member is not None and frame_type != _PADDING and (
            end == size
            or (size - end >= FRAME_HEADER_SIZE
                and _unpack_frame_header(data, end) == (_PADDING, size - end - FRAME_HEADER_SIZE))
        ):
            return [(member, data[FRAME_HEADER_SIZE:end])]
    frames: list[tuple[PacketType, bytes]] = []
    offset = 0
    for _ in range(MAX_FRAMES):
        if size - offset < FRAME_HEADER_SIZE:
            raise BadPacket(DropReason.MALFORMED, f"frame header cut at offset {offset}")
        frame_type, length = _unpack_frame_header(data, offset)
        start = offset + FRAME_HEADER_SIZE
        offset = start + length
        member = types.get(frame_type)
        if member is None:
            raise BadPacket(DropReason.UNKNOWN_TYPE, f"frame type 0x{frame_type:04x}")
        if offset > size:
            raise BadPacket(DropReason.MALFORMED, f"frame body of {length} bytes cut short")
        if frame_type != _PADDING:
            frames.append((member, data[start:offset]))
        if offset == size:
            if not frames:
                raise BadPacket(DropReason.MALFORMED, "frame list without content")
            return frames
    raise BadPacket(DropReason.MALFORMED, f"more than {MAX_FRAMES} frames")
