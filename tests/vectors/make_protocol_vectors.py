"""Regenerate ``tests/vectors/protocol_vectors.json`` from fixed inputs with p2pd's own code.

    .venv/bin/python tests/vectors/make_protocol_vectors.py             # rewrite the JSON
    .venv/bin/python tests/vectors/make_protocol_vectors.py --check     # compare, write nothing
    .venv/bin/python tests/vectors/make_protocol_vectors.py --markdown  # print the docs section

Every input is a constant of this file, so the output is the same on every run, except that
the compressed bytes depend on the lz4 and zstandard library versions, which the JSON records.
The vectors are described in docs/protocol.md ("Test vectors"), which reproduces them in hex
(the ``--markdown`` output); tests/test_protocol_vectors.py checks the code against the JSON
and the document against the JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lz4
import zstandard
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2pd.channels.frames import (
    ACK_BITS,
    FRAGMENT_FLOOR,
    MAX_FRAGMENTS,
    MAX_KEY,
    Channel,
    seq16_newer,
)
from p2pd.channels.link import ACK_RESERVE, MAX_EFFECTS, ChannelLink
from p2pd.channels.position_codec import PositionState, encode_position
from p2pd.channels.positions import HISTORY, MAX_BASELINE_AGE
from p2pd.channels.reliable import (
    FAST_RETRANSMIT_ACKS,
    MAX_KEYS,
    MAX_PARTIALS,
    PARTIAL_TIMEOUT,
    WINDOW,
    ReliableSender,
)
from p2pd.crypto.handshake import (
    CookieJar,
    build_cookie_reply,
    cookie_key,
    encode_request_payload,
    encode_response_payload,
    frame_request,
    frame_response,
    mac1_key,
    request_prologue,
)
from p2pd.crypto.noise import (
    InitiatorHandshake,
    ResponderHandshake,
    SymmetricState,
    dh,
    noise_nonce,
    public_bytes,
)
from p2pd.crypto.transport import OVERHEAD, Keypair
from p2pd.session.config import SessionConfig
from p2pd.wire.compression import PayloadCompressor
from p2pd.wire.frames import FRAME_HEADER, encode_frames, padding_for, padding_frame
from p2pd.wire.header import HEADER_SIZE, MAX_DATAGRAM, encode_header
from p2pd.wire.types import Flag, PacketType

OUTPUT = Path(__file__).with_name("protocol_vectors.json")

# -- fixed inputs --------------------------------------------------------------

TRANSPORT_KEY = bytes(range(32))  # 000102...1f
TRANSPORT_RECEIVER_INDEX = 0x0A0B0C0D

INITIATOR_STATIC = bytes([0xA1]) * 32
RESPONDER_STATIC = bytes([0xB2]) * 32
INITIATOR_EPHEMERAL = bytes([0xC3]) * 32
RESPONDER_EPHEMERAL = bytes([0xD4]) * 32
INITIATOR_INDEX = 0x11223344  # the initiator's sender index (in the request)
RESPONDER_INDEX = 0x55667788  # the responder's sender index (in the response payload)
INITIATOR_CERTIFICATE = b"example certificate"
RESPONDER_CERTIFICATE: bytes | None = None
# Endpoint(epoch=1_700_000_000.0) at now=0.0 sends this timestamp (ns since the Unix epoch).
EPOCH = 1_700_000_000.0
TIMESTAMP = 1_700_000_000_000_000_000

COOKIE_SECRET = bytes([0xE5]) * 32
COOKIE_ADDRESS = ("192.0.2.1", 7000)
COOKIE_NONCE = bytes(range(0xF0, 0xFC))  # 12 bytes

EFFECT_BODY = bytes(range(40))  # a 40-byte VISUAL_EFFECT body (effects have no channel header)
PAD_STEP = 32
COMPRESSION_THRESHOLD = 100  # SessionConfig.compression_threshold's default
# Payload sizes of the padding table (encryption_level=high), all VISUAL_EFFECT bodies.
PADDING_TABLE_SIZES = [0, 1, 25, 28, 29, 40, 60, 92, 95, 96]

# The first application data under the V5 keys: a position (a full state: nothing is
# acknowledged yet) and a chat line, both from the initiator.
FIRST_POSITION = PositionState("prontera", 150, 180, 4, 150, True, 1_732_480_000_000)
FIRST_CHAT = b"hello, peer"

# Position coding (V8). Directions count counter-clockwise from 0 north: 4 is south,
# 6 east. The player walks south, turns east after one cell, then stops one cell on.
WALK = [
    FIRST_POSITION,
    PositionState("prontera", 150, 179, 6, 150, True, 1_732_480_000_150),
    PositionState("prontera", 151, 179, 6, 150, False, 1_732_480_000_300),
]
# (name, state, baseline; None: a full state)
CODEC_CASES: list[tuple[str, PositionState, PositionState | None]] = [
    ("full state", FIRST_POSITION, None),
    ("full state, tick 0, corner cell", PositionState("prt_fild08", 1023, 0, 7, 20, False, 0),
     None),
    ("walking south: one cell, 150 ms later",
     PositionState("prontera", 150, 179, 4, 150, True, 1_732_480_000_150), FIRST_POSITION),
    ("nothing changed", FIRST_POSITION, FIRST_POSITION),
    ("stopped in place (only moving changes)",
     PositionState("prontera", 150, 180, 4, 150, False, 1_732_480_000_000), FIRST_POSITION),
    ("turned and slowed down", PositionState("prontera", 150, 180, 2, 200, True,
                                             1_732_480_000_000), FIRST_POSITION),
    ("warped to another map",
     PositionState("geffen", 120, 60, 0, 150, False, 1_732_480_005_000), FIRST_POSITION),
]
_FULL = encode_position(FIRST_POSITION, None)
# (name, baseline or None, bytes): updates a receiver refuses as ``malformed``
CODEC_REJECTS: list[tuple[str, PositionState | None, bytes]] = [
    ("empty", FIRST_POSITION, b""),
    ("reserved mask bit 0x80 set", FIRST_POSITION, b"\xc0"),
    ("full state without TICK", None, bytes([0x1F]) + _FULL[1:-6]),
    ("full state cut short in its tick", None, _FULL[:-1]),
    ("map length 0", None, b"\x3f\x00" + _FULL[10:]),
    ("a byte after the last field", FIRST_POSITION, b"\x40\x00"),
    ("x varint of 11 bytes", FIRST_POSITION, b"\x42" + b"\x80" * 10 + b"\x00"),
    ("x outside 0..1023 (150 + 900)", FIRST_POSITION, b"\x42\x88\x0e"),
    ("dir 8", FIRST_POSITION, b"\x48\x08"),
    ("speed 19", FIRST_POSITION, b"\x50\x00\x13"),
]
# 16-bit sequence numbers: (a, b, is a newer than b)
SEQ16_CASES = [(1, 0), (0, 1), (0, 0xFFFF), (0xFFFF, 0), (0x7FFF, 0), (0x8000, 0), (0, 0x8000),
               (5, 5)]

# Reliable channels (V7).
CHAT_LINES = [b"hello, peer", b"line 2", b"line 3", b"line 4", b"line 5"]
CHAT_ARRIVALS = [[0, 2, 4], [2], [1, 3]]  # seq 0..4 arrive in these bursts, 2 twice


def latest_value_key(name: str) -> bytes:
    """The key the daemon gives an ``environment`` (``environment\\0<kind>\\0<key>``) or
    ``legend`` (``legend\\0<ai_entity_id>\\0<kind>``) event: BLAKE2b, 16 bytes."""
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


WEATHER = "environment\0weather\0prontera"
TIME_OF_DAY = "environment\0time\0prontera"
# (key name, payload), sent in this order; the third supersedes the first
ENVIRONMENT_VALUES = [(WEATHER, b"rain"), (TIME_OF_DAY, b"night"), (WEATHER, b"clear")]
ENVIRONMENT_ARRIVALS = [[1], [2], [0]]  # the first value arrives last, after its successor

FRAGMENT_PART_SIZE = 8  # far below a session's (1083 bytes), to keep the vector short
FRAGMENTED_CHAT = b"a message in 3 parts"
FRAGMENTED_ARRIVALS = [1, 2, 0]
FRAGMENTED_ENVIRONMENT = (WEATHER, b"thunderstorm")
ENVIRONMENT_PART_SIZE = 24  # a whole "night" value fits one part, "thunderstorm" takes two

LZ4_INPUT = b"".join(f"player{i:03d} x={i * 7 % 100} y={i * 13 % 100};".encode() for i in range(12))
ZSTD_INPUT = b"".join(
    f"npc{i:03d} says: the weather in zone {i % 7} is {('fine', 'rainy', 'foggy')[i % 3]}.\n"
    .encode()
    for i in range(40)
)
INCOMPRESSIBLE_INPUT = bytes(range(150))

_SEALED_FLAGS = int(Flag.ENCRYPTED | Flag.BATCHED)


def _x25519(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _keypair(key: bytes, remote_index: int, counter: int = 0) -> Keypair:
    keypair = Keypair(send_key=key, receive_key=key, local_index=0, remote_index=remote_index,
                      initiator=True, created=0.0)
    keypair.send_counter = counter
    return keypair


def padded_frame_list(packet_type: int, body: bytes) -> bytes:
    """The plaintext of a SEALED packet at encryption_level=high for a frame list below
    the compression threshold: one frame, then padding to a multiple of PAD_STEP bytes,
    the padding frame one step longer when the gap is below a frame header (4 bytes)."""
    frames = encode_frames([(packet_type, body)])
    return frames + padding_for(len(frames), PAD_STEP)


class _Received:
    """What a receiving ChannelLink delivered: (type, payload) and positions (its
    LinkOwner, as a Session is)."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.positions: list[PositionState] = []

    def deliver(self, packet_type: int, payload: bytes) -> None:
        self.messages.append((packet_type, payload))

    def deliver_position(self, state: PositionState) -> None:
        self.positions.append(state)

    def rto(self) -> float:
        return SessionConfig().rto_initial

    def rtt_sample(self, sample: float) -> None:
        pass


