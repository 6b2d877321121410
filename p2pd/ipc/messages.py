"""Client requests as frozen dataclasses, their one parser, and the two reply shapes.

A request is a map ``{"op": <name>, "id": <0..2^32-1>, <fields>...}`` with the
fields at the top level next to ``op`` and ``id``. The field tables here (one
tuple of :class:`~p2pd.ipc.fields.Field` per class, in :data:`SCHEMAS`) are the
single source of truth for names, types, ranges, defaults and the compact keys
of peer payloads; docs/ipc.md describes them for shim authors.

Game events (Position ... LegendData) are what the game sends about its own
player; the same classes come back out of
:func:`p2pd.ipc.peer_codec.decode_peer_event_untrusted` for what peers send.
Maps (effect parameters, environment values, legend data) are stored as
tuples of (key, value) pairs sorted by key, so every object is hashable;
:func:`~p2pd.ipc.fields.map_to_dict` turns them back into dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from p2pd.ipc.errors import ErrorCode, IpcError
from p2pd.ipc.fields import (
    I63_MAX,
    U32_MAX,
    Field,
    ScalarMap,
    bad_field,
    check_address,
    check_bool,
    check_choice,
    check_hex_key,
    check_int,
    check_key_list,
    check_scalar_map,
    check_str,
    map_to_dict,
    read_fields,
    shorten,
    write_fields,
)

# -- limits ------------------------------------------------------------------------

MAX_CELL: Final = 1023
MIN_SPEED: Final = 20  # ms per cell; the server's clamp
MAX_SPEED: Final = 1000
DEFAULT_SPEED: Final = 150
MAP_NAME_PATTERN: Final = "[a-z0-9_@.-]{1,32}"
MAX_TO: Final = 64  # peers one event may be addressed to
MAX_PARAMS: Final = 16  # entries of params/value/result maps
MAX_PARAM_STR: Final = 256  # UTF-8 bytes of a string value in those maps
MAX_LEGEND_ENTRIES: Final = 32
MAX_LEGEND_STR: Final = 4096
MAX_RESULT_STR: Final = 4096
MAX_CHAT_BYTES: Final = 512
MAX_DURATION_MS: Final = 600_000
MAX_CLIENT_NAME: Final = 64
MAX_ENV_KEY: Final = 64

EVENT_NAMES: Final = (
    "position",
    "effect",
    "chat",
    "ai_interaction",
    "environment",
    "legend",
    "hidden",
    "peer_joined",
    "peer_left",
    "link",
    "coordinator",
    "anomaly",
    "error",
)
LOG_LEVELS: Final = ("debug", "info", "warn", "error")
CHAT_CHANNELS: Final = ("local",)
ENVIRONMENT_KINDS: Final = ("weather", "time", "ambient", "sound")
LEGEND_KINDS: Final = ("info", "state", "effect", "dialogue")

# -- requests -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    OP: ClassVar[str] = "hello"
    id: int
    token: str  # 64 hex digits, lower case
    client: str  # free-form client name and version, for logs


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    OP: ClassVar[str] = "status"
    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    OP: ClassVar[str] = "stats"
    id: int
    history: int = 0  # the newest seconds of the per-second history wanted


@dataclass(frozen=True, slots=True, kw_only=True)
class Peers:
    OP: ClassVar[str] = "peers"
    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Nat:
    OP: ClassVar[str] = "nat"
    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    OP: ClassVar[str] = "subscribe"
    id: int
    events: tuple[str, ...]  # sorted, unique; ("*",) for all


@dataclass(frozen=True, slots=True, kw_only=True)
class Connect:
    OP: ClassVar[str] = "connect"
    id: int
    address: str  # "host:port" or "[v6]:port"; see fields.split_address
    key: str  # the peer's static public key, 64 hex digits, lower case


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorToken:
    """A connect token for the coordinator, from the game (its server mints them)."""

    OP: ClassVar[str] = "coordinator_token"
    id: int
    token: str  # TOKEN_HEX_DIGITS hex digits


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnect:
    OP: ClassVar[str] = "disconnect"
    id: int
    peer: str  # 64 hex digits, lower case


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLogLevel:
    OP: ClassVar[str] = "set_log_level"
    id: int
    level: str  # one of LOG_LEVELS


# -- game events (spec §4, §9) ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    OP: ClassVar[str] = "position"
    id: int
    map: str
    x: int
    y: int
    dir: int  # 0..7
    speed: int = DEFAULT_SPEED  # ms per cell
    moving: bool = False
    tick: int  # the client's millisecond clock
    hidden: bool = False  # this player is hidden: nothing positional goes to peers
    to: tuple[str, ...] = ()  # peer keys; () = every connected peer


@dataclass(frozen=True, slots=True, kw_only=True)
class VisualEffect:
    OP: ClassVar[str] = "effect"
    id: int
    effect_id: int
    params: ScalarMap = ()
    map: str
    x: int
    y: int
    start_ms: int
    duration_ms: int
    owner: int
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Chat:
    OP: ClassVar[str] = "chat"
    id: int
    text: str
    channel: str = "local"
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AiInteraction:
    OP: ClassVar[str] = "ai_interaction"
    id: int
    interaction_id: int
    ai_entity_id: int
    player_id: int
    params: ScalarMap = ()
    result: str | ScalarMap | None = None
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    OP: ClassVar[str] = "environment"
    id: int
    kind: str  # one of ENVIRONMENT_KINDS
    key: str
    value: ScalarMap
    version: int
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LegendData:
    OP: ClassVar[str] = "legend"
    id: int
    ai_entity_id: int
    kind: str  # one of LEGEND_KINDS
    data: ScalarMap
    version: int
    to: tuple[str, ...] = ()


# -- game-state synchronization and verification (spec 4.1, 5.2, 10.2; p2pd.sync) ----


@dataclass(frozen=True, slots=True, kw_only=True)
class Render:
    """Where to draw peers' players now (the interpolation buffer)."""

    OP: ClassVar[str] = "render"
    id: int
    peers: tuple[str, ...] = ()  # () = every peer with a known position


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPosition:
    """The game server's position of a peer's player (authoritative correction)."""

    OP: ClassVar[str] = "server_position"
    id: int
    peer: str
    map: str
    x: int
    y: int
    speed: int = 0  # ms per cell as the server has it; 0: not known
    warp: bool = False  # the server moved the player at once (warp, teleport, respawn)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyInteraction:
    """The server's outcome of a peer's AI interaction: confirms or rejects its claim."""

    OP: ClassVar[str] = "verify_interaction"
    id: int
    peer: str
    ai_entity_id: int
    interaction_id: int
    result: str | ScalarMap | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedState:
    """The environment and AI Legend values the daemon holds now."""

    OP: ClassVar[str] = "shared_state"
    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSnapshot:
    """Ask peers for their full shared state (spec 10.2)."""

    OP: ClassVar[str] = "request_snapshot"
    id: int
    peers: tuple[str, ...] = ()


