"""Payload compression (spec §2.3): tier choice, round trips, bounded and hostile input."""

from __future__ import annotations

import json
import random
import struct
import tracemalloc
from collections.abc import Callable

import lz4.block
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pd.wire import compression
from p2pd.wire.compression import (
    DEFAULT_MAX_SIZE,
    PayloadCompressor,
    PayloadDecompressor,
)
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.types import Flag

LZ4 = int(Flag.LZ4)
ZSTD = int(Flag.ZSTD)
NO_LIMIT = 2**31  # thresholds that force one codec for every size we use


def game_payload(size: int, seed: int = 0) -> bytes:
    """Compressible bytes shaped like serialized chat/dialogue, exactly ``size`` long."""
    rng = random.Random(seed)
    words = [
        *("the", "guard", "merchant", "sword", "gold", "quest", "village", "river"),
        *("dragon", "tower", "key", "door", "tonight", "please", "help", "follow"),
        *("me", "we", "found", "an", "old", "map", "near", "the", "ruins"),
    ]
    out = bytearray()
    turn = 0
    while len(out) < size:
        record = {
            "type": "chat",
            "from": rng.choice(["Aldric", "Brienne", "Old Marta"]),
            "turn": turn,
            "ts": 1718000000 + turn,
            "text": " ".join(rng.choice(words) for _ in range(rng.randint(3, 20))),
        }
        out += json.dumps(record).encode()
        turn += 1
    return bytes(out[:size])


def position_batch(size: int) -> bytes:
    """Very compressible: a run of similar position updates, exactly ``size`` long."""
    out = b"".join(
        b'{"e":%d,"p":[%d.5,2.0,-%d.25],"r":0.5},' % (1000 + i, i, i % 7) for i in range(size)
    )
    return out[:size]


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def zstd_frame(payload: bytes, *, streamed: bool = False, **params: int) -> bytes:
    """A magicless Zstandard frame built with the given parameter overrides.

    ``streamed`` compresses without telling zstd the size, so the frame keeps
    the level's full window instead of one shrunk to the payload.
    """
    fields: dict[str, int] = {
        "format": zstandard.FORMAT_ZSTD1_MAGICLESS,
        "write_content_size": 0,
        "write_checksum": 0,
        "write_dict_id": 0,
    }
    fields.update(params)
    cparams = zstandard.ZstdCompressionParameters.from_level(3, **fields)
    cctx = zstandard.ZstdCompressor(compression_params=cparams)
    if streamed:
        cobj = cctx.compressobj()
        return cobj.compress(payload) + cobj.flush()
    frame: bytes = cctx.compress(payload)
    return frame


def lz4_block(payload: bytes) -> bytes:
    block: bytes = lz4.block.compress(payload, store_size=False)
    return block


def prefixed(size: int, body: bytes) -> bytes:
    return struct.pack(">I", size) + body


def refused(dec: PayloadDecompressor, flag: int, data: bytes) -> BadPacket:
    with pytest.raises(BadPacket) as info:
        dec.decompress_untrusted(flag, data)
    assert info.value.reason is DropReason.BAD_COMPRESSION
    return info.value


def only_bad_packet_or_declared_size(dec: PayloadDecompressor, flag: int, data: bytes) -> None:
    """Hostile input: nothing but BadPacket may escape; a result has the declared size."""
    try:
        out = dec.decompress_untrusted(flag, data)
    except BadPacket as e:
        assert e.reason is DropReason.BAD_COMPRESSION
        return
    if flag == 0:
        assert out is data
    else:
        (declared,) = struct.unpack_from(">I", data)
        assert len(out) == declared <= dec.max_size


# --- tier choice ----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, 0), (1, 0), (40, 0), (99, 0), (100, LZ4), (500, LZ4), (1000, LZ4), (1001, ZSTD),
     (3000, ZSTD), (DEFAULT_MAX_SIZE, ZSTD)],
)  # fmt: skip
def test_tier_boundaries(size: int, expected: int) -> None:
    payload = position_batch(size)
    flag, data = PayloadCompressor().compress(payload)
    assert flag == expected
    if expected:
        assert len(data) < size
        assert struct.unpack_from(">I", data) == (size,)
    else:
        assert data is payload
    assert PayloadDecompressor().decompress_untrusted(flag, data) == payload


