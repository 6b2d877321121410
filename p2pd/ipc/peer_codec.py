"""Game events between daemons as msgpack payloads (types 0x0004-0x0007; positions below).

A payload is one msgpack map with one-letter keys (below); fields at their
default value are left out. The receiving daemon decodes it with the same
checks as a client request (a peer is no more trusted than a client), plus
unknown keys are refused. Decoded events carry ``id=0`` and ``to=()``.

=====================  ==========================  ===================================
packet type            event                       keys
=====================  ==========================  ===================================
POSITION_UPDATE 0x03   Position                    m map, x, y, d dir, s speed (150),
                                                   v moving (false), t tick
VISUAL_EFFECT 0x04     VisualEffect                e effect_id, p params ({}), m map,
                                                   x, y, t start_ms, l duration_ms,
                                                   o owner
CHAT_MESSAGE 0x05      Chat                        t text, c channel ("local")
AI_INTERACTION 0x06    AiInteraction               i interaction_id, a ai_entity_id,
                                                   u player_id, p params ({}),
                                                   r result (nil)
ENVIRONMENTAL 0x07     Environment (c = 0)         c 0, k kind, n key, v value,
                                                   s version
ENVIRONMENTAL 0x07     LegendData (c = 1)          c 1, a ai_entity_id, k kind,
                                                   d data, s version
=====================  ==========================  ===================================

(defaults in parentheses; such a key is left out when the value is the
default, and a receiver accepts it either way.)

Positions do not travel in this form: the daemon hands a Position to the
session as a :class:`~p2pd.channels.position_codec.PositionState`
(``Endpoint.send_position``), which goes on the wire in the binary position
coding of :mod:`p2pd.channels.position_codec` (a full state, 23 bytes on
"prontera" with an epoch tick, then deltas against what the peer
acknowledged, 4 bytes for a step), and comes back as a ``PositionReceived``
event. The Position row above is what :func:`encode_peer_event` and
:func:`decode_peer_event_untrusted` still do with a Position (about 35 bytes
for a walking one: see tests/test_ipc_messages.py); no daemon sends it.

:func:`encode_peer_event` raises IpcError('too_large') for a payload above
``max_size``, by default :data:`MAX_PEER_PAYLOAD`, the session's default
``max_message_size`` (64 KiB): what the reliable channels carry, in fragments
when larger than a datagram. An effect travels unreliably and must fit one
datagram, 1097 bytes beside the acknowledgements; the session refuses a
larger one with ``MessageTooLarge``, which the daemon passes on to the
client as ``too_large`` too.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from p2pd.ipc.errors import ErrorCode, IpcError
from p2pd.ipc.fields import read_fields, write_fields
from p2pd.ipc.framing import unpack_map_untrusted
from p2pd.ipc.messages import (
    SCHEMAS,
    AiInteraction,
    Chat,
    Environment,
    GameEvent,
    LegendData,
    Position,
    VisualEffect,
)
from p2pd.session.config import SessionConfig
from p2pd.wire.types import PacketType

MAX_PEER_PAYLOAD: Final = SessionConfig().max_message_size
ENVIRONMENT_CLASS_KEY: Final = "c"
ENVIRONMENT_CLASS: Final = 0  # value of "c" for Environment
LEGEND_CLASS: Final = 1  # value of "c" for LegendData

PACKET_TYPES: Final[dict[type[GameEvent], PacketType]] = {
    Position: PacketType.POSITION_UPDATE,
    VisualEffect: PacketType.VISUAL_EFFECT,
    Chat: PacketType.CHAT_MESSAGE,
    AiInteraction: PacketType.AI_INTERACTION,
    Environment: PacketType.ENVIRONMENTAL,
    LegendData: PacketType.ENVIRONMENTAL,
}
_CLASS_BY_TYPE: Final[dict[int, type[GameEvent]]] = {
    int(PacketType.POSITION_UPDATE): Position,
    int(PacketType.VISUAL_EFFECT): VisualEffect,
    int(PacketType.CHAT_MESSAGE): Chat,
    int(PacketType.AI_INTERACTION): AiInteraction,
}
_CLASS_BY_ENV: Final[dict[int, type[GameEvent]]] = {
    ENVIRONMENT_CLASS: Environment,
    LEGEND_CLASS: LegendData,
}
_ENVIRONMENTAL = int(PacketType.ENVIRONMENTAL)
_DISCRIMINATOR = (ENVIRONMENT_CLASS_KEY,)


def encode_peer_event(
    event: GameEvent, max_size: int = MAX_PEER_PAYLOAD
) -> tuple[PacketType, bytes]:
    """(packet type, payload) for sending ``event`` to peers; ``id`` and ``to``
    stay local. Raises IpcError('too_large') above ``max_size`` bytes."""
    cls = type(event)
    body: dict[str, Any] = {}
    if cls is Environment:
        body[ENVIRONMENT_CLASS_KEY] = ENVIRONMENT_CLASS
    elif cls is LegendData:
        body[ENVIRONMENT_CLASS_KEY] = LEGEND_CLASS
    body.update(write_fields(event, SCHEMAS[cls], compact=True))
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    if len(payload) > max_size:
        raise IpcError(
            ErrorCode.TOO_LARGE,
            f"{cls.OP} event of {len(payload)} bytes exceeds the {max_size} bytes"
            " one datagram carries",
        )
    return PACKET_TYPES[cls], payload


def decode_peer_event_untrusted(packet_type: int, payload: bytes) -> GameEvent:
    """A peer's game event. Raises only IpcError: ``bad_frame`` for an unknown
    packet type or a payload that is not a msgpack map, ``bad_field`` (naming
    the field by its full name) for anything wrong inside it."""
    msg = unpack_map_untrusted(payload)
    cls = _CLASS_BY_TYPE.get(packet_type)
    extra: tuple[str, ...] = ()
    if cls is None:
        if packet_type != _ENVIRONMENTAL:
            raise IpcError(ErrorCode.BAD_FRAME, f"packet type {packet_type!r} is not a game event")
        which = msg.get(ENVIRONMENT_CLASS_KEY)
        cls = _CLASS_BY_ENV.get(which) if type(which) is int else None
        if cls is None:
            raise IpcError(
                ErrorCode.BAD_FIELD,
                f"{ENVIRONMENT_CLASS_KEY} must be {ENVIRONMENT_CLASS} (environment)"
                f" or {LEGEND_CLASS} (legend)",
                ENVIRONMENT_CLASS_KEY,
            )
        extra = _DISCRIMINATOR
    values = read_fields(msg, SCHEMAS[cls], compact=True, also_allowed=extra)
    return cls(id=0, **values)