SyncRequest: TypeAlias = Render | ServerPosition | VerifyInteraction | SharedState | RequestSnapshot
SYNC_REQUEST_CLASSES: Final = (Render, ServerPosition, VerifyInteraction, SharedState,
                               RequestSnapshot)

GameEvent: TypeAlias = Position | VisualEffect | Chat | AiInteraction | Environment | LegendData
Request: TypeAlias = (
    Hello | Status | Stats | Peers | Nat | Subscribe | Connect | Disconnect | SetLogLevel
    | CoordinatorToken | GameEvent | SyncRequest
)
GAME_EVENT_CLASSES: Final = (Position, VisualEffect, Chat, AiInteraction, Environment, LegendData)

# seconds of per-second statistics the daemon keeps (stats history)
MAX_STATS_HISTORY: Final = 300

# a connect token (p2pd.coordinator.credentials.TOKEN_SIZE bytes) in hex
TOKEN_HEX_DIGITS: Final = 2 * 141

# -- field tables -------------------------------------------------------------------------


def _check_events(value: Any, field: str) -> tuple[str, ...]:
    if type(value) is not list and type(value) is not tuple:
        raise bad_field(field, "must be an array of event names")
    if len(value) > 2 * len(EVENT_NAMES):
        raise bad_field(field, f"must have at most {2 * len(EVENT_NAMES)} entries")
    names: set[str] = set()
    for i, item in enumerate(value):
        if type(item) is not str or (item != "*" and item not in EVENT_NAMES):
            raise bad_field(f"{field}.{i}", f"must be * or one of {', '.join(EVENT_NAMES)}")
        names.add(item)
    if "*" in names and len(names) > 1:
        raise bad_field(field, 'must be ["*"] alone or a list of event names')
    return tuple(sorted(names))