def _link(received: _Received | None = None) -> ChannelLink:
    """A ChannelLink as a Session with the default SessionConfig makes it."""
    config = SessionConfig()
    sink = received if received is not None else _Received()
    return ChannelLink(
        room=config.batch_budget - OVERHEAD,
        max_message=config.max_message_size,
        max_queued_bytes=config.max_queued_bytes,
        effect_max_wait=config.effect_max_wait,
        rto_max=config.rto_max,
        owner=sink,
    )


def _split(frame: bytes) -> tuple[int, bytes]:
    """(type, body) of one frame."""
    packet_type, length = FRAME_HEADER.unpack_from(frame)
    assert len(frame) == FRAME_HEADER.size + length
    return packet_type, frame[FRAME_HEADER.size:]


def _feed(link: ChannelLink, frame: bytes, now: float) -> None:
    packet_type, body = _split(frame)
    assert link.on_frame(packet_type, body, now)


def _one(frames: list[bytes]) -> bytes:
    assert len(frames) == 1, frames
    return frames[0]


def _state(state: PositionState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"map": state.map, "x": state.x, "y": state.y, "dir": state.dir,
            "speed": state.speed, "moving": state.moving, "tick": state.tick}


# -- the vectors -------------------------------------------------------------------


def header_vectors() -> list[dict[str, Any]]:
    cases = [
        ("SEALED, ENCRYPTED|BATCHED", PacketType.SEALED, Flag.ENCRYPTED | Flag.BATCHED, 60),
        ("SEALED, ENCRYPTED|BATCHED|LZ4", PacketType.SEALED,
         Flag.ENCRYPTED | Flag.BATCHED | Flag.LZ4, 300),
        ("SEALED, ENCRYPTED|BATCHED|ZSTD", PacketType.SEALED,
         Flag.ENCRYPTED | Flag.BATCHED | Flag.ZSTD, 1000),
        ("HANDSHAKE_REQUEST, no flags", PacketType.HANDSHAKE_REQUEST, Flag(0), 161),
        ("COOKIE_REPLY, no flags", PacketType.COOKIE_REPLY, Flag(0), 48),
    ]
    return [
        {"name": name, "type": int(t), "flags": int(f), "payload_length": n,
         "header": encode_header(int(f), int(t), n).hex()}
        for name, t, f, n in cases
    ]


def _raw_header(magic: int = 0x50325032, version: int = 1, flags: int = 1,
                packet_type: int = 5, length: int | None = None, payload: bytes = b"abcd",
                ) -> bytes:
    if length is None:
        length = len(payload)
    return (magic.to_bytes(4, "big") + version.to_bytes(2, "big") + flags.to_bytes(2, "big")
            + packet_type.to_bytes(2, "big") + length.to_bytes(4, "big") + payload)