def test_flags_are_the_header_flag_values() -> None:
    comp = PayloadCompressor()
    assert comp.compress(game_payload(500))[0] == Flag.LZ4
    assert comp.compress(game_payload(5000))[0] == Flag.ZSTD


def test_below_threshold_returns_the_same_object() -> None:
    comp = PayloadCompressor()
    for payload in (b"", b"\x00" * 40, game_payload(99)):
        flag, data = comp.compress(payload)
        assert flag == 0
        assert data is payload


@pytest.mark.parametrize("size", [100, 101, 500, 1000, 1001, 1400, 20000, DEFAULT_MAX_SIZE])
def test_incompressible_data_stays_uncompressed(size: int) -> None:
    payload = random_bytes(size, seed=size)
    flag, data = PayloadCompressor().compress(payload)
    assert flag == 0
    assert data is payload


def test_compressed_form_kept_only_when_strictly_smaller() -> None:
    # At the threshold of 0 every payload is a candidate, but nothing of 4
    # bytes or less can shrink below its own 4-byte size prefix.
    comp = PayloadCompressor(threshold=0, zstd_threshold=0)
    for size in range(6):
        payload = b"\x00" * size
        flag, data = comp.compress(payload)
        assert flag == 0
        assert data is payload
    for size in (20, 100, 2000):
        flag, data = comp.compress(b"\x00" * size)
        assert flag == ZSTD
        assert len(data) < size


def test_custom_thresholds() -> None:
    comp = PayloadCompressor(threshold=500, zstd_threshold=500)
    assert comp.compress(game_payload(499))[0] == 0
    assert comp.compress(game_payload(500))[0] == LZ4
    assert comp.compress(game_payload(501))[0] == ZSTD
    lz4_only = PayloadCompressor(threshold=0, zstd_threshold=NO_LIMIT)
    assert lz4_only.compress(game_payload(50000))[0] == LZ4
    assert lz4_only.compress(position_batch(60))[0] == LZ4


