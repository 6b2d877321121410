"""Messages between daemon and coordinator (p2pd.coordinator.messages)."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest

from p2pd.coordinator.messages import (
    Candidates,
    ControlMessage,
    ControlMessageError,
    Introduce,
    PeerEntry,
    Presence,
    Registered,
    Report,
    decode_control_untrusted,
    decode_presence_untrusted,
    encode_control,
    encode_presence,
)

PEER = PeerEntry(key=bytes(range(32)), player_id=150001, daemon_id=7,
                 address="203.0.113.5:7000", x=150, y=183, certificate=bytes(125))
HIDDEN = PeerEntry(key=bytes(32), player_id=2, daemon_id=8, address=None, x=0, y=1023,
                   walking=True)
MESSAGES: list[ControlMessage] = [
    Report("critical", "auth_failures", bytes(32), "peer failed authentication 5 times"),
    Report("info", "started"),
    Registered(7, bytes(125), bytes(32), "[2001:db8::1]:7000", 1_800_000_000),
    Candidates("prontera", (PEER, HIDDEN)),
    Candidates("geffen", ()),
    Introduce(PEER),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: ControlMessage) -> None:
    assert decode_control_untrusted(encode_control(message)) == message


@pytest.mark.parametrize(("body", "why"), [
    ({"k": "presence", "m": "prontera", "x": 1, "y": 1, "n": 3, "r": False, "w": False},
     "unknown message kind"),  # presence travels in PRESENCE frames, not here
    ({"k": "report", "s": "fatal", "c": "x", "d": ""}, "s must"),
    ({"k": "report", "s": "info", "c": "x" * 65, "d": ""}, "c must"),
    ({"k": "report", "s": "info", "c": "x", "d": "", "p": b"short"}, "p must"),
    ({"k": "candidates", "m": "prontera", "p": [{"k": bytes(32)}]}, "missing"),
    ({"k": "candidates", "m": "prontera", "p": [None] * 65}, "at most 64"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 1, "c": b"c", "a": "nowhere",
                              "x": 1, "y": 1, "w": False}}, "host:port"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 0, "c": b"c", "a": None, "x": 1,
                              "y": 1, "w": False}}, "peer i must"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 1, "c": b"c", "a": None, "x": 1,
                              "y": 1, "w": 0}}, "peer w must"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 1, "a": None, "x": 1024, "y": 1,
                              "w": False}}, "peer x must"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 1, "a": None, "x": 1, "y": 1,
                              "w": False, "d": 3}}, "unknown"),
    ({"k": "shout"}, "unknown message kind"),
    ({"x": 1}, "unknown message kind"),
])
def test_bad_messages_are_refused_with_a_reason(body: dict[str, object], why: str) -> None:
    with pytest.raises(ControlMessageError, match=why):
        decode_control_untrusted(msgpack.packb(body, use_bin_type=True))


PRESENCES = [
    (1, Presence("prontera", 150, 180, 13, False)),
    (0xFFFF, Presence("1@tower", 0, 1023, 1, True, True)),
    (0, Presence("x" * 32, 1023, 0, 64, False, True)),
]


@pytest.mark.parametrize(("seq", "presence"), PRESENCES)
def test_every_presence_round_trips(seq: int, presence: Presence) -> None:
    assert decode_presence_untrusted(encode_presence(presence, seq)) == (seq, presence)


def test_a_presence_is_laid_out_byte_by_byte_as_documented() -> None:
    """docs/protocol.md 13A: seq, x, y (u16 big-endian), want, flags, then the map name."""
    body = encode_presence(Presence("prontera", 150, 180, 13, False, True), 0x0102)
    assert body == bytes.fromhex("0102 0096 00b4 0d 02") + b"prontera"


GOOD = encode_presence(Presence("prontera", 1, 1, 3), 7)


@pytest.mark.parametrize(("body", "why"), [
    (GOOD[:8], "a presence of 8 bytes"),
    (GOOD[:8] + b"x" * 33, "a presence of 41 bytes"),
    (GOOD[:2] + b"\x04\x00" + GOOD[4:], "cell \\(1024, 1\\) beyond"),
    (GOOD[:6] + b"\x00" + GOOD[7:], "want must be 1-64, got 0"),
    (GOOD[:6] + b"\x41" + GOOD[7:], "want must be 1-64, got 65"),
    (GOOD[:7] + b"\x04" + GOOD[8:], "unknown presence flags 0x04"),
    (GOOD[:8] + b"Prontera", "does not match"),
    (GOOD[:8] + b"pront\xffra", "does not match"),
])
def test_bad_presences_are_refused_with_a_reason(body: bytes, why: str) -> None:
    with pytest.raises(ControlMessageError, match=why):
        decode_presence_untrusted(body)


def test_hostile_presence_bytes_raise_only_control_message_errors() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        body = bytearray(GOOD)
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        body = body[:rng.randrange(len(body) + 1)] if rng.random() < 0.2 else body
        with contextlib.suppress(ControlMessageError):
            decode_presence_untrusted(bytes(body))


def test_hostile_bytes_raise_only_control_message_errors() -> None:
    rng = random.Random(3)
    samples = [encode_control(m) for m in MESSAGES]
    for _ in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data) + 1)]
        with contextlib.suppress(ControlMessageError):
            decode_control_untrusted(bytes(data))
