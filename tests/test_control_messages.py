"""Messages between daemon and coordinator (p2pd.coordinator.messages)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence

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
    encode_control,
)

PEER = PeerEntry(key=bytes(range(32)), player_id=150001, daemon_id=7, certificate=bytes(125),
                 address="203.0.113.5:7000", distance=3)
HIDDEN = PeerEntry(key=bytes(32), player_id=2, daemon_id=8, certificate=b"c", address=None,
                   distance=14)
MESSAGES: list[ControlMessage] = [
    Presence("prontera", 150, 180, 13, False),
    Presence("1@tower", 0, 1023, 1, True, True),
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


PRESENCE = {"k": "presence", "m": "prontera", "x": 1, "y": 1, "n": 3, "r": False, "w": False}


@pytest.mark.parametrize(("body", "why"), [
    ({**PRESENCE, "m": "Prontera"}, "map name"),
    ({**PRESENCE, "x": 1024}, "x must"),
    ({**PRESENCE, "n": 65}, "n must"),
    ({**PRESENCE, "r": 1}, "must be booleans"),
    ({**PRESENCE, "w": "yes"}, "must be booleans"),
    ({"k": "presence", "m": "prontera", "x": 1, "y": 1, "n": 3}, "missing r, w"),
    ({**PRESENCE, "z": 0}, "unknown"),
    ({"k": "report", "s": "fatal", "c": "x", "d": ""}, "s must"),
    ({"k": "report", "s": "info", "c": "x" * 65, "d": ""}, "c must"),
    ({"k": "report", "s": "info", "c": "x", "d": "", "p": b"short"}, "p must"),
    ({"k": "candidates", "m": "prontera", "p": [{"k": bytes(32)}]}, "missing"),
    ({"k": "candidates", "m": "prontera", "p": [None] * 65}, "at most 64"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 1, "c": b"c", "a": "nowhere",
                              "d": 1, "w": False}}, "host:port"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 0, "c": b"c", "a": None, "d": 1,
                              "w": False}}, "peer i must"),
    ({"k": "introduce", "p": {"k": bytes(32), "u": 1, "i": 1, "c": b"c", "a": None, "d": 1,
                              "w": 0}}, "peer w must"),
    ({"k": "shout"}, "unknown message kind"),
    ({"x": 1}, "unknown message kind"),
])
def test_bad_messages_are_refused_with_a_reason(body: dict[str, object], why: str) -> None:
    with pytest.raises(ControlMessageError, match=why):
        decode_control_untrusted(msgpack.packb(body, use_bin_type=True))


FIRST_SIX = list(PRESENCE.items())[:6]  # all but w


def _map_of_pairs(pairs: Sequence[tuple[object, object]]) -> bytes:
    """A msgpack map of exactly these pairs, duplicates included (packb cannot)."""
    body = b"".join(msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
                    for k, v in pairs)
    return bytes([0x80 | len(pairs)]) + body


@pytest.mark.parametrize(("pairs", "why"), [
    ([*FIRST_SIX, ("x", 2)], "duplicate map key"),  # seven pairs, a key twice
    ([*FIRST_SIX, (b"w", False)], "not a msgpack map"),  # a bytes key
    ([*FIRST_SIX, ("w", {"w": False})], "must be booleans"),  # nested
    ([(k, True if k == "x" else v) for k, v in PRESENCE.items()], "x must"),  # a bool for x
    ([(k, "x" * 33 if k == "m" else v) for k, v in PRESENCE.items()], "map name"),
])
def test_a_presence_of_seven_pairs_that_is_not_one_is_refused_with_a_reason(
        pairs: list[tuple[object, object]], why: str) -> None:
    """Seven-pair presences take a shortcut; anything not exactly a valid one leaves it
    for the general checks, which refuse it as they always did."""
    assert len(pairs) == 7
    with pytest.raises(ControlMessageError, match=why):
        decode_control_untrusted(_map_of_pairs(pairs))


def test_a_presence_decodes_the_same_with_any_key_order() -> None:
    pairs = sorted(PRESENCE.items(), reverse=True)
    assert decode_control_untrusted(_map_of_pairs(pairs)) == Presence("prontera", 1, 1, 3)


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
