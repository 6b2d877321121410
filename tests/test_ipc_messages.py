"""IPC requests, replies, pushed events, and the daemon-to-daemon game event codec."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from p2pd.coordinator.credentials import TOKEN_SIZE
from p2pd.ipc.errors import ERROR_CODES, EVENTS_DROPPED, IpcError
from p2pd.ipc.fields import REQUIRED, ScalarMap, map_from_dict, map_to_dict, split_address
from p2pd.ipc.framing import FrameDecoder, encode_message
from p2pd.ipc.messages import (
    EVENT_NAMES,
    GAME_EVENT_CLASSES,
    OPS,
    SCHEMAS,
    TOKEN_HEX_DIGITS,
    AiInteraction,
    Chat,
    Connect,
    CoordinatorToken,
    Disconnect,
    Environment,
    GameEvent,
    Hello,
    LegendData,
    Nat,
    Peers,
    Position,
    Render,
    Request,
    RequestSnapshot,
    ServerPosition,
    SetLogLevel,
    SharedState,
    Stats,
    Status,
    Subscribe,
    VerifyInteraction,
    VisualEffect,
    parse_request_untrusted,
    request_id_of,
    request_to_message,
)
from p2pd.ipc.outgoing import (
    error_event,
    event_message,
    events_dropped_event,
    game_event_to_message,
    link_event,
    peer_joined_event,
    peer_left_event,
    reply_error,
    reply_ok,
)
from p2pd.ipc.peer_codec import (
    MAX_PEER_PAYLOAD,
    decode_peer_event_untrusted,
    encode_peer_event,
)
from p2pd.wire.types import PacketType

KEY = "ab" * 32
KEY2 = "0123456789abcdef" * 4
DELETE = object()  # marks a field to remove from an example

EXAMPLES: dict[str, dict[str, Any]] = {
    "hello": {"op": "hello", "id": 1, "token": "0f" * 32, "client": "roclient 2024-11"},
    "status": {"op": "status", "id": 2},
    "stats": {"op": "stats", "id": 3},
    "peers": {"op": "peers", "id": 4},
    "nat": {"op": "nat", "id": 4},
    "subscribe": {"op": "subscribe", "id": 5, "events": ["position", "chat"]},
    "connect": {"op": "connect", "id": 6, "address": "203.0.113.7:40000", "key": KEY},
    "disconnect": {"op": "disconnect", "id": 7, "peer": KEY},
    "coordinator_token": {"op": "coordinator_token", "id": 7, "token": "0a" * 141},
    "set_log_level": {"op": "set_log_level", "id": 8, "level": "debug"},
    "position": {
        "op": "position",
        "id": 9,
        "map": "prontera",
        "x": 150,
        "y": 180,
        "dir": 4,
        "speed": 150,
        "moving": True,
        "tick": 1_732_480_000_000,
    },
    "effect": {
        "op": "effect",
        "id": 10,
        "effect_id": 316,
        "params": {"level": 10, "scale": 1.5, "color": "red", "loop": False, "target": None},
        "map": "prontera",
        "x": 150,
        "y": 180,
        "start_ms": 1_732_480_000_000,
        "duration_ms": 1200,
        "owner": 150001,
    },
    "chat": {"op": "chat", "id": 11, "text": "Hello there! ¿Qué tal? 안녕", "channel": "local"},
    "ai_interaction": {
        "op": "ai_interaction",
        "id": 12,
        "interaction_id": 3,
        "ai_entity_id": 110001,
        "player_id": 150001,
        "params": {"topic": "weather"},
        "result": {"mood": "happy", "reply_id": 42},
    },
    "environment": {
        "op": "environment",
        "id": 13,
        "kind": "weather",
        "key": "prontera",
        "value": {"type": "rain", "intensity": 0.7},
        "version": 17,
    },
    "legend": {
        "op": "legend",
        "id": 14,
        "ai_entity_id": 110001,
        "kind": "dialogue",
        "data": {"line": "The winds are restless tonight...", "emotion": 3},
        "version": 5,
    },
    "render": {"op": "render", "id": 15, "peers": [KEY]},
    "server_position": {"op": "server_position", "id": 16, "peer": KEY, "map": "prontera",
                        "x": 150, "y": 181, "speed": 150, "warp": False},
    "verify_interaction": {"op": "verify_interaction", "id": 17, "peer": KEY,
                           "ai_entity_id": 110001, "interaction_id": 3,
                           "result": {"mood": "happy", "reply_id": 42}},
    "shared_state": {"op": "shared_state", "id": 18},
    "request_snapshot": {"op": "request_snapshot", "id": 19},
}

EXPECTED: dict[str, Request] = {
    "hello": Hello(id=1, token="0f" * 32, client="roclient 2024-11"),
    "status": Status(id=2),
    "stats": Stats(id=3),
    "peers": Peers(id=4),
    "nat": Nat(id=4),
    "subscribe": Subscribe(id=5, events=("chat", "position")),
    "connect": Connect(id=6, address="203.0.113.7:40000", key=KEY),
    "disconnect": Disconnect(id=7, peer=KEY),
    "coordinator_token": CoordinatorToken(id=7, token="0a" * 141),
    "set_log_level": SetLogLevel(id=8, level="debug"),
    "position": Position(
        id=9, map="prontera", x=150, y=180, dir=4, speed=150, moving=True, tick=1_732_480_000_000
    ),
    "effect": VisualEffect(
        id=10,
        effect_id=316,
        params=(
            ("color", "red"),
            ("level", 10),
            ("loop", False),
            ("scale", 1.5),
            ("target", None),
        ),
        map="prontera",
        x=150,
        y=180,
        start_ms=1_732_480_000_000,
        duration_ms=1200,
        owner=150001,
    ),
    "chat": Chat(id=11, text="Hello there! ¿Qué tal? 안녕"),
    "ai_interaction": AiInteraction(
        id=12,
        interaction_id=3,
        ai_entity_id=110001,
        player_id=150001,
        params=(("topic", "weather"),),
        result=(("mood", "happy"), ("reply_id", 42)),
    ),
    "environment": Environment(
        id=13,
        kind="weather",
        key="prontera",
        value=(("intensity", 0.7), ("type", "rain")),
        version=17,
    ),
    "legend": LegendData(
        id=14,
        ai_entity_id=110001,
        kind="dialogue",
        data=(("emotion", 3), ("line", "The winds are restless tonight...")),
        version=5,
    ),
    "render": Render(id=15, peers=(KEY,)),
    "server_position": ServerPosition(id=16, peer=KEY, map="prontera", x=150, y=181,
                                      speed=150),
    "verify_interaction": VerifyInteraction(id=17, peer=KEY, ai_entity_id=110001,
                                            interaction_id=3,
                                            result=(("mood", "happy"), ("reply_id", 42))),
    "shared_state": SharedState(id=18),
    "request_snapshot": RequestSnapshot(id=19),
}


def parse_error(msg: Any) -> IpcError:
    with pytest.raises(IpcError) as caught:
        parse_request_untrusted(msg)
    assert caught.value.code in ERROR_CODES
    return caught.value


def with_field(op: str, field: str, value: Any) -> dict[str, Any]:
    msg = copy.deepcopy(EXAMPLES[op])
    if value is DELETE:
        del msg[field]
    else:
        msg[field] = value
    return msg


# -- every op ------------------------------------------------------------------------


def test_examples_cover_every_op() -> None:
    assert set(EXAMPLES) == set(OPS) == set(EXPECTED)


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_each_op_parses(op: str) -> None:
    request = parse_request_untrusted(EXAMPLES[op])
    assert request == EXPECTED[op]
    assert repr(request) == repr(EXPECTED[op])  # also the types of map values
    hash(request)  # frozen and hashable, maps included


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_request_to_message_inverts_parsing(op: str) -> None:
    request = EXPECTED[op]
    assert parse_request_untrusted(request_to_message(request)) == request


def test_defaults() -> None:
    position = parse_request_untrusted(
        {"op": "position", "id": 1, "map": "izlude", "x": 0, "y": 0, "dir": 0, "tick": 0}
    )
    assert position == Position(id=1, map="izlude", x=0, y=0, dir=0, tick=0)
    assert (position.speed, position.moving, position.to) == (150, False, ())
    chat = parse_request_untrusted({"op": "chat", "id": 1, "text": "hi"})
    assert chat == Chat(id=1, text="hi", channel="local", to=())
    ai = parse_request_untrusted(
        {"op": "ai_interaction", "id": 1, "interaction_id": 1, "ai_entity_id": 2, "player_id": 3}
    )
    assert ai == AiInteraction(id=1, interaction_id=1, ai_entity_id=2, player_id=3)
    assert (ai.params, ai.result) == ((), None)


def test_limits_at_their_edges_are_accepted() -> None:
    edges: dict[str, dict[str, Any]] = {
        "position": {"x": 1023, "y": 0, "dir": 7, "speed": 20, "tick": (1 << 63) - 1},
        "effect": {
            "effect_id": (1 << 32) - 1,
            "params": {f"k{i:031d}": "é" * 128 for i in range(16)},  # 32-byte keys, 256-byte values
            "duration_ms": 600_000,
            "owner": 0,
        },
        "chat": {"text": "가" * 170 + "xy"},  # 512 bytes
        "ai_interaction": {"result": "x" * 4096},
        "environment": {"key": "k" * 64, "kind": "sound", "version": 0},
        "legend": {"data": {f"k{i}": "y" * 4096 for i in range(32)}},
        "hello": {"client": "c" * 64},
        "connect": {"address": "[2001:db8::1]:65535", "key": KEY.upper()},
    }
    for op, fields in edges.items():
        msg = {**EXAMPLES[op], **fields}
        parse_request_untrusted(msg)
    speed = {**EXAMPLES["position"], "speed": 1000}
    position = EXPECTED["position"]
    assert isinstance(position, Position)
    assert parse_request_untrusted(speed) == dataclasses.replace(position, speed=1000)
    connect = parse_request_untrusted({**EXAMPLES["connect"], "key": KEY.upper()})
    assert isinstance(connect, Connect)
    assert connect.key == KEY


def test_to_lists_peers() -> None:
    msg = {**EXAMPLES["chat"], "to": [KEY, KEY2.upper(), KEY]}
    chat = parse_request_untrusted(msg)
    assert isinstance(chat, Chat)
    assert chat.to == (KEY, KEY2)  # lower case, duplicates dropped, order kept
    many = [f"{i:064x}" for i in range(64)]
    assert parse_request_untrusted({**EXAMPLES["position"], "to": many}).to == tuple(many)  # type: ignore[union-attr]


def test_subscribe_everything() -> None:
    assert parse_request_untrusted({"op": "subscribe", "id": 1, "events": ["*"]}) == Subscribe(
        id=1, events=("*",)
    )
    assert parse_request_untrusted({"op": "subscribe", "id": 1, "events": []}) == Subscribe(
        id=1, events=()
    )
    all_names = parse_request_untrusted({"op": "subscribe", "id": 1, "events": list(EVENT_NAMES)})
    assert all_names == Subscribe(id=1, events=tuple(sorted(EVENT_NAMES)))


# -- envelope ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"op": "status"}, "id"),
        ({"op": "status", "id": -1}, "id"),
        ({"op": "status", "id": 1 << 32}, "id"),
        ({"op": "status", "id": True}, "id"),
        ({"op": "status", "id": 1.0}, "id"),
        ({"op": "status", "id": "1"}, "id"),
        ({"op": "status", "id": None}, "id"),
        ({"id": 1}, "op"),
        ({"id": 1, "op": "teleport"}, "op"),
        ({"id": 1, "op": "Status"}, "op"),
        ({"id": 1, "op": 3}, "op"),
        ({"id": 1, "op": None}, "op"),
        ({"id": 1, "op": "x" * 10000}, "op"),
    ],
)
def test_bad_envelope(msg: dict[str, Any], field: str) -> None:
    error = parse_error(msg)
    assert (error.code, error.field) == ("bad_request", field)
    assert len(error.message) < 200


def test_request_id_of() -> None:
    assert request_id_of({"id": 5, "op": "nope"}) == 5
    assert request_id_of({"id": (1 << 32) - 1}) == (1 << 32) - 1
    assert request_id_of({"id": True}) is None
    assert request_id_of({}) is None
    assert request_id_of([1, 2]) is None  # type: ignore[arg-type]


def test_not_a_map() -> None:
    assert parse_error([("op", "status")]).code == "bad_frame"


# -- field violations ----------------------------------------------------------------------

MISSING = [
    (op, f.name)
    for cls, fields in SCHEMAS.items()
    for op in [cls.OP]
    for f in fields
    if f.default is REQUIRED
]


@pytest.mark.parametrize(("op", "field"), MISSING)
def test_missing_field(op: str, field: str) -> None:
    error = parse_error(with_field(op, field, DELETE))
    assert (error.code, error.field) == ("bad_field", field)
    assert "missing" in error.message


@pytest.mark.parametrize("op", sorted(EXAMPLES))
def test_unknown_field(op: str) -> None:
    error = parse_error(with_field(op, "colour", "blue"))
    assert (error.code, error.field) == ("bad_field", "colour")


@pytest.mark.parametrize(
    ("op", "field"),
    [("position", "movng"), ("position", "Speed"), ("chat", "chanel"), ("effect", "param")],
)
def test_misspelt_optional_field_is_not_ignored(op: str, field: str) -> None:
    msg = with_field(op, field, 1)
    error = parse_error(msg)
    assert (error.code, error.field) == ("bad_field", field)


def test_unknown_field_name_is_shortened() -> None:
    error = parse_error(with_field("status", "z" * 5000, 1))
    assert error.field is not None
    assert len(error.field) < 100


BIG = "x" * 5000
BAD_FIELDS: list[tuple[str, str, Any, str]] = [
    # (op, field, value, field named in the error)
    # sync requests
    ("render", "peers", [], "peers"),
    ("render", "peers", ["ab"], "peers.0"),
    ("request_snapshot", "peers", "ab" * 32, "peers"),
    ("server_position", "speed", 10, "speed"),
    ("server_position", "speed", 1001, "speed"),
    ("server_position", "x", 1024, "x"),
    ("server_position", "peer", None, "peer"),
    ("server_position", "warp", 1, "warp"),
    ("verify_interaction", "result", [1], "result"),
    ("verify_interaction", "interaction_id", -1, "interaction_id"),
    # hello
    ("hello", "token", "0f" * 31, "token"),
    ("hello", "token", "zz" * 32, "token"),
    ("hello", "token", 5, "token"),
    ("hello", "token", ("0f" * 32).encode(), "token"),
    ("hello", "client", "c" * 65, "client"),
    ("hello", "client", "bad\nname", "client"),
    ("hello", "client", None, "client"),
    # stats
    ("stats", "history", 301, "history"),
    ("stats", "history", -1, "history"),
    ("stats", "history", 1.0, "history"),
    ("stats", "history", True, "history"),
    # subscribe
    ("subscribe", "events", "position", "events"),
    ("subscribe", "events", ["pos"], "events.0"),
    ("subscribe", "events", ["chat", 1], "events.1"),
    ("subscribe", "events", ["*", "chat"], "events"),
    ("subscribe", "events", ["chat"] * 100, "events"),
    # connect
    ("connect", "address", "203.0.113.7", "address"),
    ("connect", "address", "203.0.113.7:0", "address"),
    ("connect", "address", "203.0.113.7:65536", "address"),
    ("connect", "address", "203.0.113.7:+80", "address"),
    ("connect", "address", "2001:db8::1:80", "address"),
    ("connect", "address", "[2001:db8::1]", "address"),
    ("connect", "address", "[not-v6]:80", "address"),
    ("connect", "address", "bad host:80", "address"),
    ("connect", "address", ":80", "address"),
    ("connect", "address", BIG + ":80", "address"),
    ("connect", "address", 80, "address"),
    ("connect", "key", KEY[:-1], "key"),
    ("connect", "key", KEY + "0", "key"),
    # disconnect, set_log_level
    ("disconnect", "peer", "g" * 64, "peer"),
    ("coordinator_token", "token", "0a" * 140, "token"),
    ("coordinator_token", "token", "0a" * 142, "token"),
    ("coordinator_token", "token", "zz" * 141, "token"),
    ("coordinator_token", "token", bytes(141), "token"),
    ("disconnect", "peer", [KEY], "peer"),
    ("set_log_level", "level", "trace", "level"),
    ("set_log_level", "level", "INFO", "level"),
    ("set_log_level", "level", 1, "level"),
    # position
    ("position", "map", "", "map"),
    ("position", "map", "Prontera", "map"),
    ("position", "map", "pron tera", "map"),
    ("position", "map", "prontera\n", "map"),
    ("position", "map", "m" * 33, "map"),
    ("position", "map", 5, "map"),
    ("position", "x", "150", "x"),
    ("position", "x", True, "x"),
    ("position", "x", 150.0, "x"),
    ("position", "x", -1, "x"),
    ("position", "x", 1024, "x"),
    ("position", "y", 1 << 70, "y"),
    ("position", "dir", 8, "dir"),
    ("position", "dir", False, "dir"),
    ("position", "speed", 19, "speed"),
    ("position", "speed", 1001, "speed"),
    ("position", "speed", 0, "speed"),
    ("position", "moving", 1, "moving"),
    ("position", "moving", "true", "moving"),
    ("position", "moving", None, "moving"),
    ("position", "tick", -1, "tick"),
    ("position", "tick", 1 << 63, "tick"),
    ("position", "tick", True, "tick"),
    ("position", "to", [], "to"),
    ("position", "to", KEY, "to"),
    ("position", "to", None, "to"),
    ("position", "to", ["zz"], "to.0"),
    ("position", "to", [KEY, 7], "to.1"),
    ("position", "to", [f"{i:064x}" for i in range(65)], "to"),
    # effect
    ("effect", "effect_id", 1 << 32, "effect_id"),
    ("effect", "effect_id", True, "effect_id"),
    ("effect", "params", [1, 2], "params"),
    ("effect", "params", {f"k{i}": i for i in range(17)}, "params"),
    ("effect", "params", {"k" * 33: 1}, "params." + "k" * 33),
    ("effect", "params", {"": 1}, "params."),
    ("effect", "params", {"a\tb": 1}, "params.a\tb"),
    ("effect", "params", {"s": "v" * 257}, "params.s"),
    ("effect", "params", {"s": "é" * 129}, "params.s"),  # 258 bytes in 129 characters
    ("effect", "params", {"s": [1]}, "params.s"),
    ("effect", "params", {"s": {"t": 1}}, "params.s"),
    ("effect", "params", {"s": b"bin"}, "params.s"),
    ("effect", "params", {"s": math.nan}, "params.s"),
    ("effect", "params", {"s": math.inf}, "params.s"),
    ("effect", "params", {"s": 1 << 64}, "params.s"),
    ("effect", "params", {1: 1}, "params"),
    ("effect", "map", "a/b", "map"),
    ("effect", "x", 1024, "x"),
    ("effect", "start_ms", -1, "start_ms"),
    ("effect", "duration_ms", 600_001, "duration_ms"),
    ("effect", "duration_ms", 1.5, "duration_ms"),
    ("effect", "owner", -1, "owner"),
    ("effect", "to", [KEY.replace("a", "g")], "to.0"),
    # chat
    ("chat", "text", "", "text"),
    ("chat", "text", "x" * 513, "text"),
    ("chat", "text", "가" * 171, "text"),  # 513 bytes in 171 characters
    ("chat", "text", "two\nlines", "text"),
    ("chat", "text", "bell\x07", "text"),
    ("chat", "text", "del\x7f", "text"),
    ("chat", "text", "c1\x85", "text"),
    ("chat", "text", "ls\u2028", "text"),
    ("chat", "text", "\ud800", "text"),  # a lone surrogate is not UTF-8
    ("chat", "text", 5, "text"),
    ("chat", "text", b"bytes", "text"),
    ("chat", "channel", "global", "channel"),
    ("chat", "channel", None, "channel"),
    # ai_interaction
    ("ai_interaction", "interaction_id", -1, "interaction_id"),
    ("ai_interaction", "ai_entity_id", 1 << 32, "ai_entity_id"),
    ("ai_interaction", "player_id", "150001", "player_id"),
    ("ai_interaction", "params", None, "params"),
    ("ai_interaction", "result", 5, "result"),
    ("ai_interaction", "result", "r" * 4097, "result"),
    ("ai_interaction", "result", ["a"], "result"),
    ("ai_interaction", "result", {"a": [1]}, "result.a"),
    ("ai_interaction", "result", {f"k{i}": i for i in range(17)}, "result"),
    # environment
    ("environment", "kind", "rain", "kind"),
    ("environment", "key", "", "key"),
    ("environment", "key", "k" * 65, "key"),
    ("environment", "key", "a\x00b", "key"),
    ("environment", "value", [], "value"),
    ("environment", "value", None, "value"),
    ("environment", "value", {f"k{i}": i for i in range(17)}, "value"),
    ("environment", "value", {"v": "x" * 257}, "value.v"),
    ("environment", "version", -1, "version"),
    ("environment", "version", 1 << 63, "version"),
    # legend
    ("legend", "ai_entity_id", -5, "ai_entity_id"),
    ("legend", "kind", "lore", "kind"),
    ("legend", "data", {f"k{i}": i for i in range(33)}, "data"),
    ("legend", "data", {"line": "x" * 4097}, "data.line"),
    ("legend", "data", "text", "data"),
    ("legend", "version", "5", "version"),
]


@pytest.mark.parametrize(("op", "field", "value", "named"), BAD_FIELDS)
def test_bad_field(op: str, field: str, value: Any, named: str) -> None:
    error = parse_error(with_field(op, field, value))
    assert (error.code, error.field) == ("bad_field", named)
    assert len(error.message) < 300  # never echoes a long input back
    assert error.to_dict()["field"] == named


def test_every_op_has_bad_field_cases() -> None:
    covered = {op for op, *_ in BAD_FIELDS}
    assert covered == {cls.OP for cls, fields in SCHEMAS.items() if fields}


# -- fuzzing -------------------------------------------------------------------------------

FIELD_NAMES = sorted(
    {f.name for fields in SCHEMAS.values() for f in fields}
    | {f.compact for fields in SCHEMAS.values() for f in fields if f.compact}
)


def anything_with(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | ints
        | st.floats()
        | st.text(max_size=20)
        | st.binary(max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=6) | st.sampled_from(FIELD_NAMES), inner, max_size=4)
        ),
        max_leaves=12,
    )


# Python callers can pass any int; msgpack carries -2^63..2^64-1
anything = anything_with(st.integers(min_value=-(1 << 64), max_value=1 << 64))
packable = anything_with(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1))


def check_outcome(call: Any) -> Any:
    try:
        return call()
    except IpcError as error:
        assert error.code in ERROR_CODES
        return error


@given(
    st.sampled_from(sorted(OPS)) | anything,
    st.integers(0, (1 << 32) - 1) | anything,
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), anything, max_size=8),
)
def test_random_maps_raise_only_ipc_error(op: Any, rid: Any, fields: dict[str, Any]) -> None:
    msg = {"op": op, "id": rid, **fields}
    outcome = check_outcome(lambda: parse_request_untrusted(msg))
    if not isinstance(outcome, IpcError):
        assert type(outcome) in SCHEMAS
        hash(outcome)


@given(st.sampled_from(sorted(EXAMPLES)), st.data())
def test_one_mutated_field_is_named(op: str, data: st.DataObject) -> None:
    msg = copy.deepcopy(EXAMPLES[op])
    names = [f.name for f in SCHEMAS[OPS[op]]] + ["extra"]
    field = data.draw(st.sampled_from(names))
    msg[field] = data.draw(anything)
    outcome = check_outcome(lambda: parse_request_untrusted(msg))
    if isinstance(outcome, IpcError):
        assert outcome.code == "bad_field"
        assert outcome.field is not None
        assert outcome.field.split(".")[0] == field


# -- valid events, for round trips ------------------------------------------------------------

peer_keys = st.text("0123456789abcdef", min_size=64, max_size=64)
plain_text = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
map_keys = st.text(plain_text, min_size=1, max_size=8)
map_names = st.from_regex(r"[a-z0-9_@.\-]{1,32}", fullmatch=True)
u32 = st.integers(0, (1 << 32) - 1)
i63 = st.integers(0, (1 << 63) - 1)
cells = st.integers(0, 1023)
to_lists = st.just(()) | st.lists(peer_keys, min_size=1, max_size=4, unique=True).map(tuple)


def scalar_maps(max_entries: int) -> st.SearchStrategy[ScalarMap]:
    values = (
        st.none()
        | st.booleans()
        | st.integers(-(1 << 63), (1 << 64) - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=16)
    )
    return st.dictionaries(map_keys, values, max_size=max_entries).map(map_from_dict)


game_events: st.SearchStrategy[GameEvent] = st.one_of(
    st.builds(
        Position,
        id=u32,
        map=map_names,
        x=cells,
        y=cells,
        dir=st.integers(0, 7),
        speed=st.integers(20, 1000),
        moving=st.booleans(),
        tick=i63,
        to=to_lists,
    ),
    st.builds(
        VisualEffect,
        id=u32,
        effect_id=u32,
        params=scalar_maps(8),
        map=map_names,
        x=cells,
        y=cells,
        start_ms=i63,
        duration_ms=st.integers(0, 600_000),
        owner=u32,
        to=to_lists,
    ),
    st.builds(
        Chat,
        id=u32,
        text=st.text(plain_text, min_size=1, max_size=128),
        to=to_lists,
    ),
    st.builds(
        AiInteraction,
        id=u32,
        interaction_id=u32,
        ai_entity_id=u32,
        player_id=u32,
        params=scalar_maps(8),
        result=st.none() | st.text(max_size=200) | scalar_maps(8),
        to=to_lists,
    ),
    st.builds(
        Environment,
        id=u32,
        kind=st.sampled_from(["weather", "time", "ambient", "sound"]),
        key=st.text(plain_text, min_size=1, max_size=16),
        value=scalar_maps(8),
        version=i63,
        to=to_lists,
    ),
    st.builds(
        LegendData,
        id=u32,
        ai_entity_id=u32,
        kind=st.sampled_from(["info", "state", "effect", "dialogue"]),
        data=scalar_maps(12),
        version=i63,
        to=to_lists,
    ),
)


@given(game_events)
def test_client_round_trip(event: GameEvent) -> None:
    assert repr(parse_request_untrusted(request_to_message(event))) == repr(event)


@given(game_events)
def test_peer_round_trip(event: GameEvent) -> None:
    try:
        packet_type, payload = encode_peer_event(event)
    except IpcError as error:
        assert error.code == "too_large"
        assume(False)
    assert isinstance(packet_type, PacketType)
    decoded = decode_peer_event_untrusted(packet_type, payload)
    # repr, not ==: True == 1 and 1.0 == 1 in Python, and the types must survive
    assert repr(decoded) == repr(dataclasses.replace(event, id=0, to=()))
    hash(decoded)


@pytest.mark.parametrize(
    "op", ["position", "effect", "chat", "ai_interaction", "environment", "legend"]
)
def test_peer_packet_types(op: str) -> None:
    event = EXPECTED[op]
    assert isinstance(event, GAME_EVENT_CLASSES)
    packet_type, payload = encode_peer_event(event)
    expected = {
        "position": PacketType.POSITION_UPDATE,
        "effect": PacketType.VISUAL_EFFECT,
        "chat": PacketType.CHAT_MESSAGE,
        "ai_interaction": PacketType.AI_INTERACTION,
        "environment": PacketType.ENVIRONMENTAL,
        "legend": PacketType.ENVIRONMENTAL,
    }[op]
    assert packet_type is expected
    assert decode_peer_event_untrusted(int(packet_type), payload) == dataclasses.replace(
        event, id=0, to=()
    )


def test_peer_payload_keys() -> None:
    """The compact keys, as documented in p2pd/ipc/peer_codec.py and docs/ipc.md."""

    def keys(op: str) -> dict[str, Any]:
        event = EXPECTED[op]
        assert isinstance(event, GAME_EVENT_CLASSES)
        decoded: dict[str, Any] = msgpack.unpackb(encode_peer_event(event)[1])
        return decoded

    assert keys("position") == {
        "m": "prontera",
        "x": 150,
        "y": 180,
        "d": 4,
        "v": True,
        "t": 1_732_480_000_000,
    }  # speed 150 is the default: left out
    assert set(keys("effect")) == {"e", "p", "m", "x", "y", "t", "l", "o"}
    assert keys("chat") == {"t": "Hello there! ¿Qué tal? 안녕"}
    assert set(keys("ai_interaction")) == {"i", "a", "u", "p", "r"}
    assert keys("environment") == {
        "c": 0,
        "k": "weather",
        "n": "prontera",
        "v": {"intensity": 0.7, "type": "rain"},
        "s": 17,
    }
    assert set(keys("legend")) == {"c", "a", "k", "d", "s"}
    assert keys("legend")["c"] == 1


def test_payload_sizes() -> None:
    walking = Position(
        id=9, map="prontera", x=150, y=180, dir=4, moving=True, tick=1_732_480_000_000
    )
    standing = Position(id=9, map="prontera", x=150, y=180, dir=4, tick=4_000_000)
    sizes = {
        "walking": len(encode_peer_event(walking)[1]),
        "standing": len(encode_peer_event(standing)[1]),
        "chat": len(encode_peer_event(Chat(id=1, text="hi all, selling +7 knife"))[1]),
    }
    # A walking Position with an epoch-milliseconds tick is 37 bytes, standing with
    # a 32-bit uptime tick 30 bytes; a 24-character chat line is 28 bytes. Under the
    # 14-byte header and AEAD overhead, a position datagram stays under 100 bytes.
    assert sizes == {"walking": 37, "standing": 30, "chat": 28}


def test_too_large_for_one_datagram() -> None:
    big = LegendData(
        id=1,
        ai_entity_id=1,
        kind="dialogue",
        data=map_from_dict({f"line{i}": "x" * 4096 for i in range(32)}),
        version=1,
    )
    parse_request_untrusted(request_to_message(big))  # a valid request
    with pytest.raises(IpcError) as caught:
        encode_peer_event(big)
    assert caught.value.code == "too_large"
    assert str(MAX_PEER_PAYLOAD) in caught.value.message


# -- hostile peer payloads ----------------------------------------------------------------

GAME_TYPES = [int(t) for t in sorted(set(map(int, PacketType)))]


@pytest.mark.parametrize(
    ("packet_type", "payload", "code", "field"),
    [
        (PacketType.PING, msgpack.packb({"t": "hi"}), "bad_frame", None),
        (0xFFFF, msgpack.packb({"t": "hi"}), "bad_frame", None),
        (PacketType.CHAT_MESSAGE, b"", "bad_frame", None),
        (PacketType.CHAT_MESSAGE, msgpack.packb(["hi"]), "bad_frame", None),
        (PacketType.CHAT_MESSAGE, msgpack.packb({"t": "hi"}) + b"\x00", "bad_frame", None),
        (PacketType.CHAT_MESSAGE, msgpack.packb({"text": "hi"}), "bad_field", "text"),
        (PacketType.CHAT_MESSAGE, msgpack.packb({"t": "hi", "to": [KEY]}), "bad_field", "to"),
        (PacketType.CHAT_MESSAGE, msgpack.packb({"t": "x\r\ny"}), "bad_field", "text"),
        (PacketType.CHAT_MESSAGE, msgpack.packb({"t": "hi", "c": "guild"}), "bad_field", "channel"),
        (PacketType.ENVIRONMENTAL, msgpack.packb({"k": "time"}), "bad_field", "c"),
        (PacketType.ENVIRONMENTAL, msgpack.packb({"c": 2}), "bad_field", "c"),
        (PacketType.ENVIRONMENTAL, msgpack.packb({"c": False}), "bad_field", "c"),
        (
            PacketType.ENVIRONMENTAL,
            msgpack.packb({"c": 1, "a": 1, "k": "info", "d": {}, "s": 1, "n": "key"}),
            "bad_field",
            "n",
        ),
        (
            PacketType.POSITION_UPDATE,
            msgpack.packb({"m": "prontera", "x": 5000, "y": 1, "d": 0, "t": 0}),
            "bad_field",
            "x",
        ),
        (
            PacketType.POSITION_UPDATE,
            msgpack.packb({"m": "prontera", "x": 1, "y": 1, "d": 0, "t": 0, "s": 5}),
            "bad_field",
            "speed",
        ),
    ],
)
def test_hostile_peer_payloads(
    packet_type: int, payload: bytes, code: str, field: str | None
) -> None:
    with pytest.raises(IpcError) as caught:
        decode_peer_event_untrusted(packet_type, payload)
    assert (caught.value.code, caught.value.field) == (code, field)


@given(st.sampled_from(GAME_TYPES), st.binary(max_size=200))
def test_peer_garbage_raises_only_ipc_error(packet_type: int, payload: bytes) -> None:
    check_outcome(lambda: decode_peer_event_untrusted(packet_type, payload))


compact_keys = st.sampled_from(
    sorted({f.compact for fs in SCHEMAS.values() for f in fs if f.compact})
)


@given(
    st.sampled_from(GAME_TYPES),
    st.dictionaries(compact_keys | st.text(max_size=3), packable, max_size=9),
)
def test_peer_random_maps_raise_only_ipc_error(packet_type: int, body: dict[str, Any]) -> None:
    outcome = check_outcome(
        lambda: decode_peer_event_untrusted(packet_type, msgpack.packb(body, use_bin_type=True))
    )
    if not isinstance(outcome, IpcError):
        assert outcome.id == 0
        assert outcome.to == ()


@given(game_events, st.data())
def test_peer_mutated_payloads_raise_only_ipc_error(event: GameEvent, data: st.DataObject) -> None:
    try:
        packet_type, payload = encode_peer_event(event)
    except IpcError:
        assume(False)
    body = msgpack.unpackb(payload)
    key = data.draw(st.sampled_from([*body, "zz"]))
    body[key] = data.draw(packable)
    check_outcome(
        lambda: decode_peer_event_untrusted(packet_type, msgpack.packb(body, use_bin_type=True))
    )


# -- replies and pushed events -------------------------------------------------------------


def test_replies() -> None:
    assert reply_ok(7, {"peers": []}) == {"id": 7, "ok": True, "result": {"peers": []}}
    assert reply_ok(7) == {"id": 7, "ok": True, "result": {}}
    error = IpcError("bad_field", "x must be in 0..1023, got 5000", "x")
    assert reply_error(8, error) == {
        "id": 8,
        "ok": False,
        "error": {"code": "bad_field", "message": "x must be in 0..1023, got 5000", "field": "x"},
    }
    no_field = reply_error(None, IpcError("bad_request", "id is missing"))
    assert no_field == {
        "id": None,
        "ok": False,
        "error": {"code": "bad_request", "message": "id is missing"},
    }
    # every reply is a frame the client can decode
    stream = encode_message(reply_ok(7, {"a": 1})) + encode_message(no_field)
    assert FrameDecoder().feed(stream) == [reply_ok(7, {"a": 1}), no_field]


@pytest.mark.parametrize(
    "op", ["position", "effect", "chat", "ai_interaction", "environment", "legend"]
)
def test_game_event_to_message(op: str) -> None:
    event = EXPECTED[op]
    assert isinstance(event, GAME_EVENT_CLASSES)
    pushed = game_event_to_message(event, KEY)
    assert pushed["event"] == op
    assert pushed["from"] == KEY
    assert "id" not in pushed
    assert "to" not in pushed
    request = {k: v for k, v in EXAMPLES[op].items() if k not in ("op", "id")}
    assert {k: v for k, v in pushed.items() if k not in ("event", "from")} == {
        **{
            f.name: f.default
            for f in SCHEMAS[type(event)]
            if f.default is not REQUIRED and f.compact
        },
        **request,
    }
    assert FrameDecoder().feed(encode_message(pushed)) == [pushed]


def test_pushed_event_defaults_are_written_out() -> None:
    pushed = game_event_to_message(Chat(id=0, text="hi"), KEY)
    assert pushed == {"event": "chat", "from": KEY, "text": "hi", "channel": "local"}
    ai = game_event_to_message(
        AiInteraction(id=0, interaction_id=1, ai_entity_id=2, player_id=3), KEY
    )
    assert ai["params"] == {}
    assert ai["result"] is None


def test_other_pushed_events() -> None:
    assert peer_joined_event(KEY, "203.0.113.7:40000") == {
        "event": "peer_joined",
        "peer": KEY,
        "address": "203.0.113.7:40000",
    }
    assert peer_left_event(KEY, "inactive") == {
        "event": "peer_left",
        "peer": KEY,
        "reason": "inactive",
    }
    assert link_event(KEY, "up", 23.5) == {
        "event": "link",
        "peer": KEY,
        "state": "up",
        "rtt_ms": 23.5,
    }
    assert error_event("internal", "oops") == {
        "event": "error",
        "code": "internal",
        "message": "oops",
    }
    dropped = events_dropped_event(12)
    assert dropped["event"] == "error"
    assert dropped["code"] == EVENTS_DROPPED == "events_dropped"
    assert dropped["count"] == 12
    assert "12" in dropped["message"]
    with pytest.raises(ValueError, match="unknown event"):
        event_message("teleported", {})
    with pytest.raises(ValueError, match="event"):
        event_message("link", {"event": "x"})


def test_map_helpers() -> None:
    stored = map_from_dict({"b": 1, "a": None})
    assert stored == (("a", None), ("b", 1))
    assert map_to_dict(stored) == {"a": None, "b": 1}


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.7:40000", ("203.0.113.7", 40000)),
        ("peer.example.net:1", ("peer.example.net", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[::1]:9", ("::1", 9)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "",
        ":",
        "host:",
        "host:00000x",
        "host:123456",
        "-host:1",
        "host-:1",
        "[::1]:",
        "[::1]x:1",
        "h..x:1",
    ],
)
def test_split_address_refuses(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


def test_docs_cover_every_op_event_and_code() -> None:
    text = (Path(__file__).parent.parent / "docs" / "ipc.md").read_text(encoding="utf-8")
    for name in [*OPS, *EVENT_NAMES, *ERROR_CODES, EVENTS_DROPPED]:
        assert f"`{name}`" in text, name
    for cls, fields in SCHEMAS.items():
        for f in fields:
            assert f"`{f.name}`" in text, (cls.OP, f.name)
            if f.compact is not None:
                assert f"`{f.compact}`" in text, (cls.OP, f.compact)


def test_a_coordinator_token_has_the_size_of_a_connect_token() -> None:
    assert TOKEN_HEX_DIGITS == 2 * TOKEN_SIZE
