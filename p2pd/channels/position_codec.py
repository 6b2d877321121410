"""Quantized delta coding of player positions.

A position update carries only what changed against the last state the peer
acknowledged (the *baseline*), and the whole state when there is no
acknowledged baseline. Positions are already quantized: map cells, one of 8
directions, whole milliseconds. This module is sans-IO; which baseline is
acknowledged is the channel layer's business. Encoder and decoder must use the
same baseline: a delta decoded against another baseline yields a wrong state,
not an error (the encoding carries no baseline identifier or checksum).

Wire format of one position update (all fixed-size integers big-endian)::

    offset  size  field
    0       1     mask
    1       ...   the fields whose presence bit is set, in this order:
                  map, x, y, dir, speed, tick

Mask bits:

    bit  value  meaning
    0    0x01   MAP present
    1    0x02   X present
    2    0x04   Y present
    3    0x08   DIR present
    4    0x10   SPEED present
    5    0x20   TICK present
    6    0x40   MOVING: the value of ``moving`` (1 = moving); always
                meaningful, not a presence bit
    7    0x80   reserved, must be 0

Fields:

    field  full state (no baseline)         delta (against a baseline)
    map    u8 length n (1..32), then n bytes of UTF-8 (the same in both forms)
    x      u16, 0..1023                     zvarint of x - baseline.x
    y      u16, 0..1023                     zvarint of y - baseline.y
    dir    u8, 0..7 (the same in both forms)
    speed  u16, 20..1000 ms per cell (the same in both forms)
    tick   varint, 0..2**63-1               zvarint of tick - baseline.tick

``varint``: an unsigned integer in groups of 7 bits, least significant group
first; each byte holds one group in its low 7 bits and has its high bit set
when another byte follows. At most 10 bytes. ``zvarint``: a signed integer
``n`` zigzag-mapped to ``(n << 1) ^ (n >> 63)`` (0, -1, 1, -2, 2 ... become
0, 1, 2, 3, 4 ...) and written as a varint.

A full state (no baseline) has all six presence bits set (mask 0x3F or 0x7F),
so it is ``1 + 1 + n + 2 + 2 + 1 + 2 + varint(tick)`` bytes: 16 bytes plus the
tick's varint for a 7-byte map name (e.g. 20 bytes for a tick of one hour). A
delta has a presence bit set exactly for the fields that differ from the
baseline; a step of one cell with 200 ms more on the clock is 4 bytes (mask,
x, two bytes of tick). A delta with nothing changed but ``moving`` is the
mask alone. The encoder never produces more than 51 bytes.

A receiver drops (``BadPacket(MALFORMED)``) an update that is cut short, has
bytes after its last field, has the reserved bit set, is a full state with a
presence bit clear, has a map length of 0 or above 32 or a map name that is
not UTF-8, has a varint longer than 10 bytes, or whose resulting x or y is
outside 0..1023, dir above 7, speed outside 20..1000 or tick outside
0..2**63-1. It accepts a present field equal to the baseline's and varints
that are not minimal (longer than needed, within 10 bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from p2pd.wire.errors import BadPacket, DropReason

__all__ = [
    "DIR_PRESENT",
    "FULL_MASK",
    "MAP_PRESENT",
    "MAX_DECODABLE_SIZE",
    "MAX_MAP_BYTES",
    "MOVING",
    "RESERVED",
    "SPEED_PRESENT",
    "TICK_PRESENT",
    "X_PRESENT",
    "Y_PRESENT",
    "PositionState",
    "decode_position_untrusted",
    "encode_position",
]

MAP_PRESENT: Final = 0x01
X_PRESENT: Final = 0x02
Y_PRESENT: Final = 0x04
DIR_PRESENT: Final = 0x08
SPEED_PRESENT: Final = 0x10
TICK_PRESENT: Final = 0x20
MOVING: Final = 0x40
RESERVED: Final = 0x80
FULL_MASK: Final = 0x3F  # every presence bit

MAX_MAP_BYTES: Final = 32
MAX_CELL: Final = 1023
MAX_DIR: Final = 7
MIN_SPEED: Final = 20
MAX_SPEED: Final = 1000
MAX_TICK: Final = 2**63 - 1
MAX_VARINT_BYTES: Final = 10
# The longest input the decoder can accept: mask, map, three 10-byte varints
# (x, y and tick of a delta, varints need not be minimal), dir and speed.
MAX_DECODABLE_SIZE: Final = 1 + 1 + MAX_MAP_BYTES + 3 * MAX_VARINT_BYTES + 1 + 2

# x, y, dir and speed of a full state, in one go.
_CELL_DIR_SPEED: Final = struct.Struct(">HHBH")
_CELL_DIR_SPEED_SIZE: Final = _CELL_DIR_SPEED.size
_pack_cell_dir_speed = _CELL_DIR_SPEED.pack
_unpack_cell_dir_speed = _CELL_DIR_SPEED.unpack_from
_U16: Final = struct.Struct(">H")
_pack_u16 = _U16.pack
_unpack_u16 = _U16.unpack_from
_MALFORMED: Final = DropReason.MALFORMED


@dataclass(frozen=True, slots=True)
class PositionState:
    """One player's position, as the client reports it.

    Construction does not validate (the decoder checks what it builds, the
    encoder checks what it is given): ``map`` is 1..32 bytes of UTF-8, ``x``
    and ``y`` are cells 0..1023, ``dir`` 0..7, ``speed`` 20..1000 ms per cell
    and ``tick`` the client's millisecond clock, 0..2**63-1.
    """

    map: str
    x: int
    y: int
    dir: int
    speed: int
    moving: bool
    tick: int


def _map_bytes(state: PositionState) -> bytes:
    """Check every field of ``state``; return its map name in UTF-8."""
    encoded = state.map.encode()  # UnicodeEncodeError is a ValueError
    if not 1 <= len(encoded) <= MAX_MAP_BYTES:
        raise ValueError(f"map name of {len(encoded)} bytes, expected 1..{MAX_MAP_BYTES}")
    if not (0 <= state.x <= MAX_CELL and 0 <= state.y <= MAX_CELL):
        raise ValueError(f"cell ({state.x}, {state.y}) outside 0..{MAX_CELL}")
    if not 0 <= state.dir <= MAX_DIR:
        raise ValueError(f"direction {state.dir} outside 0..{MAX_DIR}")
    if not MIN_SPEED <= state.speed <= MAX_SPEED:
        raise ValueError(f"speed {state.speed} outside {MIN_SPEED}..{MAX_SPEED}")
    if not 0 <= state.tick <= MAX_TICK:
        raise ValueError(f"tick {state.tick} outside 0..2**63-1")
    return encoded


def _put_varint(out: bytearray, value: int) -> None:
    """Append the unsigned ``value`` as a varint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_zvarint(out: bytearray, value: int) -> None:
    """Append the signed ``value`` (within 64 bits) zigzag-mapped as a varint."""
    _put_varint(out, (value << 1) ^ (value >> 63))


