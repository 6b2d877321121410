"""Shared latest-value state (spec 9, 10.2): the AI-influenced environment and
AI Legend data, versioned.

Every value lives under its key, (``environment``, kind, key) or (``legend``,
ai_entity_id, kind), with the version its author gave it. A value replaces
the stored one only with a higher version; an equal or lower version is stale
and dropped. The store holds what this daemon's client sent and what peers
sent; it is what a newcomer gets from each of its peers as soon as their link
is up (a *snapshot*), what goes to every peer again at a low rate so that
drift and missed values are corrected, and what a peer gets when it asks
(a snapshot request: an ENVIRONMENTAL payload ``{"c": 2}``, see
docs/protocol.md). At most ``limit`` keys are kept; the least recently
updated is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Final

import msgpack

from p2pd.ipc.messages import Environment, LegendData

SNAPSHOT_REQUEST_CLASS: Final = 2  # "c" of an ENVIRONMENTAL payload asking for a snapshot
SNAPSHOT_REQUEST: Final[bytes] = msgpack.packb({"c": SNAPSHOT_REQUEST_CLASS})
StateEvent = Environment | LegendData
StateKey = tuple[str, int | str, str]


def state_key(event: StateEvent) -> StateKey:
    if isinstance(event, Environment):
        return ("environment", event.kind, event.key)
    return ("legend", event.ai_entity_id, event.kind)


def is_snapshot_request(payload: bytes) -> bool:
    """Whether an ENVIRONMENTAL payload is exactly the snapshot request (a cheap
    byte comparison: nothing else is that payload)."""
    return bytes(payload) == SNAPSHOT_REQUEST


class StateStore:
    __slots__ = ("_values", "limit", "stale", "stored")

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._values: OrderedDict[StateKey, StateEvent] = OrderedDict()
        self.stored = 0  # values taken
        self.stale = 0  # values dropped: not newer than the stored one

    def __len__(self) -> int:
        return len(self._values)

    def offer(self, event: StateEvent) -> bool:
        """Keep ``event`` if it is newer than what is stored under its key."""
        key = state_key(event)
        old = self._values.get(key)
        if old is not None and event.version <= old.version:
            self.stale += 1
            return False
        if old is not None:
            del self._values[key]
        self._values[key] = replace(event, id=0, to=())
        while len(self._values) > self.limit:
            self._values.popitem(last=False)
        self.stored += 1
        return True

    def get(self, key: StateKey) -> StateEvent | None:
        return self._values.get(key)

    def values(self) -> list[StateEvent]:
        """Every stored value, least recently updated first."""
        return list(self._values.values())