def header_reject_vectors() -> list[dict[str, Any]]:
    oversize_payload = bytes(MAX_DATAGRAM + 1 - HEADER_SIZE)
    cases = [
        ("13 bytes: shorter than a header", _raw_header()[:13], "truncated"),
        ("1473 bytes: above MAX_DATAGRAM", _raw_header(payload=oversize_payload), "oversize"),
        ("magic 0x50325033", _raw_header(magic=0x50325033), "bad_magic"),
        ("bad magic and bad version: magic is checked first",
         _raw_header(magic=0, version=2), "bad_magic"),
        ("version 2", _raw_header(version=2), "bad_version"),
        ("type 0x0012 PADDING outside a frame list", _raw_header(packet_type=0x12), "unknown_type"),
        ("type 0x0013 ACK: a frame type only", _raw_header(packet_type=0x13), "unknown_type"),
        ("type 0x0016 (reserved)", _raw_header(packet_type=0x16), "unknown_type"),
        ("unknown type and bad flags: the type is checked first",
         _raw_header(packet_type=0x40, flags=0x8000), "unknown_type"),
        ("CHAT_MESSAGE without ENCRYPTED", _raw_header(flags=0), "bad_flags"),
        ("CHAT_MESSAGE with LZ4 and ZSTD", _raw_header(flags=0x0007), "bad_flags"),
        ("CHAT_MESSAGE with BATCHED", _raw_header(flags=0x0009), "bad_flags"),
        ("CHAT_MESSAGE with 0x0010 FRAGMENT (reserved)", _raw_header(flags=0x0011), "bad_flags"),
        ("CHAT_MESSAGE with 0x0020 RELAYED (RELAY only)", _raw_header(flags=0x0021), "bad_flags"),
        ("SEALED without BATCHED", _raw_header(packet_type=0x10, flags=0x0001), "bad_flags"),
        ("HANDSHAKE_REQUEST with ENCRYPTED", _raw_header(packet_type=1, flags=1), "bad_flags"),
        ("bad flags and bad length: flags are checked first",
         _raw_header(flags=0, length=9), "bad_flags"),
        ("length 5, 4 bytes present", _raw_header(length=5), "truncated"),
        ("length 3, 4 bytes present", _raw_header(length=3), "length_mismatch"),
    ]
    return [{"name": name, "datagram": data.hex(), "reason": reason}
            for name, data, reason in cases]


def transport_vectors() -> list[dict[str, Any]]:
    chat = encode_frames([(PacketType.CHAT_MESSAGE, (0).to_bytes(4, "big") + FIRST_CHAT)])
    cases: list[tuple[str, int, int, int, bytes]] = [
        ("SEALED chat line (seq 0), counter 0", 0, _SEALED_FLAGS, PacketType.SEALED, chat),
        ("SEALED chat line (seq 0), counter 1", 1, _SEALED_FLAGS, PacketType.SEALED, chat),
        ("SEALED VISUAL_EFFECT, counter 2^40+5", 2**40 + 5, _SEALED_FLAGS, PacketType.SEALED,
         encode_frames([(PacketType.VISUAL_EFFECT, bytes(range(12)))])),
        ("SEALED PING, padded (level high), counter 7", 7, _SEALED_FLAGS, PacketType.SEALED,
         padded_frame_list(PacketType.PING, (1).to_bytes(4, "big"))),
    ]
    out = []
    for name, counter, flags, packet_type, plaintext in cases:
        datagram = _keypair(TRANSPORT_KEY, TRANSPORT_RECEIVER_INDEX, counter).seal(
            flags, packet_type, plaintext)
        out.append({
            "name": name,
            "key": TRANSPORT_KEY.hex(),
            "receiver_index": TRANSPORT_RECEIVER_INDEX,
            "counter": counter,
            "flags": flags,
            "type": int(packet_type),
            "plaintext": plaintext.hex(),
            "nonce": noise_nonce(counter).hex(),
            "aad": datagram[:26].hex(),
            "datagram": datagram.hex(),
        })
    return out


def frame_list_vectors() -> dict[str, Any]:
    high = padded_frame_list(PacketType.VISUAL_EFFECT, EFFECT_BODY)
    table: list[dict[str, int | None]] = []
    for size in PADDING_TABLE_SIZES:
        body = bytes(size)
        frames = encode_frames([(PacketType.VISUAL_EFFECT, body)])
        if len(frames) < COMPRESSION_THRESHOLD:
            padded = padded_frame_list(PacketType.VISUAL_EFFECT, body)
            table.append({"payload_length": size, "frame_list_length": len(padded),
                          "padding_frame_length": len(padded) - len(frames)})
        else:
            table.append({"payload_length": size, "frame_list_length": len(frames),
                          "padding_frame_length": None})
    multi_frames = [(PacketType.CHAT_MESSAGE, (7).to_bytes(4, "big") + b"hi"),
                    (PacketType.VISUAL_EFFECT, bytes(range(8)))]
    multi = encode_frames(multi_frames) + padding_frame(6)
    rejects = [
        ("frame header cut short", "0003", "malformed"),
        ("body cut short", "000300050102", "malformed"),
        ("SEALED is not a frame type", "001000020102", "unknown_type"),
        ("HANDSHAKE_REQUEST is not a frame type", "00010000", "unknown_type"),
        ("only padding", "0012000400000000", "malformed"),
        ("empty frame list", "", "malformed"),
    ]
    return {
        "high_visual_effect": {
            "type": int(PacketType.VISUAL_EFFECT),
            "body": EFFECT_BODY.hex(),
            "frame_list": high.hex(),
        },
        "padding_table": table,
        "multi_frame": {
            "frame_list": multi.hex(),
            "frames": [[int(t), body.hex()] for t, body in multi_frames],
        },
        "rejects": [{"name": n, "frame_list": d, "reason": r} for n, d, r in rejects],
    }


def _reliable_bursts(sender_frames: list[bytes], arrivals: list[list[int]],
                     received: _Received, receiver: ChannelLink) -> list[dict[str, Any]]:
    """Feed the frames (by index) in bursts; after each, the receiver's ACK."""
    bursts = []
    for seqs in arrivals:
        for seq in seqs:
            _feed(receiver, sender_frames[seq], 0.0)
        ack = _one(receiver.build(0.0, data=False))
        _, body = _split(ack)
        bursts.append({"seqs": seqs, "ack": ack.hex(),
                       "next": int.from_bytes(body[1:5], "big"),
                       "bits": int.from_bytes(body[5:13], "big"),
                       "delivered": [payload.hex() for _, payload in received.messages]})
    return bursts