_check_params = check_scalar_map(MAX_PARAMS, MAX_PARAM_STR)
_check_result_str = check_str(0, MAX_RESULT_STR, allow_control=True)


def _check_result(value: Any, field: str) -> str | ScalarMap | None:
    if value is None:
        return None
    if type(value) is str:
        return _check_result_str(value, field)  # type: ignore[no-any-return]
    if type(value) is dict:
        return _check_params(value, field)  # type: ignore[no-any-return]
    raise bad_field(field, "must be a string, a map or nil")


def _map_wire(value: ScalarMap) -> dict[str, Any]:
    return map_to_dict(value)


def _result_wire(value: str | ScalarMap | None) -> Any:
    return map_to_dict(value) if isinstance(value, tuple) else value


def _list_wire(value: tuple[str, ...]) -> list[str]:
    return list(value)


_U32 = check_int(0, U32_MAX)
_I63 = check_int(0, I63_MAX)
_CELL = check_int(0, MAX_CELL)
_MAP_NAME = check_str(1, 32, pattern=MAP_NAME_PATTERN)
_TO = Field("to", check_key_list(MAX_TO), (), None, _list_wire)
_PEERS = Field("peers", check_key_list(MAX_TO), (), None, _list_wire)


def _check_server_speed(value: Any, field: str) -> int:
    speed: int = check_int(0, MAX_SPEED)(value, field)
    if 0 < speed < MIN_SPEED:
        raise bad_field(field, f"must be 0 (not known) or in {MIN_SPEED}..{MAX_SPEED}, "
                               f"got {speed}")
    return speed
_PARAMS = Field("params", _check_params, (), "p", _map_wire)

# (name, check, default, compact key in peer payloads, to wire form)
SCHEMAS: Final[Mapping[type[Request], tuple[Field, ...]]] = {
    Hello: (
        Field("token", check_hex_key),
        Field("client", check_str(0, MAX_CLIENT_NAME)),
    ),
    Status: (),
    Stats: (Field("history", check_int(0, MAX_STATS_HISTORY), 0),),
    Peers: (),
    Nat: (),
    Subscribe: (Field("events", _check_events, to_wire=_list_wire),),
    Connect: (Field("address", check_address), Field("key", check_hex_key)),
    Disconnect: (Field("peer", check_hex_key),),
    CoordinatorToken: (Field("token", check_str(TOKEN_HEX_DIGITS, TOKEN_HEX_DIGITS,
                                                 pattern="[0-9a-fA-F]+")),),
    SetLogLevel: (Field("level", check_choice(*LOG_LEVELS)),),
    Position: (
        Field("map", _MAP_NAME, compact="m"),
        Field("x", _CELL, compact="x"),
        Field("y", _CELL, compact="y"),
        Field("dir", check_int(0, 7), compact="d"),
        Field("speed", check_int(MIN_SPEED, MAX_SPEED), DEFAULT_SPEED, "s"),
        Field("moving", check_bool, False, "v"),
        Field("tick", _I63, compact="t"),
        Field("hidden", check_bool, False),  # never sent to peers (docs/ipc.md 6.7)
        _TO,
    ),
    VisualEffect: (
        Field("effect_id", _U32, compact="e"),
        _PARAMS,
        Field("map", _MAP_NAME, compact="m"),
        Field("x", _CELL, compact="x"),
        Field("y", _CELL, compact="y"),
        Field("start_ms", _I63, compact="t"),
        Field("duration_ms", check_int(0, MAX_DURATION_MS), compact="l"),
        Field("owner", _U32, compact="o"),
        _TO,
    ),
    Chat: (
        Field("text", check_str(1, MAX_CHAT_BYTES), compact="t"),
        Field("channel", check_choice(*CHAT_CHANNELS), "local", "c"),
        _TO,
    ),
    AiInteraction: (
        Field("interaction_id", _U32, compact="i"),
        Field("ai_entity_id", _U32, compact="a"),
        Field("player_id", _U32, compact="u"),
        _PARAMS,
        Field("result", _check_result, None, "r", _result_wire),
        _TO,
    ),
    Environment: (
        Field("kind", check_choice(*ENVIRONMENT_KINDS), compact="k"),
        Field("key", check_str(1, MAX_ENV_KEY), compact="n"),
        Field("value", check_scalar_map(MAX_PARAMS, MAX_PARAM_STR), compact="v", to_wire=_map_wire),
        Field("version", _I63, compact="s"),
        _TO,
    ),
    LegendData: (
        Field("ai_entity_id", _U32, compact="a"),
        Field("kind", check_choice(*LEGEND_KINDS), compact="k"),
        Field(
            "data",
            check_scalar_map(MAX_LEGEND_ENTRIES, MAX_LEGEND_STR),
            compact="d",
            to_wire=_map_wire,
        ),
        Field("version", _I63, compact="s"),
        _TO,
    ),
    Render: (_PEERS,),
    ServerPosition: (
        Field("peer", check_hex_key),
        Field("map", _MAP_NAME),
        Field("x", _CELL),
        Field("y", _CELL),
        Field("speed", _check_server_speed, 0),
        Field("warp", check_bool, False),
    ),
    VerifyInteraction: (
        Field("peer", check_hex_key),
        Field("ai_entity_id", _U32),
        Field("interaction_id", _U32),
        Field("result", _check_result, None, None, _result_wire),
    ),
    SharedState: (),
    RequestSnapshot: (_PEERS,),
}
OPS: Final[Mapping[str, type[Request]]] = {cls.OP: cls for cls in SCHEMAS}
_ENVELOPE = ("op", "id")

