"""The quantized delta codec for player positions (p2pd/channels/position_codec.py)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from p2pd.channels.position_codec import (
    DIR_PRESENT,
    FULL_MASK,
    MAP_PRESENT,
    MAX_DECODABLE_SIZE,
    MOVING,
    RESERVED,
    SPEED_PRESENT,
    TICK_PRESENT,
    X_PRESENT,
    Y_PRESENT,
    PositionState,
    decode_position_untrusted,
    encode_position,
)
from p2pd.wire.errors import BadPacket, DropReason

MAX_TICK = 2**63 - 1
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-."
_WIDE_CHARS = "éßжの地図🗺"  # 2, 2, 2, 3, 3, 3 and 4 bytes of UTF-8

BASE = PositionState("prontera", 150, 180, 3, 150, True, 3_600_000)


def _varint(value: int) -> bytes:
    """Reference varint, written independently of the codec's."""
    groups = []
    while True:
        groups.append(value & 0x7F)
        value >>= 7
        if not value:
            break
    return bytes([g | 0x80 for g in groups[:-1]] + [groups[-1]])


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _pick(rng: random.Random, low: int, high: int) -> int:
    """Mostly uniform in low..high, often exactly an end of the range."""
    roll = rng.random()
    if roll < 0.15:
        return low
    if roll < 0.3:
        return high
    return rng.randint(low, high)