def channel_vectors() -> dict[str, Any]:
    # positions: seq 0 in full, acknowledged; seq 1 and 2 against it; 2 overtakes 1
    sender, received = _link(), _Received()
    receiver = _link(received)
    sender.queue_position(WALK[0])
    frames = [_one(sender.build(0.0, data=True))]
    _feed(receiver, frames[0], 0.0)
    position_acks = [_one(receiver.build(0.0, data=False))]
    _feed(sender, position_acks[0], 0.0)
    for state in WALK[1:]:
        sender.queue_position(state)
        frames.append(_one(sender.build(0.0, data=True)))
    arrivals = [2, 1]
    for index in arrivals:
        _feed(receiver, frames[index], 0.0)
    position_acks.append(_one(receiver.build(0.0, data=False)))
    updates = []
    for state, frame in zip(WALK, frames, strict=True):
        _, body = _split(frame)
        updates.append({"state": _state(state), "seq": int.from_bytes(body[0:2], "big"),
                        "baseline": int.from_bytes(body[2:4], "big"), "coded": body[4:].hex(),
                        "frame": frame.hex()})
    positions = {
        "updates": updates,
        "position_acks": [{"seq": int.from_bytes(_split(f)[1], "big"), "frame": f.hex()}
                          for f in position_acks],
        "arrivals": [0, *arrivals],
        "delivered": [WALK.index(state) for state in received.positions],
    }

    # an ordered channel: five chat lines, seq 1 and 3 late, seq 2 twice
    sender, received = _link(), _Received()
    for line in CHAT_LINES:
        sender.queue(PacketType.CHAT_MESSAGE, line, None, 0.0)
    chat_frames = sender.build(0.0, data=True)
    assert len(chat_frames) == len(CHAT_LINES)
    ordered = {
        "channel": int(Channel.CHAT),
        "type": int(PacketType.CHAT_MESSAGE),
        "messages": [line.hex() for line in CHAT_LINES],
        "frames": [f.hex() for f in chat_frames],
        "bursts": _reliable_bursts(chat_frames, CHAT_ARRIVALS, received, _link(received)),
    }

    # the latest-value channel: a newer weather value supersedes one in flight
    sender, received = _link(), _Received()
    values = []
    value_frames = []
    for name, payload in ENVIRONMENT_VALUES:
        key = latest_value_key(name)
        sender.queue(PacketType.ENVIRONMENTAL, payload, key, 0.0)
        frame = _one(sender.build(0.0, data=True))
        _, body = _split(frame)
        values.append({"key_name": name, "key": key.hex(), "payload": payload.hex(),
                       "seq": int.from_bytes(body[0:4], "big"),
                       "floor": int.from_bytes(body[4:8], "big"), "frame": frame.hex()})
        value_frames.append(frame)
    latest_value = {
        "channel": int(Channel.ENVIRONMENT),
        "type": int(PacketType.ENVIRONMENTAL),
        "values": values,
        "bursts": _reliable_bursts(value_frames, ENVIRONMENT_ARRIVALS, received,
                                   _link(received)),
    }

    # fragments, with parts far smaller than a session's
    config = SessionConfig()

    def small_sender(channel: Channel, part_size: int) -> ReliableSender:
        return ReliableSender(channel, part_size=part_size,
                              max_queued_bytes=config.max_queued_bytes,
                              rto=lambda: config.rto_initial, rto_max=config.rto_max)

    chat_sender = small_sender(Channel.CHAT, FRAGMENT_PART_SIZE)
    chat_sender.queue(FRAGMENTED_CHAT)
    parts: list[bytes] = []
    chat_sender.take_new(0.0, 1 << 16, parts)
    received = _Received()
    receiver = _link(received)
    for index in FRAGMENTED_ARRIVALS:
        _feed(receiver, parts[index], 0.0)
    fragmented_chat = {
        "part_size": FRAGMENT_PART_SIZE,
        "message": FRAGMENTED_CHAT.hex(),
        "frames": [f.hex() for f in parts],
        "arrivals": FRAGMENTED_ARRIVALS,
        "delivered": [payload.hex() for _, payload in received.messages],
        "ack": _one(receiver.build(0.0, data=False)).hex(),
    }

    environment_sender = small_sender(Channel.ENVIRONMENT, ENVIRONMENT_PART_SIZE)
    first_name, first_payload = ENVIRONMENT_VALUES[1]
    environment_sender.queue(first_payload, latest_value_key(first_name))
    before: list[bytes] = []
    environment_sender.take_new(0.0, 1 << 16, before)
    environment_sender.on_ack(1, 0, 0.0)  # the peer has seq 0
    name, payload = FRAGMENTED_ENVIRONMENT
    environment_sender.queue(payload, latest_value_key(name))
    env_parts: list[bytes] = []
    environment_sender.take_new(0.0, 1 << 16, env_parts)
    received = _Received()
    receiver = _link(received)
    for frame in before + env_parts:
        _feed(receiver, frame, 0.0)
    fragmented_environment = {
        "part_size": ENVIRONMENT_PART_SIZE,
        "before": _one(before).hex(),
        "key_name": name,
        "key": latest_value_key(name).hex(),
        "payload": payload.hex(),
        "frames": [f.hex() for f in env_parts],
        "delivered": [p.hex() for _, p in received.messages],
        "ack": _one(receiver.build(0.0, data=False)).hex(),
    }

    room = config.batch_budget - OVERHEAD
    return {
        "positions": positions,
        "seq16_newer": [[a, b, seq16_newer(a, b)] for a, b in SEQ16_CASES],
        "ordered": ordered,
        "latest_value": latest_value,
        "fragments": {"chat": fragmented_chat, "environment": fragmented_environment},
        "limits": {
            "batch_budget": config.batch_budget,
            "frame_list_room": room,
            "ack_reserve": ACK_RESERVE,
            "max_effect_payload": room - ACK_RESERVE - FRAME_HEADER.size,
            "part_size": room - ACK_RESERVE - FRAME_HEADER.size - FRAGMENT_FLOOR.size,
            "max_message_size": config.max_message_size,
            "max_queued_bytes": config.max_queued_bytes,
            "max_effects_waiting": MAX_EFFECTS,
            "effect_max_wait": config.effect_max_wait,
            "window": WINDOW,
            "ack_bits": ACK_BITS,
            "max_fragments": MAX_FRAGMENTS,
            "max_key": MAX_KEY,
            "max_keys": MAX_KEYS,
            "max_partials": MAX_PARTIALS,
            "partial_timeout": PARTIAL_TIMEOUT,
            "fast_retransmit_acks": FAST_RETRANSMIT_ACKS,
            "position_history": HISTORY,
            "max_baseline_age": MAX_BASELINE_AGE,
            "ack_delay": config.ack_delay,
            "position_ack_delay": config.position_ack_delay,
            "rto_initial": config.rto_initial,
            "rto_min": config.rto_min,
            "rto_max": config.rto_max,
        },
    }


def position_codec_vectors() -> dict[str, Any]:
    return {
        "cases": [{"name": name, "state": _state(state), "baseline": _state(baseline),
                   "coded": encode_position(state, baseline).hex()}
                  for name, state, baseline in CODEC_CASES],
        "rejects": [{"name": name, "baseline": _state(baseline), "coded": data.hex(),
                     "reason": "malformed"}
                    for name, baseline, data in CODEC_REJECTS],
    }


def compression_vectors() -> dict[str, Any]:
    compressor = PayloadCompressor()
    cases: list[dict[str, Any]] = []
    for name, data in (("LZ4", LZ4_INPUT), ("Zstandard", ZSTD_INPUT),
                       ("incompressible, sent as it is", INCOMPRESSIBLE_INPUT)):
        flag, out = compressor.compress(data)
        cases.append({"name": name, "input": data.hex(), "flag": int(flag), "output": out.hex()})
    lz4_declared_more = (len(LZ4_INPUT) + 1).to_bytes(4, "big") + bytes.fromhex(
        cases[0]["output"])[4:]
    rejects = [
        ("LZ4, declared size 0", 2, "00000000" + "00", "bad_compression"),
        ("LZ4, declared size 65537 (above max_message_size)", 2, "00010001" + "00",
         "bad_compression"),
        ("LZ4, only the size prefix", 2, "00000010", "bad_compression"),
        ("LZ4, block decodes to fewer bytes than declared", 2, lz4_declared_more.hex(),
         "bad_compression"),
        ("Zstandard, descriptor announces a Frame_Content_Size", 4,
         "00000004" + "40" + "00" + "0100", "bad_compression"),
    ]
    return {
        "libraries": {
            "lz4": lz4.__version__,
            "liblz4": lz4.library_version_string(),
            "zstandard": zstandard.__version__,
            "libzstd": ".".join(str(part) for part in zstandard.ZSTD_VERSION),
        },
        "threshold": COMPRESSION_THRESHOLD,
        "zstd_threshold": 1000,
        "max_size": 65536,
        "cases": cases,
        "rejects": [{"name": n, "flag": f, "payload": p, "reason": r}
                    for n, f, p, r in rejects],
    }


