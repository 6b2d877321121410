"""The local IPC between p2pd and the game client's shim, sans-IO.

- :mod:`p2pd.ipc.errors`: :class:`IpcError`, the one error every parser raises;
- :mod:`p2pd.ipc.framing`: 4-byte length + msgpack map, :class:`FrameDecoder`;
- :mod:`p2pd.ipc.fields`: field validators and the schema reader;
- :mod:`p2pd.ipc.messages`: request dataclasses, :func:`parse_request_untrusted`;
- :mod:`p2pd.ipc.peer_codec`: game events as daemon-to-daemon payloads;
- :mod:`p2pd.ipc.outgoing`: replies and pushed events.

No sockets and no clocks here: the daemon's server feeds bytes in and writes
the encoded replies out. docs/ipc.md is the client's view of all of it.
"""

from p2pd.ipc.errors import ERROR_CODES, EVENTS_DROPPED, ErrorCode, IpcError
from p2pd.ipc.fields import Scalar, ScalarMap, map_from_dict, map_to_dict, split_address
from p2pd.ipc.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_DEPTH,
    FrameDecoder,
    encode_message,
    unpack_map_untrusted,
)
from p2pd.ipc.messages import (
    EVENT_NAMES,
    GAME_EVENT_CLASSES,
    AiInteraction,
    Chat,
    Connect,
    Disconnect,
    Environment,
    GameEvent,
    Hello,
    LegendData,
    Nat,
    Peers,
    Position,
    Request,
    SetLogLevel,
    Stats,
    Status,
    Subscribe,
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

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ERROR_CODES",
    "EVENTS_DROPPED",
    "EVENT_NAMES",
    "GAME_EVENT_CLASSES",
    "MAX_DEPTH",
    "MAX_PEER_PAYLOAD",
    "AiInteraction",
    "Chat",
    "Connect",
    "Disconnect",
    "Environment",
    "ErrorCode",
    "FrameDecoder",
    "GameEvent",
    "Hello",
    "IpcError",
    "LegendData",
    "Nat",
    "Peers",
    "Position",
    "Request",
    "Scalar",
    "ScalarMap",
    "SetLogLevel",
    "Stats",
    "Status",
    "Subscribe",
    "VisualEffect",
    "decode_peer_event_untrusted",
    "encode_message",
    "encode_peer_event",
    "error_event",
    "event_message",
    "events_dropped_event",
    "game_event_to_message",
    "link_event",
    "map_from_dict",
    "map_to_dict",
    "parse_request_untrusted",
    "peer_joined_event",
    "peer_left_event",
    "reply_error",
    "reply_ok",
    "request_id_of",
    "request_to_message",
    "split_address",
    "unpack_map_untrusted",
]