def _random_map(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return "".join(rng.choices(_NAME_CHARS, k=_pick(rng, 1, 32)))
    name = ""
    while True:
        char = rng.choice(_WIDE_CHARS + "ab")
        if len((name + char).encode()) > 32:
            return name
        name += char


def _random_tick(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.1:
        return 0
    if roll < 0.2:
        return MAX_TICK
    if roll < 0.5:
        return rng.randint(0, 2**32)  # GetTickCount-like
    return rng.randint(0, MAX_TICK)


def _random_state(rng: random.Random) -> PositionState:
    return PositionState(
        map=_random_map(rng),
        x=_pick(rng, 0, 1023),
        y=_pick(rng, 0, 1023),
        dir=_pick(rng, 0, 7),
        speed=_pick(rng, 20, 1000),
        moving=rng.random() < 0.5,
        tick=_random_tick(rng),
    )


def _nearby_state(rng: random.Random, baseline: PositionState) -> PositionState:
    """``baseline`` with a random subset of its fields changed a little."""
    state = baseline
    if rng.random() < 0.1:
        state = dataclasses.replace(state, map=_random_map(rng))
    if rng.random() < 0.5:
        state = dataclasses.replace(state, x=min(1023, max(0, state.x + rng.randint(-3, 3))))
    if rng.random() < 0.5:
        state = dataclasses.replace(state, y=min(1023, max(0, state.y + rng.randint(-3, 3))))
    if rng.random() < 0.3:
        state = dataclasses.replace(state, dir=rng.randint(0, 7))
    if rng.random() < 0.1:
        state = dataclasses.replace(state, speed=rng.randint(20, 1000))
    if rng.random() < 0.5:
        state = dataclasses.replace(state, moving=not state.moving)
    if rng.random() < 0.8:
        state = dataclasses.replace(state, tick=min(MAX_TICK, state.tick + rng.randint(0, 1000)))
    return state


def _changed_bits(state: PositionState, baseline: PositionState) -> int:
    bits = 0
    for name, bit in (
        ("map", MAP_PRESENT),
        ("x", X_PRESENT),
        ("y", Y_PRESENT),
        ("dir", DIR_PRESENT),
        ("speed", SPEED_PRESENT),
        ("tick", TICK_PRESENT),
    ):
        if getattr(state, name) != getattr(baseline, name):
            bits |= bit
    return bits


def _malformed(data: bytes | memoryview, baseline: PositionState | None) -> str:
    with pytest.raises(BadPacket) as caught:
        decode_position_untrusted(data, baseline)
    assert caught.value.reason is DropReason.MALFORMED
    return caught.value.detail


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_full_state_round_trips(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(1000):
        state = _random_state(rng)
        data = encode_position(state, None)
        assert data[0] == FULL_MASK | (MOVING if state.moving else 0)
        assert len(data) == 1 + 1 + len(state.map.encode()) + 7 + len(_varint(state.tick))
        assert decode_position_untrusted(data, None) == state
        assert decode_position_untrusted(memoryview(data), None) == state


@pytest.mark.parametrize("seed", range(4))
def test_delta_round_trips_and_carries_only_changed_fields(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(1000):
        baseline = _random_state(rng)
        # half far away (large deltas of either sign), half a typical small step
        state = _random_state(rng) if rng.random() < 0.5 else _nearby_state(rng, baseline)
        data = encode_position(state, baseline)
        assert data[0] == _changed_bits(state, baseline) | (MOVING if state.moving else 0)
        assert decode_position_untrusted(data, baseline) == state
        assert decode_position_untrusted(memoryview(b"\0" + data)[1:], baseline) == state


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ((0, 0, 0), (1023, 1023, MAX_TICK)),
        ((1023, 1023, MAX_TICK), (0, 0, 0)),
        ((0, 1023, 0), (1023, 0, 1)),
        ((512, 512, MAX_TICK - 1), (511, 513, MAX_TICK)),
    ],
)
def test_extreme_values_round_trip(old: tuple[int, int, int], new: tuple[int, int, int]) -> None:
    baseline = PositionState("a", old[0], old[1], 0, 20, False, old[2])
    state = PositionState("b" * 32, new[0], new[1], 7, 1000, True, new[2])
    for reference in (None, baseline, state):
        assert decode_position_untrusted(encode_position(state, reference), reference) == state
    for reference in (None, state, baseline):
        assert decode_position_untrusted(encode_position(baseline, reference), reference) == (
            baseline
        )


def test_largest_encodings() -> None:
    small = PositionState("a", 0, 0, 0, 20, False, 0)
    large = PositionState("é" * 16, 1023, 1023, 7, 1000, True, MAX_TICK)
    assert len(encode_position(large, None)) == 50  # tick in 9 varint bytes
    assert len(encode_position(large, small)) == 51  # tick delta 2**63-1 in 10
    assert len(encode_position(small, large)) == 20  # map 2 bytes, tick -(2**63-1) in 10


# --- what goes on the wire ---------------------------------------------------------------


def test_known_encodings() -> None:
    full = encode_position(BASE, None)
    assert full == bytes.fromhex("7f 08 70726f6e74657261 0096 00b4 03 0096 80dddb01")
    step = dataclasses.replace(BASE, x=151, tick=BASE.tick + 200)
    # mask 0x62 = MOVING | TICK | X; x +1 -> zigzag 2; tick +200 -> zigzag 400 = 0x90 0x03
    assert encode_position(step, BASE) == bytes.fromhex("62 02 9003")
    back = dataclasses.replace(BASE, y=179, dir=5, speed=300, moving=False)
    # mask 0x1c = SPEED | DIR | Y; y -1 -> zigzag 1; dir 5; speed 300 = 0x012c
    assert encode_position(back, BASE) == bytes.fromhex("1c 01 05 012c")
    moved = dataclasses.replace(BASE, map="geffen", x=120, y=100)
    # new map: absolute; x -30 -> zigzag 59, y -80 -> zigzag 159 = 0x9f 0x01
    assert encode_position(moved, BASE) == bytes.fromhex("47 06 67656666656e 3b 9f01")


def test_unchanged_fields_are_absent() -> None:
    assert encode_position(BASE, BASE) == bytes([MOVING])
    stopped = dataclasses.replace(BASE, moving=False)
    assert encode_position(stopped, BASE) == b"\x00"
    assert decode_position_untrusted(b"\x00", BASE) == stopped
    for state, bit in (
        (dataclasses.replace(BASE, map="payon"), MAP_PRESENT),
        (dataclasses.replace(BASE, x=0), X_PRESENT),
        (dataclasses.replace(BASE, y=1023), Y_PRESENT),
        (dataclasses.replace(BASE, dir=0), DIR_PRESENT),
        (dataclasses.replace(BASE, speed=1000), SPEED_PRESENT),
        (dataclasses.replace(BASE, tick=0), TICK_PRESENT),
    ):
        assert encode_position(state, BASE)[0] == bit | MOVING, state


def test_walking_update_is_at_most_5_bytes() -> None:
    rng = random.Random(7)
    state = PositionState("prt_fild08", 100, 100, 2, 150, True, rng.randint(0, 2**32))
    for _ in range(1000):
        # one cell in any direction, 100..300 ms later (the tick grows by the step time)
        dx, dy = rng.choice([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1)])
        step = dataclasses.replace(
            state, x=state.x + dx, y=state.y + dy, tick=state.tick + rng.randint(100, 300)
        )
        data = encode_position(step, state)
        assert len(data) <= 5
        assert decode_position_untrusted(data, state) == step
    step = dataclasses.replace(BASE, x=BASE.x + 1, tick=BASE.tick + 200)
    assert len(encode_position(step, BASE)) == 4  # mask, x, 2 bytes of tick


def test_full_state_size() -> None:
    # mask 1 + map 1+7 + x 2 + y 2 + dir 1 + speed 2 = 16, then the tick's varint
    for tick, tick_bytes in ((0, 1), (127, 1), (128, 2), (3_600_000, 4), (2**32 - 1, 5)):
        state = PositionState("geffen1", 1023, 0, 7, 150, True, tick)
        assert len(encode_position(state, None)) == 16 + tick_bytes


# --- what the decoder refuses ------------------------------------------------------------


def test_every_proper_prefix_is_truncated() -> None:
    far = PositionState("morocc", 0, 1023, 6, 20, False, MAX_TICK)
    cases = [
        (encode_position(BASE, None), None),
        (encode_position(far, None), None),
        (encode_position(far, BASE), BASE),
        (encode_position(BASE, far), far),
    ]
    for data, baseline in cases:
        assert len(data) > 20
        for end in range(len(data)):
            _malformed(data[:end], baseline)


def test_trailing_bytes() -> None:
    for data, baseline in (
        (encode_position(BASE, None), None),
        (encode_position(dataclasses.replace(BASE, x=1), BASE), BASE),
        (bytes([MOVING]), BASE),
    ):
        for extra in (b"\x00", b"\x01", b"\xff" * 5):
            assert "after the last field" in _malformed(data + extra, baseline)


def test_longer_than_any_valid_update() -> None:
    data = b"\x00" * (MAX_DECODABLE_SIZE + 1)
    _malformed(data, BASE)
    _malformed(memoryview(data), BASE)
    _malformed(memoryview(b"\x00" * 100_000), None)
    _malformed(bytearray(data), BASE)  # type: ignore[arg-type]


def test_empty() -> None:
    _malformed(b"", None)
    _malformed(b"", BASE)
    _malformed(memoryview(b""), BASE)


@pytest.mark.parametrize("baseline", [None, BASE])
def test_reserved_bit(baseline: PositionState | None) -> None:
    data = bytearray(encode_position(BASE, baseline))
    data[0] |= RESERVED
    assert "reserved" in _malformed(bytes(data), baseline)


@pytest.mark.parametrize(
    "bit", [MAP_PRESENT, X_PRESENT, Y_PRESENT, DIR_PRESENT, SPEED_PRESENT, TICK_PRESENT]
)
def test_full_state_missing_a_field(bit: int) -> None:
    data = bytearray(encode_position(BASE, None))
    data[0] &= ~bit
    assert "lacks fields" in _malformed(bytes(data), None)
    # with a delta encoding but no baseline, too
    delta = encode_position(dataclasses.replace(BASE, x=1), BASE)
    _malformed(delta, None)


def test_full_state_mask_must_not_be_zero() -> None:
    _malformed(b"\x00", None)
    _malformed(b"\x40", None)


def _full(
    map_bytes: bytes, cells: bytes = bytes.fromhex("0001 0002 03 0096"), tick: int = 1
) -> bytes:
    return bytes([0x3F, len(map_bytes) & 0xFF]) + map_bytes + cells + _varint(tick)


def test_well_formed_hand_built_full_state() -> None:
    assert decode_position_untrusted(_full(b"izlude"), None) == PositionState(
        "izlude", 1, 2, 3, 150, False, 1
    )


@pytest.mark.parametrize("baseline", [None, BASE])
def test_map_length_out_of_range(baseline: PositionState | None) -> None:
    for map_part in (b"\x00", b"\x21" + b"a" * 33, b"\xff" + b"a" * 20):
        if baseline is None:
            data = b"\x3f" + map_part + bytes.fromhex("0001 0002 03 0096 01")
        else:
            data = bytes([MAP_PRESENT]) + map_part
        assert "map name of" in _malformed(data, baseline)


@pytest.mark.parametrize("name", [b"\xff", b"ab\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"])
def test_map_not_utf8(name: bytes) -> None:
    assert "UTF-8" in _malformed(_full(name), None)
    assert "UTF-8" in _malformed(bytes([MAP_PRESENT, len(name)]) + name, BASE)


def test_map_of_32_bytes_is_accepted() -> None:
    name = "地" * 10 + "ab"  # 32 bytes
    assert decode_position_untrusted(_full(name.encode()), None).map == name


@pytest.mark.parametrize(
    ("cells", "what"),
    [
        ("0400 0000 00 0014", "cell"),  # x 1024
        ("0000 0400 00 0014", "cell"),  # y 1024
        ("ffff ffff 00 0014", "cell"),
        ("0000 0000 08 0014", "direction"),
        ("0000 0000 ff 0014", "direction"),
        ("0000 0000 00 0013", "speed"),  # 19
        ("0000 0000 00 03e9", "speed"),  # 1001
        ("0000 0000 00 0000", "speed"),
        ("0000 0000 00 ffff", "speed"),
    ],
)
def test_full_state_values_out_of_range(cells: str, what: str) -> None:
    assert what in _malformed(_full(b"alberta", bytes.fromhex(cells)), None)


def test_full_state_tick_out_of_range() -> None:
    cells = bytes.fromhex("0000 0000 00 0014")
    assert decode_position_untrusted(_full(b"a", cells, MAX_TICK), None).tick == MAX_TICK
    for tick in (2**63, 2**64 - 1, 2**70 - 1):
        assert "tick" in _malformed(_full(b"a", cells, tick), None)


@pytest.mark.parametrize(
    ("mask", "body", "what"),
    [
        (X_PRESENT, _varint(_zigzag(-151)), "cell"),  # x -1
        (X_PRESENT, _varint(_zigzag(1023 - 150 + 1)), "cell"),  # x 1024
        (Y_PRESENT, _varint(_zigzag(-181)), "cell"),
        (Y_PRESENT, _varint(_zigzag(1023 - 180 + 1)), "cell"),
        (X_PRESENT, _varint(2**64 - 1), "cell"),
        (DIR_PRESENT, b"\x08", "direction"),
        (DIR_PRESENT, b"\xff", "direction"),
        (SPEED_PRESENT, b"\x00\x13", "speed"),
        (SPEED_PRESENT, b"\x03\xe9", "speed"),
        (TICK_PRESENT, _varint(_zigzag(-3_600_001)), "tick"),  # tick -1
        (TICK_PRESENT, _varint(_zigzag(MAX_TICK - 3_600_000 + 1)), "tick"),  # 2**63
        (TICK_PRESENT, _varint(2**70 - 1), "tick"),
    ],
)
def test_delta_values_out_of_range(mask: int, body: bytes, what: str) -> None:
    assert what in _malformed(bytes([mask]) + body, BASE)


def test_delta_values_at_the_edges_are_accepted() -> None:
    stopped = dataclasses.replace(BASE, moving=False)
    for mask, body, expected in (
        (X_PRESENT, _varint(_zigzag(-150)), dataclasses.replace(stopped, x=0)),
        (X_PRESENT, _varint(_zigzag(1023 - 150)), dataclasses.replace(stopped, x=1023)),
        (Y_PRESENT, _varint(_zigzag(-180)), dataclasses.replace(stopped, y=0)),
        (TICK_PRESENT, _varint(_zigzag(-3_600_000)), dataclasses.replace(stopped, tick=0)),
        (
            TICK_PRESENT,
            _varint(_zigzag(MAX_TICK - 3_600_000)),
            dataclasses.replace(stopped, tick=MAX_TICK),
        ),
        (DIR_PRESENT, b"\x07", dataclasses.replace(stopped, dir=7)),
        (SPEED_PRESENT, b"\x00\x14", dataclasses.replace(stopped, speed=20)),
        (SPEED_PRESENT, b"\x03\xe8", dataclasses.replace(stopped, speed=1000)),
    ):
        assert decode_position_untrusted(bytes([mask]) + body, BASE) == expected


@pytest.mark.parametrize("field", ["x", "y", "tick"])
def test_varint_longer_than_10_bytes(field: str) -> None:
    bit = {"x": X_PRESENT, "y": Y_PRESENT, "tick": TICK_PRESENT}[field]
    eleven = b"\x80" * 10 + b"\x00"  # zero, in 11 bytes
    ten = b"\x80" * 9 + b"\x00"  # zero, in 10 bytes: not minimal, but accepted
    assert decode_position_untrusted(bytes([bit]) + ten, BASE) == dataclasses.replace(
        BASE, moving=False
    )
    assert "longer than 10" in _malformed(bytes([bit]) + eleven, BASE)
    assert "longer than 10" in _malformed(bytes([bit]) + b"\xff" * 10, BASE)
    assert "longer than 10" in _malformed(bytes([bit]) + b"\xff" * 40, BASE)
    assert "cut short" in _malformed(bytes([bit]) + b"\xff" * 9, BASE)
    if field == "tick":
        cells = bytes.fromhex("0000 0000 00 0014")
        assert "longer than 10" in _malformed(b"\x3f\x01a" + cells + eleven, None)


def test_present_but_unchanged_fields_are_accepted() -> None:
    data = (
        bytes([FULL_MASK | MOVING, 8])
        + b"prontera"
        + b"\x00\x00"  # x and y deltas 0
        + b"\x03\x00\x96"  # dir 3, speed 150
        + b"\x80\x00"  # tick delta 0, not minimal
    )
    assert decode_position_untrusted(data, BASE) == BASE


# --- robustness --------------------------------------------------------------------------


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        position = rng.randrange(len(buffer) + 1)
        if roll < 0.3 and buffer:
            buffer[position % len(buffer)] ^= 1 << rng.randrange(8)
        elif roll < 0.5 and buffer:
            buffer[position % len(buffer)] = rng.randrange(256)
        elif roll < 0.65:
            buffer.insert(position, rng.randrange(256))
        elif roll < 0.8 and buffer:
            del buffer[position % len(buffer)]
        elif roll < 0.9:
            del buffer[position:]
        else:
            buffer += rng.randbytes(rng.randint(1, 12))
    return bytes(buffer)


def test_fuzz_raises_only_bad_packet() -> None:
    rng = random.Random(20240611)
    outcomes = {"decoded": 0, "dropped": 0}
    for round_ in range(4000):
        baseline = _random_state(rng)
        state = _random_state(rng) if rng.random() < 0.3 else _nearby_state(rng, baseline)
        kind = round_ % 4
        if kind == 0:
            data = rng.randbytes(rng.randint(0, 80))
        elif kind == 1:
            data = bytes([rng.randrange(0x80)]) + rng.randbytes(rng.randint(0, 20))
        elif kind == 2:
            data = _mutate(rng, encode_position(state, None))
        else:
            data = _mutate(rng, encode_position(state, baseline))
        for reference in (None, baseline):
            for view in (data, memoryview(data)):
                try:
                    decoded = decode_position_untrusted(view, reference)
                except BadPacket as error:
                    assert error.reason is DropReason.MALFORMED
                    outcomes["dropped"] += 1
                else:
                    # whatever is accepted is a valid state: it can be sent on
                    assert decode_position_untrusted(encode_position(decoded, None), None) == (
                        decoded
                    )
                    outcomes["decoded"] += 1
    # both paths were exercised, not just the early refusals (seed 20240611: 684 and 15316)
    assert outcomes["decoded"] > 300
    assert outcomes["dropped"] > 10000


def test_wrong_baseline_gives_a_wrong_state() -> None:
    # The encoding names no baseline: decoded against another one, a delta yields a
    # plausible but wrong state without any error. The channel layer must make sure
    # both ends use the same (acknowledged) baseline.
    step = dataclasses.replace(BASE, x=151, tick=BASE.tick + 200)
    data = encode_position(step, BASE)
    other = dataclasses.replace(BASE, x=10, y=20, tick=1000)
    decoded = decode_position_untrusted(data, other)
    assert decoded != step
    assert decoded == dataclasses.replace(other, x=11, tick=1200)
    # a full state, by contrast, means the same whatever the receiver holds
    assert decode_position_untrusted(encode_position(step, None), None) == step


# --- what the encoder refuses ------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"map": ""},
        {"map": "a" * 33},
        {"map": "地" * 11},  # 33 bytes
        {"map": "\ud800"},  # a lone surrogate has no UTF-8
        {"x": -1},
        {"x": 1024},
        {"y": -1},
        {"y": 1024},
        {"dir": -1},
        {"dir": 8},
        {"speed": 19},
        {"speed": 1001},
        {"tick": -1},
        {"tick": 2**63},
    ],
)
def test_encoder_refuses_out_of_range_values(change: dict[str, object]) -> None:
    bad = dataclasses.replace(BASE, **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_position(bad, None)
    with pytest.raises(ValueError):
        encode_position(bad, BASE)
    with pytest.raises(ValueError):
        encode_position(BASE, bad)  # the baseline is checked too