def _noise_trace(prologue: bytes) -> list[dict[str, str]]:
    """The IK handshake step by step with SymmetricState, for debugging a second
    implementation: ck, h and the cipher key k after each token."""
    i_s, r_s = _x25519(INITIATOR_STATIC), _x25519(RESPONDER_STATIC)
    i_e, r_e = _x25519(INITIATOR_EPHEMERAL), _x25519(RESPONDER_EPHEMERAL)
    state = SymmetricState()
    steps: list[dict[str, str]] = []

    def record(step: str) -> None:
        key = state.cs.key
        steps.append({"step": step, "ck": state.ck.hex(), "h": state.h.hex(),
                      "k": key.hex() if key is not None else ""})

    record("InitializeSymmetric(protocol name)")
    state.mix_hash(prologue)
    record("MixHash(prologue)")
    state.mix_hash(public_bytes(r_s))
    record("MixHash(s_r: responder static public)  <- s")
    state.mix_hash(public_bytes(i_e))
    record("MixHash(e_i: initiator ephemeral public)  -> e")
    state.mix_key(dh(i_e, public_bytes(r_s)))
    record("MixKey(DH(e_i, s_r))  es")
    state.encrypt_and_hash(public_bytes(i_s))
    record("EncryptAndHash(s_i: initiator static public)  s")
    state.mix_key(dh(i_s, public_bytes(r_s)))
    record("MixKey(DH(s_i, s_r))  ss")
    state.encrypt_and_hash(encode_request_payload(TIMESTAMP, INITIATOR_CERTIFICATE, fresh=True))
    record("EncryptAndHash(request payload)")
    state.mix_hash(public_bytes(r_e))
    record("MixHash(e_r: responder ephemeral public)  <- e")
    state.mix_key(dh(i_e, public_bytes(r_e)))
    record("MixKey(DH(e_i, e_r))  ee")
    state.mix_key(dh(i_s, public_bytes(r_e)))
    record("MixKey(DH(s_i, e_r))  se")
    state.encrypt_and_hash(
        encode_response_payload(RESPONDER_INDEX, RESPONDER_CERTIFICATE, fresh=True))
    record("EncryptAndHash(response payload)")
    return steps


def handshake_vectors() -> dict[str, Any]:
    i_s, r_s = _x25519(INITIATOR_STATIC), _x25519(RESPONDER_STATIC)
    i_e, r_e = _x25519(INITIATOR_EPHEMERAL), _x25519(RESPONDER_EPHEMERAL)
    i_pub, r_pub = public_bytes(i_s), public_bytes(r_s)
    prologue = request_prologue(INITIATOR_INDEX)
    request_payload = encode_request_payload(TIMESTAMP, INITIATOR_CERTIFICATE, fresh=True)
    response_payload = encode_response_payload(RESPONDER_INDEX, RESPONDER_CERTIFICATE, fresh=True)

    initiator = InitiatorHandshake(i_s, r_pub, prologue, ephemeral_private=i_e)
    message1 = initiator.write_request(request_payload)
    request = frame_request(INITIATOR_INDEX, message1, mac1_key(r_pub))
    responder = ResponderHandshake.read_request_untrusted(r_s, message1, prologue)
    message2, responder_keys = responder.write_response(response_payload, ephemeral_private=r_e)
    response = frame_response(INITIATOR_INDEX, message2, mac1_key(i_pub))
    payload, keys = initiator.read_response_untrusted(message2)
    assert payload == response_payload
    assert keys == responder_keys

    trace = _noise_trace(prologue)
    assert trace[-1]["h"] == keys.handshake_hash.hex()

    # What the two endpoints send first under the new keys (Session's behaviour, with
    # coalesce_delay=0): the initiator PINGs (id 1) at once, the responder answers with a
    # PONG; then the initiator's application sends its position and a chat line, and the
    # responder acknowledges both in one datagram ack_delay (10 ms) later.
    ping = (1).to_bytes(4, "big")
    initiator_link, responder_link = _link(), _link()
    initiator_link.queue_position(FIRST_POSITION)
    position_frames = initiator_link.build(0.0, data=True)
    initiator_link.queue(PacketType.CHAT_MESSAGE, FIRST_CHAT, None, 0.0)
    chat_frames = initiator_link.build(0.0, data=True)
    for frame in position_frames + chat_frames:
        _feed(responder_link, frame, 0.0)
    ack_at = SessionConfig().ack_delay
    ack_frames = responder_link.build(ack_at, data=False)
    exchange = [("initiator", 0.0, [FRAME_HEADER.pack(PacketType.PING, 4) + ping]),
                ("responder", 0.0, [FRAME_HEADER.pack(PacketType.PONG, 4) + ping]),
                ("initiator", 0.0, position_frames),
                ("initiator", 0.0, chat_frames),
                ("responder", ack_at, ack_frames)]
    after: dict[str, list[dict[str, Any]]] = {}
    for level in ("high", "low"):
        i_kp = _keypair(keys.initiator_to_responder, RESPONDER_INDEX)
        r_kp = _keypair(keys.responder_to_initiator, INITIATOR_INDEX)
        datagrams = []
        for sender, at, frames in exchange:
            keypair = i_kp if sender == "initiator" else r_kp
            counter = keypair.send_counter
            frame_list = b"".join(frames)
            if level == "high":
                frame_list += padding_for(len(frame_list), PAD_STEP)
            datagram = keypair.seal(_SEALED_FLAGS, PacketType.SEALED, frame_list)
            datagrams.append({"from": sender, "at": at, "counter": counter,
                              "frames": [[t, body.hex()] for t, body in map(_split, frames)],
                              "frame_list": frame_list.hex(), "datagram": datagram.hex()})
        after[level] = datagrams

    return {
        "inputs": {
            "initiator_static_private": INITIATOR_STATIC.hex(),
            "responder_static_private": RESPONDER_STATIC.hex(),
            "initiator_ephemeral_private": INITIATOR_EPHEMERAL.hex(),
            "responder_ephemeral_private": RESPONDER_EPHEMERAL.hex(),
            "initiator_index": INITIATOR_INDEX,
            "responder_index": RESPONDER_INDEX,
            "timestamp": TIMESTAMP,
            "epoch": EPOCH,
            "initiator_certificate": INITIATOR_CERTIFICATE.hex(),
            "responder_certificate": None,
        },
        "derived": {
            "initiator_static_public": i_pub.hex(),
            "responder_static_public": r_pub.hex(),
            "initiator_ephemeral_public": public_bytes(i_e).hex(),
            "responder_ephemeral_public": public_bytes(r_e).hex(),
            "prologue": prologue.hex(),
            "request_payload": request_payload.hex(),
            "response_payload": response_payload.hex(),
            "dh_es": dh(i_e, r_pub).hex(),
            "dh_ss": dh(i_s, r_pub).hex(),
            "dh_ee": dh(i_e, public_bytes(r_e)).hex(),
            "dh_se": dh(i_s, public_bytes(r_e)).hex(),
            "responder_mac1_key": mac1_key(r_pub).hex(),
            "initiator_mac1_key": mac1_key(i_pub).hex(),
            "noise_message1": message1.hex(),
            "noise_message2": message2.hex(),
        },
        "trace": trace,
        "request": request.hex(),
        "response": response.hex(),
        "keys": {
            "initiator_to_responder": keys.initiator_to_responder.hex(),
            "responder_to_initiator": keys.responder_to_initiator.hex(),
            "handshake_hash": keys.handshake_hash.hex(),
        },
        "application": {"position": _state(FIRST_POSITION), "chat": FIRST_CHAT.hex(),
                        "ack_delay": ack_at},
        "after": after,
    }


