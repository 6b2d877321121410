"""Payload compression for UDP datagrams (spec §2.3).

Which codec a payload gets depends on its size ``n`` in bytes:

    n < threshold (default 100)                 sent as it is, flag 0
    threshold <= n <= zstd_threshold (1000)     LZ4 block, flag LZ4 (0x0002)
    n > zstd_threshold                          Zstandard, flag ZSTD (0x0004)

The compressed form is kept only when it is strictly smaller than the
original, size prefix included; otherwise the original goes out with flag 0.
At most one of LZ4 and ZSTD is set on a packet.

Wire format of a compressed payload (all integers big-endian):

    offset  size  field
    0       4     original size: unsigned, 1 <= size <= the receiver's maximum
    4       m     compressed data, up to the end of the payload

LZ4 (flag 0x0002)
    The compressed data is exactly one raw LZ4 *block* (LZ4 block format, not
    the LZ4 frame format: no magic, no frame header, no checksums, and no size
    of its own -- the size is the prefix above). It must decode to exactly
    ``size`` bytes and be consumed completely.

Zstandard (flag 0x0004)
    The compressed data is exactly one Zstandard frame (RFC 8878) in the
    *magicless* format: the frame as in RFC 8878 §3.1.1 with the 4-byte
    magic number 0xFD2FB528 left out, so it starts with the
    Frame_Header_Descriptor. Frames are written with
      - no Frame_Content_Size field and Single_Segment_flag 0 (the size
        prefix carries the size),
      - no Dictionary_ID (no dictionaries are used),
      - no Content_Checksum (the AEAD already authenticates the payload),
      - a window of at most the original size rounded up to a power of two
        (minimum 1 KiB).
    This leaves 2 bytes of frame header (descriptor and window descriptor)
    before the first block. A receiver refuses a frame whose descriptor
    announces a Frame_Content_Size, a single segment or a Dictionary_ID
    (``descriptor & 0xE3 != 0``), a frame whose window exceeds its maximum
    size rounded up to a power of two, bytes after the end of the frame, and a
    frame that does not decode to exactly ``size`` bytes. A Content_Checksum,
    should a sender write one, is verified.

A receiver refuses, before decompressing anything, a declared size of 0 or one
above its maximum (64 KiB by default), so a small packet can never expand into
a large allocation: the output buffer is at most the declared size, and the
Zstandard decoder's window is bounded by the maximum. A sender must not send
compressed payloads larger than the receiver's maximum.

Objects of this module hold codec state and are not thread-safe: use one
:class:`PayloadCompressor` and one :class:`PayloadDecompressor` per thread.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import lz4.block
import zstandard

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.types import Flag

__all__ = [
    "DEFAULT_MAX_SIZE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_ZSTD_THRESHOLD",
    "LZ4_MODE",
    "MAX_DECLARED_SIZE",
    "SIZE_PREFIX",
    "ZSTD_LEVEL",
    "PayloadCompressor",
    "PayloadDecompressor",
]

DEFAULT_MAX_SIZE = 65536
DEFAULT_THRESHOLD: Final = 100
DEFAULT_ZSTD_THRESHOLD: Final = 1000

# LZ4 in its default (fast, acceleration 1) mode. Measured on msgpack chat and
# dialogue payloads of 100-1000 bytes (mean 437): default 0.91 of the original
# size in ~1.0 us; acceleration 4 saves 0.1 us but only reaches 0.98, and
# acceleration 8 no longer compresses at all; high-compression mode gains 2.5%
# (0.886) for 4.5x the time. Decompression is ~0.3 us in every mode.
LZ4_MODE: Final = "default"

# Zstandard level 3 (the library default). Measured on msgpack dialogue and
# world-state payloads (ratio = compressed size with prefix / original size):
#
#   size     level 1        level 3        level 5        level 6
#   1.4 KB   0.552  7 us    0.522 10 us    0.518 15 us    0.516  18 us
#   2.6 KB   0.456 11 us    0.423 15 us    0.418 24 us    0.415  29 us
#   10 KB    0.434 30 us    0.409 38 us    0.397 70 us    0.384 100 us
#   60 KB    0.368 169 us   0.351 228 us   0.345 463 us   0.328 702 us
#
# Level 3 saves 4-7% of the bytes of level 1 for 3-4 us more on datagram-sized
# payloads, and bytes on the wire are what we pay for (bandwidth, staying below
# the MTU). Level 4 is identical to 3 at these sizes, and from level 5 on the
# compression time doubles for 1-5%. Negative (fast) levels lose 20-60% of the
# savings. Decompression time hardly depends on the level (3-5 us for 1.4-2.6
# KB payloads at levels 1-9).
ZSTD_LEVEL: Final = 3

SIZE_PREFIX: Final = struct.Struct(">I")
MAX_DECLARED_SIZE: Final = 0xFFFFFFFF
_PREFIX_SIZE: Final = SIZE_PREFIX.size

# Frame_Header_Descriptor bits a receiver refuses: Frame_Content_Size_flag
# (0xC0), Single_Segment_flag (0x20) and Dictionary_ID_flag (0x03).
_ZSTD_REFUSED_DESCRIPTOR_BITS: Final = 0xE3
_ZSTD_MIN_WINDOW: Final = 1 << 10  # ZSTD_WINDOWLOG_ABSOLUTEMIN

# Plain ints, not Flag members: callers combine them with other flag bits on
# the hot path, where IntFlag arithmetic is slow. They compare equal to the
# Flag members.
_LZ4: Final = int(Flag.LZ4)
_ZSTD: Final = int(Flag.ZSTD)
_BAD: Final = DropReason.BAD_COMPRESSION

_pack_size = SIZE_PREFIX.pack
_unpack_size = SIZE_PREFIX.unpack_from
# lz4.block has no reusable context object; these are the module functions.
_lz4_compress: Callable[..., bytes] = lz4.block.compress
_lz4_decompress: Callable[..., bytes] = lz4.block.decompress
_LZ4BlockError: type[Exception] = lz4.block.LZ4BlockError
_ZstdError: type[Exception] = zstandard.ZstdError


class PayloadCompressor:
    """Chooses the codec by payload size and compresses (spec §2.3)."""

    __slots__ = ("_threshold", "_zstd_compress", "_zstd_threshold")

    def __init__(
        self,
        threshold: int = DEFAULT_THRESHOLD,
        zstd_threshold: int = DEFAULT_ZSTD_THRESHOLD,
    ) -> None:
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if zstd_threshold < threshold:
            raise ValueError(
                f"zstd_threshold must be >= threshold ({threshold}), got {zstd_threshold}"
            )
        self._threshold = threshold
        self._zstd_threshold = zstd_threshold
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL,
            format=zstandard.FORMAT_ZSTD1_MAGICLESS,
            write_content_size=0,
            write_checksum=0,
            write_dict_id=0,
        )
        # Created once: building a ZstdCompressor costs ~12 us. Its one-shot
        # compress() passes the source size to zstd, which shrinks the window
        # to the payload size rounded up to a power of two (minimum 1 KiB).
        self._zstd_compress: Callable[[bytes], bytes] = zstandard.ZstdCompressor(
            compression_params=params
        ).compress

    def compress(self, payload: bytes) -> tuple[int, bytes]:
        """Return (flag, data): flag is 0 (data is payload itself, unchanged object) or
        Flag.LZ4 / Flag.ZSTD.

        Below ``threshold`` nothing but a ``len()`` check happens. Raises
        ValueError for a payload of 4 GiB or more.
        """
        size = len(payload)
        if size < self._threshold:
            return 0, payload
        if size > MAX_DECLARED_SIZE:
            raise ValueError(f"payload of {size} bytes is too large to compress")
        if size <= self._zstd_threshold:
            flag = _LZ4
            body = _lz4_compress(payload, mode=LZ4_MODE, store_size=False)
        else:
            flag = _ZSTD
            body = self._zstd_compress(payload)
        if _PREFIX_SIZE + len(body) < size:
            return flag, _pack_size(size) + body
        return 0, payload


class PayloadDecompressor:
    """Decompresses untrusted payloads, never beyond ``max_size`` bytes."""

    __slots__ = ("_max_size", "_zstd_decompress")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if not 1 <= max_size <= MAX_DECLARED_SIZE:
            raise ValueError(f"max_size must be in 1..{MAX_DECLARED_SIZE}, got {max_size}")
        self._max_size = max_size
        # The decoder's window buffer is bounded too: a legitimate frame of at
        # most max_size bytes never needs more than this window.
        window = max(_ZSTD_MIN_WINDOW, 1 << (max_size - 1).bit_length())
        self._zstd_decompress: Callable[..., bytes] = zstandard.ZstdDecompressor(
            format=zstandard.FORMAT_ZSTD1_MAGICLESS, max_window_size=window
        ).decompress

    @property
    def max_size(self) -> int:
        return self._max_size

    def decompress_untrusted(self, flag: int, data: bytes) -> bytes:
        """flag 0 → return data unchanged; Flag.LZ4 / Flag.ZSTD → decompress.

        ``flag`` is the packet's compression bits (``flags & COMPRESSION_FLAGS``).
        Raises ONLY BadPacket(DropReason.BAD_COMPRESSION, detail) on anything
        bad: declared size > max_size, declared size 0, truncated, corrupt
        stream, result size != declared, unknown flag value, etc. The declared
        size is checked before any decompression.
        """
        if flag == 0:
            return data
        if flag == _LZ4:
            is_lz4 = True
        elif flag == _ZSTD:
            is_lz4 = False
        else:
            raise BadPacket(_BAD, f"unknown compression flag 0x{flag:04x}")
        if len(data) <= _PREFIX_SIZE:
            raise BadPacket(_BAD, f"truncated: {len(data)} bytes")
        (size,) = _unpack_size(data)
        if size == 0:
            raise BadPacket(_BAD, "declared size 0")
        if size > self._max_size:
            raise BadPacket(_BAD, f"declared size {size} exceeds {self._max_size}")
        # A bytes slice, not a memoryview: for datagram-sized payloads the copy
        # is cheaper than the codecs' buffer-protocol path.
        body = data[_PREFIX_SIZE:]
        if is_lz4:
            try:
                out = _lz4_decompress(body, uncompressed_size=size)
            except (_LZ4BlockError, ValueError) as e:
                raise BadPacket(_BAD, f"lz4: {e}") from None
        else:
            if body[0] & _ZSTD_REFUSED_DESCRIPTOR_BITS:
                raise BadPacket(_BAD, f"zstd: frame header descriptor 0x{body[0]:02x}")
            try:
                out = self._zstd_decompress(body, max_output_size=size, allow_extra_data=False)
            except (_ZstdError, ValueError) as e:
                raise BadPacket(_BAD, f"zstd: {e}") from None
        if len(out) != size:
            raise BadPacket(_BAD, f"decoded {len(out)} bytes, declared {size}")
        return out