def encode_position(state: PositionState, baseline: PositionState | None) -> bytes:
    """Encode ``state`` as a delta against ``baseline``, or in full if it is None.

    Raises :class:`ValueError` if ``state`` or ``baseline`` has a value out of range.
    """
    map_bytes = _map_bytes(state)
    mask = MOVING if state.moving else 0
    if baseline is None:
        out = bytearray((mask | FULL_MASK, len(map_bytes)))
        out += map_bytes
        out += _pack_cell_dir_speed(state.x, state.y, state.dir, state.speed)
        _put_varint(out, state.tick)
        return bytes(out)
    _map_bytes(baseline)  # an out-of-range baseline tick could overflow the zigzag
    out = bytearray(1)
    if state.map != baseline.map:
        mask |= MAP_PRESENT
        out.append(len(map_bytes))
        out += map_bytes
    if state.x != baseline.x:
        mask |= X_PRESENT
        _put_zvarint(out, state.x - baseline.x)
    if state.y != baseline.y:
        mask |= Y_PRESENT
        _put_zvarint(out, state.y - baseline.y)
    if state.dir != baseline.dir:
        mask |= DIR_PRESENT
        out.append(state.dir)
    if state.speed != baseline.speed:
        mask |= SPEED_PRESENT
        out += _pack_u16(state.speed)
    if state.tick != baseline.tick:
        mask |= TICK_PRESENT
        _put_zvarint(out, state.tick - baseline.tick)
    out[0] = mask
    return bytes(out)


def _read_varint(data: bytes, offset: int, size: int, field: str) -> tuple[int, int]:
    """Read an unsigned varint at ``offset``; return it and the offset after it."""
    value = 0
    shift = 0
    end = min(offset + MAX_VARINT_BYTES, size)
    while offset < end:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
    if shift == 7 * MAX_VARINT_BYTES:  # ten bytes, each announcing another
        raise BadPacket(_MALFORMED, f"{field} varint longer than {MAX_VARINT_BYTES} bytes")
    raise BadPacket(_MALFORMED, f"{field} cut short")


