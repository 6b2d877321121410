"""Frame lists (the plaintext of SEALED packets)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.frames import decode_frames_untrusted, encode_frames, padding_frame
from p2pd.wire.types import FRAME_TYPES, PacketType

content_types = sorted(t for t in FRAME_TYPES if t != PacketType.PADDING)


@given(st.lists(st.tuples(st.sampled_from(content_types), st.binary(max_size=300)),
                min_size=1, max_size=10))
def test_round_trip(frames: list[tuple[PacketType, bytes]]) -> None:
    assert decode_frames_untrusted(encode_frames(frames)) == frames


def test_padding_is_dropped_and_sized_exactly() -> None:
    body = encode_frames([(PacketType.CHAT_MESSAGE, b"hello")]) + padding_frame(23)
    assert len(body) == 9 + 23
    assert decode_frames_untrusted(body) == [(PacketType.CHAT_MESSAGE, b"hello")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.MALFORMED),
        (b"\x00\x05\x00", DropReason.MALFORMED),
        (b"\x00\x05\x00\x09abc", DropReason.MALFORMED),
        (b"\x00\x01\x00\x00", DropReason.UNKNOWN_TYPE),  # handshake is never a frame
        (padding_frame(8), DropReason.MALFORMED),  # nothing but padding
    ],
)
def test_malformed_frame_lists(data: bytes, reason: DropReason) -> None:
    with pytest.raises(BadPacket) as caught:
        decode_frames_untrusted(data)
    assert caught.value.reason is reason


def test_frame_count_is_bounded() -> None:
    with pytest.raises(BadPacket):
        decode_frames_untrusted(encode_frames([(PacketType.CHAT_MESSAGE, b"")] * 300))


@given(st.binary(max_size=400))
def test_hostile_bytes_raise_only_bad_packet(data: bytes) -> None:
    with contextlib.suppress(BadPacket):
        decode_frames_untrusted(data)
