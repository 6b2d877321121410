"""IPC stream framing: 4-byte big-endian length + one msgpack map."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pd.ipc.errors import IpcError
from p2pd.ipc.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_DEPTH,
    FrameDecoder,
    encode_message,
    unpack_map_untrusted,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# recursive() may nest deeper than the decoder allows; keep within MAX_DEPTH - 1
messages = st.dictionaries(st.text(max_size=10), values, max_size=6)


def depth_of(obj: Any) -> int:
    if isinstance(obj, dict):
        return 1 + max((depth_of(v) for v in obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max((depth_of(v) for v in obj), default=0)
    return 0


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def feed_error(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> IpcError:
    decoder = FrameDecoder(max_frame_bytes)
    with pytest.raises(IpcError) as caught:
        decoder.feed(data)
    return caught.value


def test_byte_example() -> None:
    # the example in docs/ipc.md
    data = encode_message({"op": "status", "id": 1})
    assert data.hex(" ") == "00 00 00 0f 82 a2 6f 70 a6 73 74 61 74 75 73 a2 69 64 01"


@given(messages)
def test_round_trip(msg: dict[str, Any]) -> None:
    if depth_of(msg) > MAX_DEPTH:
        return
    assert FrameDecoder().feed(encode_message(msg)) == [msg]


@given(st.lists(messages, max_size=5), st.data())
def test_any_split_gives_the_same_messages(msgs: list[dict[str, Any]], data: st.DataObject) -> None:
    msgs = [m for m in msgs if depth_of(m) <= MAX_DEPTH]
    stream = b"".join(encode_message(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    got: list[dict[str, Any]] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[start:end])
    assert got == msgs
    assert decoder.buffered == 0


def test_byte_at_a_time_equals_one_feed() -> None:
    msgs = [{"op": "status", "id": i, "pad": "x" * i} for i in range(20)]
    stream = b"".join(encode_message(m) for m in msgs)
    one = FrameDecoder().feed(stream)
    decoder = FrameDecoder()
    bytewise: list[dict[str, Any]] = []
    for i in range(len(stream)):
        bytewise += decoder.feed(stream[i : i + 1])
    assert one == bytewise == msgs


def test_trailing_partial_frame_stays_buffered() -> None:
    first, second = encode_message({"id": 1}), encode_message({"id": 2, "text": "hello"})
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:3]) == [{"id": 1}]  # not even the whole length
    assert decoder.buffered == 3
    assert decoder.feed(second[3:7]) == []
    assert decoder.buffered == 7
    assert decoder.feed(second[7:]) == [{"id": 2, "text": "hello"}]
    assert decoder.buffered == 0
    assert decoder.feed(b"") == []


@pytest.mark.parametrize("declared", [DEFAULT_MAX_FRAME_BYTES + 1, 1 << 31, 0xFFFFFFFF])
def test_oversize_length_is_refused_from_the_header_alone(declared: int) -> None:
    # Only the 4 length bytes are fed: the decoder refuses without waiting for
    # (or allocating) the body.
    error = feed_error(struct.pack(">I", declared))
    assert error.code == "bad_frame"
    assert str(declared) in error.message


def test_frame_size_limit_is_inclusive() -> None:
    body = msgpack.packb({"s": "x" * 90})
    assert FrameDecoder(len(body)).feed(frame(body)) == [{"s": "x" * 90}]
    assert feed_error(struct.pack(">I", len(body)), len(body) - 1).code == "bad_frame"


def test_zero_length() -> None:
    assert feed_error(b"\x00\x00\x00\x00").code == "bad_frame"


def test_good_messages_before_a_bad_frame_in_one_feed_are_dropped() -> None:
    decoder = FrameDecoder()
    with pytest.raises(IpcError):
        decoder.feed(encode_message({"id": 1}) + b"\x00\x00\x00\x00")


def test_decoder_is_unusable_after_an_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(IpcError):
        decoder.feed(b"\x00\x00\x00\x00")
    assert decoder.failed
    with pytest.raises(IpcError) as caught:
        decoder.feed(encode_message({"id": 1}))
    assert caught.value.code == "bad_frame"
    assert "already failed" in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb([1, 2]),  # array
        msgpack.packb(7),
        msgpack.packb("op"),
        msgpack.packb(None),
        msgpack.packb(b"bin"),
        b"\xc1",  # never-used msgpack byte
        b"\x81\xa2op",  # map cut short
        msgpack.packb({"a": 1}) + b"\x00",  # a second value after the map
        msgpack.packb({1: "int key"}),
        msgpack.packb({b"k": "bin key"}, use_bin_type=True),
        msgpack.packb({(1, 2): 1}),  # array key
        b"\x82\xa1a\x01\xa1a\x02",  # key twice
        b"\x81\xa1a\xa2\xff\xfe",  # invalid UTF-8 string
        msgpack.packb({"t": msgpack.Timestamp(1, 0)}),  # extension types
        msgpack.packb({"e": msgpack.ExtType(5, b"")}),
        msgpack.packb({"e": msgpack.ExtType(5, b"abcd")}),
        msgpack.packb({"x": {"y": {2: 1}}}),  # non-string key below the top
        b"\x81\xa1a\xdd\x7f\xff\xff\xff",  # array of 2^31-1 items declared in 8 bytes
        b"\x81\xa1a\xdb\x7f\xff\xff\xff",  # str of 2^31-1 bytes declared
    ],
)
def test_bodies_that_are_not_a_string_keyed_map(body: bytes) -> None:
    error = feed_error(frame(body))
    assert error.code == "bad_frame"
    assert error.field is None


def nested(depth: int) -> dict[str, Any]:
    """A map of the given depth (the top-level map alone is depth 1)."""
    obj: Any = {}
    for level in range(depth - 2):
        obj = {"a": obj} if level % 2 else [obj]
    return {"top": obj}


def test_nesting_up_to_the_limit_is_accepted() -> None:
    msg = nested(MAX_DEPTH)
    assert depth_of(msg) == MAX_DEPTH
    assert FrameDecoder().feed(encode_message(msg)) == [msg]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100, 5000])
def test_deep_nesting_is_refused(depth: int) -> None:
    # 5000 levels: beyond msgpack's own stack and Python's recursion limit
    body = b"\x81\xa1a" + b"\x91" * (depth - 2) + b"\x90"
    error = feed_error(frame(body))
    assert error.code == "bad_frame"


def test_encode_refuses_what_the_peer_would_refuse() -> None:
    with pytest.raises(IpcError) as caught:
        encode_message({"s": "x" * DEFAULT_MAX_FRAME_BYTES})
    assert caught.value.code == "too_large"
    assert len(encode_message({"s": "x" * 100}, max_frame_bytes=200)) < 200


def test_unpack_map_untrusted_is_the_body_decoder() -> None:
    assert unpack_map_untrusted(msgpack.packb({"a": [1, {"b": None}]})) == {"a": [1, {"b": None}]}
    with pytest.raises(IpcError):
        unpack_map_untrusted(b"")


@given(st.binary(max_size=300))
def test_garbage_raises_only_ipc_error(data: bytes) -> None:
    decoder = FrameDecoder(1024)
    try:
        decoder.feed(data)
    except IpcError as error:
        assert error.code == "bad_frame"


@given(st.binary(min_size=1, max_size=300))
def test_garbage_bodies_raise_only_ipc_error(body: bytes) -> None:
    try:
        out = FrameDecoder().feed(frame(body))
    except IpcError as error:
        assert error.code == "bad_frame"
    else:
        assert len(out) == 1
        assert isinstance(out[0], dict)
        assert all(isinstance(k, str) for k in out[0])


def test_decoder_arguments() -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FrameDecoder(0)