def _read_zvarint(data: bytes, offset: int, size: int, field: str) -> tuple[int, int]:
    """Read a zigzag-mapped signed varint; return it and the offset after it."""
    value, offset = _read_varint(data, offset, size, field)
    return (value >> 1) ^ -(value & 1), offset


def _read_map(data: bytes, offset: int, size: int) -> tuple[str, int]:
    """Read a length-prefixed map name; return it and the offset after it."""
    if offset >= size:
        raise BadPacket(_MALFORMED, "map cut short")
    length = data[offset]
    if not 1 <= length <= MAX_MAP_BYTES:
        raise BadPacket(_MALFORMED, f"map name of {length} bytes, expected 1..{MAX_MAP_BYTES}")
    offset += 1
    end = offset + length
    if end > size:
        raise BadPacket(_MALFORMED, "map cut short")
    try:
        return data[offset:end].decode(), end
    except UnicodeDecodeError:
        raise BadPacket(_MALFORMED, "map name is not UTF-8") from None


def decode_position_untrusted(
    data: bytes | memoryview, baseline: PositionState | None
) -> PositionState:
    """Decode an update against ``baseline`` (None: a full state is required).

    ``baseline`` must be the state the sender encoded against; it is trusted
    and not checked. Raises only :class:`BadPacket` (``MALFORMED``).
    """
    if type(data) is not bytes:
        # memoryview (or another buffer): copy, after bounding the copy
        if (data.nbytes if isinstance(data, memoryview) else len(data)) > MAX_DECODABLE_SIZE:
            raise BadPacket(_MALFORMED, f"longer than {MAX_DECODABLE_SIZE} bytes")
        data = bytes(data)
    size = len(data)
    if size == 0:
        raise BadPacket(_MALFORMED, "empty")
    if size > MAX_DECODABLE_SIZE:
        raise BadPacket(_MALFORMED, f"longer than {MAX_DECODABLE_SIZE} bytes")
    mask = data[0]
    if mask & RESERVED:
        raise BadPacket(_MALFORMED, "reserved mask bit set")
    moving = mask & MOVING != 0

    if baseline is None:
        if mask & FULL_MASK != FULL_MASK:
            raise BadPacket(_MALFORMED, f"full state lacks fields (mask 0x{mask:02x})")
        map_name, offset = _read_map(data, 1, size)
        end = offset + _CELL_DIR_SPEED_SIZE
        if end > size:
            raise BadPacket(_MALFORMED, "full state cut short")
        x, y, direction, speed = _unpack_cell_dir_speed(data, offset)
        tick, offset = _read_varint(data, end, size, "tick")
    else:
        offset = 1
        map_name = baseline.map
        x = baseline.x
        y = baseline.y
        direction = baseline.dir
        speed = baseline.speed
        tick = baseline.tick
        if mask & MAP_PRESENT:
            map_name, offset = _read_map(data, offset, size)
        if mask & X_PRESENT:
            delta, offset = _read_zvarint(data, offset, size, "x")
            x += delta
        if mask & Y_PRESENT:
            delta, offset = _read_zvarint(data, offset, size, "y")
            y += delta
        if mask & DIR_PRESENT:
            if offset >= size:
                raise BadPacket(_MALFORMED, "dir cut short")
            direction = data[offset]
            offset += 1
        if mask & SPEED_PRESENT:
            if offset + 2 > size:
                raise BadPacket(_MALFORMED, "speed cut short")
            (speed,) = _unpack_u16(data, offset)
            offset += 2
        if mask & TICK_PRESENT:
            delta, offset = _read_zvarint(data, offset, size, "tick")
            tick += delta

    if offset != size:
        raise BadPacket(_MALFORMED, f"{size - offset} bytes after the last field")
    if not (0 <= x <= MAX_CELL and 0 <= y <= MAX_CELL):
        raise BadPacket(_MALFORMED, f"cell ({x}, {y}) outside 0..{MAX_CELL}")
    if direction > MAX_DIR:
        raise BadPacket(_MALFORMED, f"direction {direction} above {MAX_DIR}")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadPacket(_MALFORMED, f"speed {speed} outside {MIN_SPEED}..{MAX_SPEED}")
    if not 0 <= tick <= MAX_TICK:
        raise BadPacket(_MALFORMED, "tick outside 0..2**63-1")
    return PositionState(map_name, x, y, direction, speed, moving, tick)