# -- parsing ----------------------------------------------------------------------------


def request_id_of(msg: Mapping[str, Any]) -> int | None:
    """The request's id if it has a valid one, else None: what an error reply
    echoes when the request itself was refused."""
    if not isinstance(msg, Mapping):
        return None
    value = msg.get("id")
    if type(value) is int and 0 <= value <= U32_MAX:
        return value
    return None


def parse_request_untrusted(msg: Mapping[str, Any]) -> Request:
    """Validate one decoded client message into its request dataclass.

    Raises IpcError: ``bad_request`` (field ``id`` or ``op``) when the id is
    missing or not in 0..2^32-1 or the op is missing or unknown, ``bad_field``
    (naming the field) for any problem with the other fields, including a
    field the op does not have.
    """
    if not isinstance(msg, Mapping):
        raise IpcError(ErrorCode.BAD_FRAME, "a request is a map")
    if "id" not in msg:
        raise IpcError(ErrorCode.BAD_REQUEST, "id is missing", "id")
    rid = request_id_of(msg)
    if rid is None:
        raise IpcError(ErrorCode.BAD_REQUEST, "id must be an integer in 0..4294967295", "id")
    if "op" not in msg:
        raise IpcError(ErrorCode.BAD_REQUEST, "op is missing", "op")
    op = msg["op"]
    cls = OPS.get(op) if type(op) is str else None
    if cls is None:
        shown = repr(shorten(op)) if type(op) is str else "a non-string"
        raise IpcError(ErrorCode.BAD_REQUEST, f"unknown op {shown}", "op")
    values = read_fields(msg, SCHEMAS[cls], also_allowed=_ENVELOPE)
    return cls(id=rid, **values)


def reply_ok(request_id: int, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"id": id, "ok": true, "result": {...}}``."""
    return {"id": request_id, "ok": True, "result": dict(result) if result is not None else {}}


def reply_error(request_id: int | None, error: IpcError) -> dict[str, Any]:
    """``{"id": id, "ok": false, "error": {"code", "message", "field"?}}``; ``request_id``
    is None (sent as nil) when the request had no valid id (:func:`request_id_of`)."""
    return {"id": request_id, "ok": False, "error": error.to_dict()}


def request_to_message(request: Request) -> dict[str, Any]:
    """The wire map of a request (what a client sends), defaults left out.

    The inverse of :func:`parse_request_untrusted`; for test clients and tools.
    """
    out: dict[str, Any] = {"op": request.OP, "id": request.id}
    out.update(write_fields(request, SCHEMAS[type(request)]))
    return out