def cookie_vectors(handshake: dict[str, Any]) -> dict[str, Any]:
    r_pub = bytes.fromhex(handshake["derived"]["responder_static_public"])
    message1 = bytes.fromhex(handshake["derived"]["noise_message1"])
    request = bytes.fromhex(handshake["request"])
    cookie = CookieJar(COOKIE_SECRET).cookie_for(COOKIE_ADDRESS)
    with_mac2 = frame_request(INITIATOR_INDEX, message1, mac1_key(r_pub), cookie)
    request_mac1 = request[-32:-16]
    reply = build_cookie_reply(INITIATOR_INDEX, cookie, request_mac1, r_pub, COOKIE_NONCE)
    return {
        "secret": COOKIE_SECRET.hex(),
        "address": [COOKIE_ADDRESS[0], COOKIE_ADDRESS[1]],
        "cookie": cookie.hex(),
        "request_with_mac2": with_mac2.hex(),
        "mac2": with_mac2[-16:].hex(),
        "cookie_key": cookie_key(r_pub, request_mac1).hex(),
        "nonce": COOKIE_NONCE.hex(),
        "request_mac1": request_mac1.hex(),
        "cookie_reply": reply.hex(),
    }


def build() -> dict[str, Any]:
    handshake = handshake_vectors()
    return {
        "about": (
            "p2pd wire protocol v1 test vectors, generated by "
            "tests/vectors/make_protocol_vectors.py with p2pd's own code and described in "
            "docs/protocol.md. Byte strings are lowercase hex; integers are decimal."
        ),
        "header": header_vectors(),
        "header_rejects": header_reject_vectors(),
        "transport": transport_vectors(),
        "frame_lists": frame_list_vectors(),
        "compression": compression_vectors(),
        "handshake": handshake,
        "cookies": cookie_vectors(handshake),
        "channels": channel_vectors(),
        "position_codec": position_codec_vectors(),
    }


def dumps(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2) + "\n"


# -- markdown for docs/protocol.md -----------------------------------------------------


