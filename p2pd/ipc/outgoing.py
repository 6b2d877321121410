"""What the daemon sends a client: replies to requests and pushed events.

Replies::

    {"id": <request id>, "ok": true, "result": {...}}
    {"id": <request id or nil>, "ok": false,
     "error": {"code": "...", "message": "...", "field": "..."}}   # field optional

Pushed events carry no id: ``{"event": "<name>", <fields>...}``. The game
events (position, effect, chat, ai_interaction, environment, legend) have the
request's fields, with every default written out, plus ``"from"``: the
sending peer's key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from p2pd.ipc.errors import EVENTS_DROPPED
from p2pd.ipc.messages import EVENT_NAMES, SCHEMAS, GameEvent, reply_error, reply_ok

__all__ = [
    "anomaly_event",
    "error_event",
    "event_message",
    "events_dropped_event",
    "game_event_to_message",
    "link_event",
    "peer_joined_event",
    "peer_left_event",
    "reply_error",  # defined in p2pd.ipc.messages
    "reply_ok",
]


def event_message(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A pushed event; ``name`` must be one of EVENT_NAMES (a ValueError
    otherwise: that is a bug in the daemon, not bad input)."""
    if name not in EVENT_NAMES:
        raise ValueError(f"unknown event name {name!r}")
    if "event" in fields:
        raise ValueError("an event's fields cannot include 'event'")
    out: dict[str, Any] = {"event": name}
    out.update(fields)
    return out


def game_event_to_message(event: GameEvent, from_peer: str) -> dict[str, Any]:
    """A peer's game event as pushed to the client: every field (defaults
    included, maps as maps) except ``id`` and ``to``, plus ``from``."""
    out: dict[str, Any] = {"event": event.OP, "from": from_peer}
    for f in SCHEMAS[type(event)]:
        if f.compact is not None:  # the fields that travel between peers
            out[f.name] = f.to_wire(getattr(event, f.name))
    return out


def hidden_event(peer: str, hidden: bool) -> dict[str, Any]:
    """The peer's player is hidden (stop drawing it) or shown again (spec 5.2)."""
    return event_message("hidden", {"from": peer, "hidden": hidden})


def peer_joined_event(peer: str, address: str) -> dict[str, Any]:
    return event_message("peer_joined", {"peer": peer, "address": address})


def peer_left_event(peer: str, reason: str) -> dict[str, Any]:
    return event_message("peer_left", {"peer": peer, "reason": reason})


def link_event(peer: str, state: str, rtt_ms: float | None, **extra: Any) -> dict[str, Any]:
    """``extra``: ``address`` with state ``moved``, ``reason`` with ``failed``."""
    return event_message("link", {"peer": peer, "state": state, "rtt_ms": rtt_ms, **extra})


def coordinator_event(state: str, degraded: bool, detail: str) -> dict[str, Any]:
    return event_message("coordinator", {"state": state, "degraded": degraded,
                                         "detail": detail})


def anomaly_event(peer: str, score: float, reason: str, detail: str,
                  offences: Mapping[str, int]) -> dict[str, Any]:
    """A peer flagged as cheating (spec 5.2): its data dropped, its link closed."""
    return event_message("anomaly", {"peer": peer, "score": score, "reason": reason,
                                     "detail": detail, "offences": dict(offences)})


def error_event(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return event_message("error", {"code": code, "message": message, **extra})


def events_dropped_event(count: int) -> dict[str, Any]:
    """Sent once a slow client catches up: ``count`` pushed events were dropped."""
    return error_event(
        EVENTS_DROPPED,
        f"{count} pushed events were dropped because the client did not read them in time",
        count=count,
    )