@pytest.mark.parametrize(
    ("threshold", "zstd_threshold", "bad"),
    [(-1, 1000, "-1"), (100, 99, "99"), (-5, -10, "-5"), (0, -1, "-1")],
)
def test_compressor_arguments_validated(threshold: int, zstd_threshold: int, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        PayloadCompressor(threshold, zstd_threshold)


@pytest.mark.parametrize("max_size", [0, -1, 2**32])
def test_decompressor_arguments_validated(max_size: int) -> None:
    with pytest.raises(ValueError, match=str(max_size)):
        PayloadDecompressor(max_size)


# --- round trips ----------------------------------------------------------

CODECS = {
    "lz4": (PayloadCompressor(threshold=0, zstd_threshold=NO_LIMIT), LZ4),
    "zstd": (PayloadCompressor(threshold=0, zstd_threshold=0), ZSTD),
}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_round_trip_many_sizes(codec: str) -> None:
    comp, expected = CODECS[codec]
    dec = PayloadDecompressor()
    sizes = [*range(0, 300), *range(300, 5000, 97), 16383, 16384, 40000, DEFAULT_MAX_SIZE]
    for size in sizes:
        payload = game_payload(size, seed=size)
        flag, data = comp.compress(payload)
        assert flag in (0, expected)
        if size >= 200:  # long enough for either codec to win on this data
            assert flag == expected, size
        assert dec.decompress_untrusted(flag, data) == payload


def test_round_trip_exactly_max_size_with_odd_limit() -> None:
    # The zstd window is the payload size rounded up to a power of two; the
    # decompressor's window bound must admit it.
    dec = PayloadDecompressor(max_size=5000)
    comp = PayloadCompressor(threshold=0, zstd_threshold=0)
    payload = game_payload(5000)
    flag, data = comp.compress(payload)
    assert flag == ZSTD
    assert dec.decompress_untrusted(flag, data) == payload
    refused(PayloadDecompressor(max_size=4999), flag, data)


# Compressible payloads: runs of a few tokens with some random bytes mixed in.
_TOKENS = st.sampled_from(
    [b"\x00", b"pos", b"chat:", b"hello there ", b"\xff\xfe", b"npc_4711", b'{"x":1.5}']
)
compressible = st.lists(
    st.one_of(_TOKENS, st.binary(max_size=8)), max_size=600
).map(b"".join)  # fmt: skip
payloads = st.one_of(compressible, st.binary(max_size=3000))


@settings(max_examples=300, deadline=None)
@given(
    payload=payloads,
    threshold=st.integers(0, 1200),
    span=st.integers(0, 2000),
)
def test_round_trip_property(payload: bytes, threshold: int, span: int) -> None:
    comp = PayloadCompressor(threshold, threshold + span)
    flag, data = comp.compress(payload)
    size = len(payload)
    if size < threshold:
        assert (flag, data) == (0, payload)
        assert data is payload
    elif flag == 0:
        assert data is payload
    else:
        assert flag == (LZ4 if size <= threshold + span else ZSTD)
        assert len(data) < size
    assert PayloadDecompressor().decompress_untrusted(flag, data) == payload


@settings(max_examples=200, deadline=None)
@given(payload=compressible, codec=st.sampled_from(sorted(CODECS)))
def test_round_trip_property_each_codec(payload: bytes, codec: str) -> None:
    comp, expected = CODECS[codec]
    flag, data = comp.compress(payload)
    assert flag in (0, expected)
    assert PayloadDecompressor().decompress_untrusted(flag, data) == payload


# --- bounded decompression ------------------------------------------------


def forbid(name: str) -> Callable[..., bytes]:
    def boom(*args: object, **kwargs: object) -> bytes:
        raise AssertionError(f"{name} called for a payload that should have been refused")

    return boom


@pytest.mark.parametrize("declared", [DEFAULT_MAX_SIZE + 1, 10**6, 2**32 - 1])
def test_lz4_oversize_declaration_refused_before_decompressing(
    declared: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = prefixed(declared, lz4_block(b"\x00" * 10**6))
    monkeypatch.setattr(compression, "_lz4_decompress", forbid("lz4 decompress"))
    err = refused(PayloadDecompressor(), LZ4, data)
    assert str(declared) in err.detail


@pytest.mark.parametrize("declared", [DEFAULT_MAX_SIZE + 1, 10**6, 2**32 - 1])
def test_zstd_oversize_declaration_refused_before_decompressing(
    declared: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = prefixed(declared, zstd_frame(b"\x00" * 10**6))
    dec = PayloadDecompressor()
    monkeypatch.setattr(dec, "_zstd_decompress", forbid("zstd decompress"))
    err = refused(dec, ZSTD, data)
    assert str(declared) in err.detail


def test_declared_size_zero_refused() -> None:
    dec = PayloadDecompressor()
    refused(dec, LZ4, prefixed(0, lz4_block(b"")))
    refused(dec, ZSTD, prefixed(0, zstd_frame(b"")))


def test_zip_bomb_refused() -> None:
    bomb = b"\x00" * 2**20
    dec = PayloadDecompressor(max_size=64 * 1024)
    lz4_flag, lz4_data = PayloadCompressor(0, NO_LIMIT).compress(bomb)
    zstd_flag, zstd_data = PayloadCompressor().compress(bomb)
    assert (lz4_flag, zstd_flag) == (LZ4, ZSTD)
    assert len(zstd_data) < 100  # a tiny packet...
    for flag, data in ((lz4_flag, lz4_data), (zstd_flag, zstd_data)):
        refused(dec, flag, data)  # ...declaring 1 MiB


def peak_memory(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("codec", ["lz4", "zstd-small-window", "zstd-large-window"])
def test_lying_bomb_never_allocates_beyond_the_declared_size(codec: str) -> None:
    """A bomb that declares a small size but expands to 1 MiB is cut off at the declared size."""
    bomb = b"\x00" * 2**20
    declared = 4096
    if codec == "lz4":
        flag, body = LZ4, lz4_block(bomb)
    elif codec == "zstd-small-window":
        flag, body = ZSTD, zstd_frame(bomb, window_log=12)
    else:
        flag, body = ZSTD, zstd_frame(bomb, window_log=20)
    data = prefixed(declared, body)
    dec = PayloadDecompressor()

    def attempt() -> None:
        refused(dec, flag, data)

    attempt()  # warm up codec state
    # The codecs' output buffers (lz4 copies its output once) are traced; the
    # 1 MiB the bomb encodes must never appear.
    assert peak_memory(attempt) < 64 * 1024


def test_zstd_window_beyond_max_size_refused() -> None:
    payload = game_payload(3000)
    frame = zstd_frame(payload, streamed=True, window_log=20)
    params = zstandard.get_frame_parameters(frame, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    assert params.window_size == 2**20
    data = prefixed(len(payload), frame)
    err = refused(PayloadDecompressor(), ZSTD, data)
    assert "memory" in err.detail
    # The same frame within the window bound decodes.
    assert PayloadDecompressor(max_size=2**20).decompress_untrusted(ZSTD, data) == payload


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
@pytest.mark.parametrize("delta", [-1000, -1, 1, 7])
def test_declared_size_mismatch_refused(codec: str, delta: int) -> None:
    payload = game_payload(3000)
    if codec == "lz4":
        flag, body = LZ4, lz4_block(payload)
    else:
        flag, body = ZSTD, zstd_frame(payload)
    dec = PayloadDecompressor()
    assert dec.decompress_untrusted(flag, prefixed(len(payload), body)) == payload
    refused(dec, flag, prefixed(len(payload) + delta, body))


def test_zstd_frame_with_content_size_refused_before_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = game_payload(3000)
    real = zstd_frame(payload, write_content_size=1)
    assert real[0] & 0xC0  # the descriptor announces a content size
    # Hand-made header: Frame_Content_Size_flag 3 (8-byte field), window 1 KiB,
    # content size 2**40 -- zstandard would allocate that much up front.
    crafted = bytes([0xC0, 0x00]) + struct.pack("<Q", 2**40) + b"\x01\x00\x00"
    single_segment = bytes([0x20, 0x10]) + b"\x01\x00\x00"
    with_dict_id = bytes([0x01, 0x00, 0x07]) + real[2:]
    dec = PayloadDecompressor()
    monkeypatch.setattr(dec, "_zstd_decompress", forbid("zstd decompress"))
    for body in (real, crafted, single_segment, with_dict_id):
        refused(dec, ZSTD, prefixed(len(payload), body))


def test_zstd_standard_format_with_magic_refused() -> None:
    payload = game_payload(3000)
    framed = zstd_frame(payload, format=zstandard.FORMAT_ZSTD1)
    assert framed.startswith(b"\x28\xb5\x2f\xfd")
    refused(PayloadDecompressor(), ZSTD, prefixed(len(payload), framed))


def test_zstd_trailing_bytes_refused() -> None:
    payload = game_payload(3000)
    frame = zstd_frame(payload)
    dec = PayloadDecompressor()
    for extra in (b"\x00", b"junk", frame):
        refused(dec, ZSTD, prefixed(len(payload), frame + extra))


def test_zstd_content_checksum_is_verified_when_present() -> None:
    payload = game_payload(3000)
    frame = zstd_frame(payload, write_checksum=1)
    dec = PayloadDecompressor()
    assert dec.decompress_untrusted(ZSTD, prefixed(len(payload), frame)) == payload
    broken = frame[:-1] + bytes([frame[-1] ^ 0x01])
    refused(dec, ZSTD, prefixed(len(payload), broken))


def test_compressor_writes_the_documented_zstd_frame() -> None:
    payload = game_payload(3000)
    flag, data = PayloadCompressor().compress(payload)
    assert flag == ZSTD
    frame = data[4:]
    assert frame[0] == 0x00  # no content size, no single segment, no checksum, no dict id
    params = zstandard.get_frame_parameters(frame, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert not params.has_checksum
    assert params.dict_id == 0
    assert params.window_size == 4096  # 3000 rounded up to a power of two


def test_compressor_writes_the_documented_lz4_block() -> None:
    payload = game_payload(500)
    flag, data = PayloadCompressor().compress(payload)
    assert flag == LZ4
    assert data[:4] == struct.pack(">I", 500)
    assert lz4.block.decompress(data[4:], uncompressed_size=500) == payload


@pytest.mark.parametrize("flag", [int(Flag.ENCRYPTED), LZ4 | ZSTD, 0x0008, 0x0010, 0xFFFF, -1])
def test_unknown_flag_refused(flag: int) -> None:
    data = PayloadCompressor().compress(game_payload(500))[1]
    refused(PayloadDecompressor(), flag, data)


def test_flag_zero_returns_data_unchanged() -> None:
    dec = PayloadDecompressor(max_size=10)
    for data in (b"", b"abc", random_bytes(1000)):
        assert dec.decompress_untrusted(0, data) is data


@pytest.mark.parametrize("flag", [LZ4, ZSTD])
def test_too_short_refused(flag: int) -> None:
    dec = PayloadDecompressor()
    for data in (b"", b"\x00", b"\x00\x00\x01", b"\x00\x00\x01\x00"):
        err = refused(dec, flag, data)
        assert "truncated" in err.detail


# --- hostile input --------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    flag=st.sampled_from([0, LZ4, ZSTD, LZ4 | ZSTD, 0x0008]),
    data=st.binary(max_size=1500),
    max_size=st.sampled_from([1, 100, 4096, DEFAULT_MAX_SIZE]),
)
def test_random_bytes(flag: int, data: bytes, max_size: int) -> None:
    only_bad_packet_or_declared_size(PayloadDecompressor(max_size), flag, data)


@settings(max_examples=500, deadline=None)
@given(
    flag=st.sampled_from([LZ4, ZSTD]),
    declared=st.integers(1, DEFAULT_MAX_SIZE),
    body=st.binary(min_size=1, max_size=1500),
)
def test_random_bytes_behind_a_plausible_size(flag: int, declared: int, body: bytes) -> None:
    only_bad_packet_or_declared_size(PayloadDecompressor(), flag, prefixed(declared, body))


def valid_samples() -> list[tuple[int, bytes, bytes]]:
    """(flag, compressed, original) for both codecs and a few sizes."""
    samples = []
    for size in (100, 300, 1000, 1001, 3000):
        payload = position_batch(size) if size <= 100 else game_payload(size, seed=size)
        flag, data = PayloadCompressor().compress(payload)
        assert flag
        samples.append((flag, data, payload))
    return samples


SAMPLES = valid_samples()


SAMPLE_IDS = [f"{'lz4' if flag == LZ4 else 'zstd'}-{len(p)}" for flag, _, p in SAMPLES]


@pytest.mark.parametrize(("flag", "data", "payload"), SAMPLES, ids=SAMPLE_IDS)
def test_every_truncation_refused(flag: int, data: bytes, payload: bytes) -> None:
    dec = PayloadDecompressor()
    assert dec.decompress_untrusted(flag, data) == payload
    for cut in range(len(data)):
        refused(dec, flag, data[:cut])


@pytest.mark.parametrize(("flag", "data", "payload"), SAMPLES, ids=SAMPLE_IDS)
def test_every_single_bit_flip(flag: int, data: bytes, payload: bytes) -> None:
    dec = PayloadDecompressor()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        only_bad_packet_or_declared_size(dec, flag, bytes(flipped))
    # The decompressor is not left in a bad state by all that.
    assert dec.decompress_untrusted(flag, data) == payload


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    flips=st.lists(st.integers(0, 2**16), min_size=1, max_size=8),
    wrong_codec=st.booleans(),
)
def test_random_bit_flips(
    sample: tuple[int, bytes, bytes], flips: list[int], wrong_codec: bool
) -> None:
    flag, data, _ = sample
    mangled = bytearray(data)
    for flip in flips:
        bit = flip % (len(data) * 8)
        mangled[bit // 8] ^= 1 << (bit % 8)
    if wrong_codec:
        flag ^= LZ4 | ZSTD
    only_bad_packet_or_declared_size(PayloadDecompressor(), flag, bytes(mangled))


# --- reuse ----------------------------------------------------------------


def test_compressor_reuse_gives_identical_output() -> None:
    comp = PayloadCompressor()
    payloads = [game_payload(size, seed=size) for size in (40, 150, 999, 1001, 3000, 40000)]
    first = [comp.compress(p) for p in payloads]
    for _ in range(3):
        assert [comp.compress(p) for p in payloads] == first
        assert [comp.compress(p) for p in reversed(payloads)] == first[::-1]
    fresh = PayloadCompressor()
    assert [fresh.compress(p) for p in payloads] == first


def test_decompressor_reuse_after_errors() -> None:
    comp = PayloadCompressor()
    dec = PayloadDecompressor()
    good = [(p, *comp.compress(p)) for p in (game_payload(500), game_payload(3000))]
    for payload, flag, data in good * 3:
        refused(dec, flag, data[:-3])
        refused(dec, flag, data + b"\x00")
        assert dec.decompress_untrusted(flag, data) == payload