def hexdump(data: bytes) -> str:
    """16 bytes a line, offset first: the format docs/protocol.md uses for byte strings."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        lines.append(f"{at:04x}  {left}  {right}".rstrip())
    return "\n".join(lines)


def _block(data: bytes) -> str:
    return "```\n" + hexdump(data) + "\n```\n"


def _flags_name(flags: int) -> str:
    return " + ".join(f.name or "" for f in Flag if flags & f) or "none"


def _frame_name(packet_type: int, body: bytes) -> str:
    """A frame as the document names it: its type and its channel header."""
    name = PacketType(packet_type).name
    if packet_type == PacketType.POSITION_UPDATE:
        return f"{name} seq {int.from_bytes(body[0:2], 'big')}"
    if packet_type in (PacketType.CHAT_MESSAGE, PacketType.AI_INTERACTION):
        return f"{name} seq {int.from_bytes(body[0:4], 'big')}"
    if packet_type == PacketType.ACK:
        return (f"ACK (channel {body[0]}, next {int.from_bytes(body[1:5], 'big')}, "
                f"bits 0x{int.from_bytes(body[5:13], 'big'):x})")
    if packet_type == PacketType.POSITION_ACK:
        return f"POSITION_ACK {int.from_bytes(body, 'big')}"
    return name


def render_markdown(v: dict[str, Any]) -> str:
    out: list[str] = []
    put = out.append

    put("### V1. Headers\n\n| type | flags | payload length | header |\n|---|---|---|---|\n")
    for h in v["header"]:
        put(f"| 0x{h['type']:04x} {PacketType(h['type']).name} | 0x{h['flags']:04x} "
            f"{_flags_name(h['flags'])} | {h['payload_length']} | `{h['header']}` |\n")
    put("\nDatagrams that must be dropped, with the reason (the first failing check):\n\n")
    put("| case | datagram | reason |\n|---|---|---|\n")
    for r in v["header_rejects"]:
        data = bytes.fromhex(r["datagram"])
        shown = (f"`{data[:14].hex()}` + {len(data) - 14} zero bytes" if len(data) > 40
                 else f"`{r['datagram']}`")
        put(f"| {r['name']} | {shown} | `{r['reason']}` |\n")

    put("\n### V2. Transport packet protection\n\n")
    first = v["transport"][0]
    put(f"Send key `{first['key']}`, receiver index "
        f"0x{first['receiver_index']:08x}.\n\n")
    for t in v["transport"]:
        put(f"**{t['name']}**: flags 0x{t['flags']:04x}, type 0x{t['type']:04x}, "
            f"counter {t['counter']}, nonce `{t['nonce']}`, plaintext `{t['plaintext']}`\n\n")
        put(_block(bytes.fromhex(t["datagram"])))
        put("\n")

    fl = v["frame_lists"]
    put("### V3. Frame lists and padding\n\n")
    put("A 40-byte VISUAL_EFFECT body `" + fl["high_visual_effect"]["body"]
        + "` at encryption_level=high becomes this 64-byte frame list (SEALED plaintext):\n\n")
    put(_block(bytes.fromhex(fl["high_visual_effect"]["frame_list"])))
    put("\nFrame list length at encryption_level=high by VISUAL_EFFECT payload length (one "
        "frame of 4 + n bytes, threshold 100):\n\n")
    put("| payload | frame list | padding frame |\n|---|---|---|\n")
    for row in fl["padding_table"]:
        pad = row["padding_frame_length"]
        put(f"| {row['payload_length']} | {row['frame_list_length']} | "
            f"{pad if pad is not None else 'none: compression path'} |\n")
    frames = ", ".join(f"{PacketType(t).name} `{body}`" for t, body in fl["multi_frame"]["frames"])
    put("\nA receiver must also accept several frames in one list. This one decodes to "
        f"{frames} (the chat frame is seq 7, \"hi\"), then padding:\n\n")
    put(_block(bytes.fromhex(fl["multi_frame"]["frame_list"])))
    put("\nFrame lists that must be refused:\n\n| case | frame list | reason |\n|---|---|---|\n")
    for r in fl["rejects"]:
        put(f"| {r['name']} | `{r['frame_list'] or '(empty)'}` | `{r['reason']}` |\n")

    c = v["compression"]
    libs = c["libraries"]
    put("\n### V4. Compression\n\n")
    put(f"Generated with python-lz4 {libs['lz4']} (liblz4 {libs['liblz4']}) and "
        f"python-zstandard {libs['zstandard']} (libzstd {libs['libzstd']}). Other library "
        "versions may compress differently; their output must still decompress to the "
        "input, and these outputs must decompress with any version.\n\n")
    sources = {
        "LZ4": "`b\"\".join(f\"player{i:03d} x={i * 7 % 100} y={i * 13 % 100};\".encode() "
               "for i in range(12))`",
        "Zstandard": "`b\"\".join(f\"npc{i:03d} says: the weather in zone {i % 7} is "
                     "{('fine', 'rainy', 'foggy')[i % 3]}.\\n\".encode() for i in range(40))`",
        "incompressible, sent as it is": "`bytes(range(150))`",
    }
    for case in c["cases"]:
        data = bytes.fromhex(case["input"])
        output = bytes.fromhex(case["output"])
        put(f"**{case['name']}**: input ({len(data)} bytes) {sources[case['name']]}; "
            f"flag 0x{case['flag']:04x}; output {len(output)} bytes")
        if case["flag"]:
            put(":\n\n")
            put(_block(output))
            put("\n")
        else:
            put(" (the input itself).\n\n")
    put("Compressed payloads that must be refused (max_size 65536):\n\n")
    put("| case | flag | payload | reason |\n|---|---|---|---|\n")
    for r in c["rejects"]:
        shown = r["payload"] if len(r["payload"]) <= 24 else r["payload"][:24] + "..."
        put(f"| {r['name']} | 0x{r['flag']:04x} | `{shown}` | `{r['reason']}` |\n")

    h = v["handshake"]
    i, d = h["inputs"], h["derived"]
    put("\n### V5. Handshake\n\n```\n")
    rows = [
        ("initiator static private", i["initiator_static_private"]),
        ("initiator static public", d["initiator_static_public"]),
        ("responder static private", i["responder_static_private"]),
        ("responder static public", d["responder_static_public"]),
        ("initiator ephemeral private", i["initiator_ephemeral_private"]),
        ("initiator ephemeral public", d["initiator_ephemeral_public"]),
        ("responder ephemeral private", i["responder_ephemeral_private"]),
        ("responder ephemeral public", d["responder_ephemeral_public"]),
        ("initiator sender index", f"{i['initiator_index']:08x}"),
        ("responder sender index", f"{i['responder_index']:08x}"),
        ("timestamp (ns)", f"{i['timestamp']} = {i['timestamp']:016x}"),
        ("initiator certificate", i["initiator_certificate"]
         + f' ("{bytes.fromhex(i["initiator_certificate"]).decode()}")'),
        ("responder certificate", "none"),
        ("prologue", d["prologue"]),
        ("request payload", d["request_payload"]),
        ("response payload", d["response_payload"]),
        ("DH es", d["dh_es"]),
        ("DH ss", d["dh_ss"]),
        ("DH ee", d["dh_ee"]),
        ("DH se", d["dh_se"]),
        ("mac1 key of the responder", d["responder_mac1_key"]),
        ("mac1 key of the initiator", d["initiator_mac1_key"]),
    ]
    for label, value in rows:
        put(f"{label:<28} {value}\n")
    put("```\n\nThe symmetric state after each step (k: the handshake cipher key, "
        "once there is one):\n\n```\n")
    for step in h["trace"]:
        put(f"{step['step']}\n  ck {step['ck']}\n  h  {step['h']}\n")
        if step["k"]:
            put(f"  k  {step['k']}\n")
    put("```\n\n")
    request = bytes.fromhex(h["request"])
    response = bytes.fromhex(h["response"])
    put(f"HANDSHAKE_REQUEST ({len(request)} bytes):\n\n")
    put(_block(request))
    put(f"\nHANDSHAKE_RESPONSE ({len(response)} bytes):\n\n")
    put(_block(response))
    k = h["keys"]
    put("\n```\n")
    put(f"initiator -> responder key   {k['initiator_to_responder']}\n")
    put(f"responder -> initiator key   {k['responder_to_initiator']}\n")
    put(f"handshake hash               {k['handshake_hash']}\n")
    put("```\n\n")
    put("The first transport datagrams under these keys, as the endpoints send them with "
        "`coalesce_delay=0` (every datagram at once): the initiator's PING (id 1), the "
        "responder's PONG, then the initiator's first position (a full state, V8) and a chat "
        "line, and 10 ms later (`ack_delay`) the responder's acknowledgement of both. Each is "
        "a SEALED frame list; at level high it is padded, at level low not.\n\n")
    for level in ("high", "low"):
        put(f"encryption_level={level}:\n\n")
        for m in h["after"][level]:
            data = bytes.fromhex(m["datagram"])
            to = "responder" if m["from"] == "initiator" else "initiator"
            kinds = " + ".join(_frame_name(t, bytes.fromhex(b)) for t, b in m["frames"])
            put(f"{m['from']} -> {to}, at {m['at'] * 1000:g} ms, counter {m['counter']}, "
                f"{kinds} ({len(data)} bytes), frame list `{m['frame_list']}`:\n\n")
            put(_block(data))
            put("\n")

    ck = v["cookies"]
    put("### V6. mac2 and the cookie reply\n\n```\n")
    put(f"cookie secret       {ck['secret']}\n")
    put(f"address             {ck['address'][0]}|{ck['address'][1]}\n")
    put(f"cookie              {ck['cookie']}\n")
    put(f"mac2                {ck['mac2']}\n")
    put(f"cookie key          {ck['cookie_key']}\n")
    put(f"cookie reply nonce  {ck['nonce']}\n")
    put(f"request mac1 (AAD)  {ck['request_mac1']}\n")
    put("```\n\nThe request of V5 sent with this cookie (only mac2, the last 16 bytes, "
        "differs):\n\n")
    put(_block(bytes.fromhex(ck["request_with_mac2"])))
    reply = bytes.fromhex(ck["cookie_reply"])
    put(f"\nThe COOKIE_REPLY answering the V5 request ({len(reply)} bytes):\n\n")
    put(_block(reply))
    _render_channels(v["channels"], put)
    _render_position_codec(v["position_codec"], put)
    return "".join(out)


def _state_text(state: dict[str, Any] | None) -> str:
    if state is None:
        return "none: a full state"
    return (f"{state['map']} ({state['x']}, {state['y']}) dir {state['dir']} speed "
            f"{state['speed']} {'moving' if state['moving'] else 'standing'} tick {state['tick']}")


def _key_text(name: str) -> str:
    return "BLAKE2b-128 of `" + name.replace("\0", "\\0") + "`"


def _render_bursts(bursts: list[dict[str, Any]], put: Callable[[str], object]) -> None:
    put("| seqs arriving | the receiver's ACK frame | next | bits | delivered so far |\n"
        "|---|---|---|---|---|\n")
    for b in bursts:
        delivered = ", ".join(f"`{d}`" for d in b["delivered"])
        put(f"| {', '.join(str(seq) for seq in b['seqs'])} | `{b['ack']}` | {b['next']} | "
            f"0x{b['bits']:x} | {delivered} |\n")


def _render_channels(c: dict[str, Any], put: Callable[[str], object]) -> None:
    put("\n### V7. Channel frames\n\n")
    put("Whole frames (frame header included), produced by `ChannelLink` and "
        "`ReliableSender` (`p2pd/channels/`) and fed to a receiving `ChannelLink`.\n\n")
    p = c["positions"]
    put("**Positions.** The sender's first update is a full state; the receiver acknowledges "
        "seq 0; the next two updates are coded against seq 0, the newest state acknowledged:"
        "\n\n| seq | baseline | position | coded (V8) | frame |\n|---|---|---|---|---|\n")
    for u in p["updates"]:
        put(f"| {u['seq']} | {u['baseline']} | {_state_text(u['state'])} | `{u['coded']}` | "
            f"`{u['frame']}` |\n")
    acks = " and ".join(f"`{a['frame']}` (seq {a['seq']})" for a in p["position_acks"])
    put(f"\nPOSITION_ACK frames: {acks}. The updates arrive in the order seq "
        f"{', '.join(str(i) for i in p['arrivals'])}: the receiver delivers seq "
        f"{' and '.join(str(i) for i in p['delivered'])} and drops seq 1, older than seq 2, "
        "as stale; its POSITION_ACK names seq 2.\n\n")
    put("16-bit sequence numbers wrap: `a` is newer than `b` when they differ and "
        "`(a - b) mod 65536 < 32768`:\n\n| a | b | a newer than b |\n|---|---|---|\n")
    for a, b, newer in c["seq16_newer"]:
        put(f"| 0x{a:04x} | 0x{b:04x} | {'yes' if newer else 'no'} |\n")

    o = c["ordered"]
    put(f"\n**An ordered channel** (chat, channel {o['channel']}). Five messages, seq 0-4:\n\n"
        "| seq | payload | frame |\n|---|---|---|\n")
    for seq, (message, frame) in enumerate(zip(o["messages"], o["frames"], strict=True)):
        put(f"| {seq} | `{message}` | `{frame}` |\n")
    put("\nThey arrive in bursts; after each burst the receiver acknowledges:\n\n")
    _render_bursts(o["bursts"], put)

    lv = c["latest_value"]
    put(f"\n**The latest-value channel** (environment, channel {lv['channel']}). Three values; "
        "the third has the key of the first, which it supersedes while the first is still "
        "unacknowledged, so the sender gives the first up and its floor moves to 1:\n\n"
        "| seq | floor | key | payload | frame |\n|---|---|---|---|---|\n")
    for value in lv["values"]:
        put(f"| {value['seq']} | {value['floor']} | `{value['key']}` "
            f"({_key_text(value['key_name'])}) | `{value['payload']}` | "
            f"`{value['frame']}` |\n")
    put("\nSeq 1 arrives first, then seq 2, then the superseded seq 0, which is not "
        "delivered:\n\n")
    _render_bursts(lv["bursts"], put)

    fc = c["fragments"]["chat"]
    put(f"\n**Fragments.** With a part size of {fc['part_size']} bytes (a session's is "
        f"{c['limits']['part_size']}), the chat message `{fc['message']}` becomes:\n\n"
        "| seq | index | count | part | frame |\n|---|---|---|---|---|\n")
    for frame_hex in fc["frames"]:
        body = bytes.fromhex(frame_hex)[4:]
        put(f"| {int.from_bytes(body[2:6], 'big')} | {int.from_bytes(body[6:8], 'big')} | "
            f"{int.from_bytes(body[8:10], 'big')} | `{body[10:].hex()}` | `{frame_hex}` |\n")
    put(f"\nArriving in the order {', '.join(str(i) for i in fc['arrivals'])}, they are "
        f"delivered once, whole, when the last is in; the ACK is `{fc['ack']}`.\n\n")
    fe = c["fragments"]["environment"]
    put(f"With a part size of {fe['part_size']} bytes, after the value `{fe['before']}` (seq 0) "
        f"was acknowledged, the environment value `{fe['payload']}` under key `{fe['key']}` "
        f"({_key_text(fe['key_name'])}) becomes:\n\n"
        "| seq | index | count | floor | part | frame |\n|---|---|---|---|---|---|\n")
    for frame_hex in fe["frames"]:
        body = bytes.fromhex(frame_hex)[4:]
        put(f"| {int.from_bytes(body[2:6], 'big')} | {int.from_bytes(body[6:8], 'big')} | "
            f"{int.from_bytes(body[8:10], 'big')} | {int.from_bytes(body[10:14], 'big')} | "
            f"`{body[14:].hex()}` | `{frame_hex}` |\n")
    put(f"\nThe receiver delivers `{fe['payload']}`; its ACK is `{fe['ack']}`.\n\n")

    put("The limits and timers behind these frames (default `SessionConfig`):\n\n"
        "| name | value |\n|---|---|\n")
    for name, value in c["limits"].items():
        put(f"| `{name}` | {value} |\n")


def _render_position_codec(pc: dict[str, Any], put: Callable[[str], object]) -> None:
    put("\n### V8. Position coding\n\n")
    put("| case | position | baseline | coded |\n|---|---|---|---|\n")
    for case in pc["cases"]:
        put(f"| {case['name']} | {_state_text(case['state'])} | "
            f"{_state_text(case['baseline'])} | `{case['coded']}` |\n")
    put("\nUpdates a receiver must refuse, against the baseline shown:\n\n"
        "| case | baseline | coded | reason |\n|---|---|---|---|\n")
    for r in pc["rejects"]:
        put(f"| {r['name']} | {_state_text(r['baseline'])} | `{r['coded'] or '(empty)'}` | "
            f"`{r['reason']}` |\n")


def main(argv: list[str]) -> int:
    vectors = build()
    if "--markdown" in argv:
        sys.stdout.write(render_markdown(vectors))
        return 0
    text = dumps(vectors)
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{OUTPUT} is out of date\n")
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
