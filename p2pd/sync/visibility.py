"""Information hiding (spec 5.2): whether this player is hidden, as peers learn it.

A player the game hides (a hiding or cloaking skill, a GM's invisibility)
must not be shown to other players. Its client says so with ``position``'s
``hidden`` (docs/ipc.md 6.7); from then on its daemon sends peers neither its
positions nor its effects, and tells every peer once with a **visibility
notice**: an ENVIRONMENTAL message whose payload is exactly one of two msgpack
maps, ``{"c": 3, "h": true}`` (hidden) or ``{"c": 3, "h": false}`` (shown
again), under the latest-value key BLAKE2b-128 of ``"visibility"`` so that the
newer notice supersedes an older one still unacknowledged (docs/protocol.md
13.3). A peer that gets ``hidden`` stops drawing the player and tells its
client (the ``hidden`` event); positions and effects of a hidden peer are
neither pushed nor drawn until ``shown``.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgpack

VISIBILITY_CLASS: Final = 3  # "c" of an ENVIRONMENTAL payload that is a visibility notice
HIDDEN_NOTICE: Final[bytes] = msgpack.packb({"c": VISIBILITY_CLASS, "h": True})
SHOWN_NOTICE: Final[bytes] = msgpack.packb({"c": VISIBILITY_CLASS, "h": False})
VISIBILITY_KEY: Final[bytes] = hashlib.blake2b(b"visibility", digest_size=16).digest()


def notice(hidden: bool) -> bytes:
    return HIDDEN_NOTICE if hidden else SHOWN_NOTICE


def read_notice(payload: bytes) -> bool | None:
    """True (hidden) or False (shown) for a visibility notice, None for any
    other ENVIRONMENTAL payload (a byte comparison: nothing else is either)."""
    data = bytes(payload)
    if data == HIDDEN_NOTICE:
        return True
    if data == SHOWN_NOTICE:
        return False
    return None
