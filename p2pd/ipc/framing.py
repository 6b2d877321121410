"""Byte framing of the local IPC stream: length-prefixed msgpack maps.

One message on the stream::

    offset  size  field
    0       4     N: unsigned big-endian, 1 <= N <= max_frame_bytes (65536)
    4       N     one msgpack map with string keys, nothing after it

Decoding is strict, because the other end of the socket is only as trusted as
the token check that has not happened yet:

- N of 0 or above the maximum is refused as soon as the 4 length bytes are
  there, before any body is buffered: a declared 4 GiB frame allocates nothing;
- the body must be exactly one msgpack value, that value a map, every map in
  it keyed by strings with no key twice, strings valid UTF-8, no extension
  types, and no nesting deeper than :data:`MAX_DEPTH` (the top-level map is
  depth 1);
- msgpack's own limits (string, binary, array and map sizes) are set from the
  frame's size, so a few bytes can never declare a huge container.

Any violation raises :class:`~p2pd.ipc.errors.IpcError` with code
``bad_frame``. A stream has no resynchronisation point, so after an error the
decoder is unusable and the connection is to be closed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from p2pd.ipc.errors import ErrorCode, IpcError

HEADER_SIZE: Final = 4
DEFAULT_MAX_FRAME_BYTES: Final = 65536
MAX_DEPTH: Final = 8  # containers inside containers; the top-level map is depth 1
_LENGTH = struct.Struct(">I")
_LEAF_TYPES = (type(None), bool, int, float, str, bytes)


def _bad_frame(message: str) -> IpcError:
    return IpcError(ErrorCode.BAD_FRAME, message)


def encode_message(obj: Mapping[str, Any], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Frame one map: 4-byte length, then msgpack (strings as str, bytes as bin).

    Raises IpcError('too_large') if the body would exceed ``max_frame_bytes``,
    which the receiving side would refuse.
    """
    body: bytes = msgpack.packb(obj if isinstance(obj, dict) else dict(obj), use_bin_type=True)
    if len(body) > max_frame_bytes:
        raise IpcError(
            ErrorCode.TOO_LARGE,
            f"message of {len(body)} bytes exceeds the {max_frame_bytes}-byte frame limit",
        )
    return _LENGTH.pack(len(body)) + body


def _pairs_to_dict(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    # msgpack's strict_map_key still lets bytes keys through; the IPC wants str only.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate map key")
    for key in out:
        if type(key) is not str:
            raise ValueError("map key is not a string")
    return out


def _check_tree(obj: Any, depth: int) -> None:
    """Depth and value types; recursion stops at MAX_DEPTH + 1 whatever the input."""
    if depth > MAX_DEPTH:
        raise _bad_frame(f"nesting deeper than {MAX_DEPTH}")
    values = obj.values() if type(obj) is dict else obj
    for value in values:
        kind = type(value)
        if kind is dict or kind is list:
            _check_tree(value, depth + 1)
        elif kind not in _LEAF_TYPES:
            raise _bad_frame(f"unsupported msgpack value of type {kind.__name__}")


def unpack_map_untrusted(body: bytes | bytearray) -> dict[str, Any]:
    """Decode one msgpack map (a frame body or a peer payload) with every check above."""
    size = len(body)
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            object_pairs_hook=_pairs_to_dict,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError subclasses, hooks ours
        raise _bad_frame(f"not a valid msgpack value ({type(exc).__name__}: {exc})"[:200]) from None
    if type(obj) is not dict:
        raise _bad_frame(f"top level is a {type(obj).__name__}, not a map")
    _check_tree(obj, 1)
    return obj


class FrameDecoder:
    """Turns stream bytes into messages, whatever way the bytes are split.

    ``feed`` returns every message completed by the bytes so far, in order, and
    keeps an incomplete frame buffered: feeding a stream one byte at a time gives
    the same messages as feeding it at once. On the first bad frame ``feed``
    raises IpcError('bad_frame'); messages earlier in the same call are dropped
    with it (the connection is closing), and every later call raises again.
    """

    __slots__ = ("_buffer", "_error", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not 1 <= max_frame_bytes <= 0xFFFFFFFF:
            raise ValueError(f"max_frame_bytes must be in 1..2^32-1, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._error: IpcError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held (at most 4 + max_frame_bytes + a feed)."""
        return len(self._buffer)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes | bytearray) -> list[dict[str, Any]]:
        if self._error is not None:
            raise _bad_frame(f"stream already failed: {self._error.message}")
        buffer = self._buffer
        buffer += data
        messages: list[dict[str, Any]] = []
        pos = 0
        end = len(buffer)
        try:
            while end - pos >= HEADER_SIZE:
                (size,) = _LENGTH.unpack_from(buffer, pos)
                if size == 0:
                    raise _bad_frame("frame length 0")
                if size > self.max_frame_bytes:
                    raise _bad_frame(
                        f"frame length {size} exceeds the limit of {self.max_frame_bytes}"
                    )
                if end - pos - HEADER_SIZE < size:
                    break
                start = pos + HEADER_SIZE
                messages.append(unpack_map_untrusted(buffer[start : start + size]))
                pos = start + size
        except IpcError as exc:
            self._error = exc
            buffer.clear()
            raise
        del buffer[:pos]
        return messages
