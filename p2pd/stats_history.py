"""Per-second history of the daemon's statistics (spec §8.2, §8.3), sans-IO.

The node hands :meth:`StatsHistory.record` its cumulative counters (a
:class:`Totals`) once a second; the history keeps what changed in each second
in a ring of at most ``capacity`` seconds (five minutes by default), so that a
client (``p2pctl top``, the game's RenderHook overlay) can draw a bandwidth
graph over the last minutes and the packet flow of each peer and each event
kind without polling faster than once a second. Nothing here reads a clock:
``now`` comes from the caller, like everywhere in the core.

Each sample holds rates: what changed since the previous sample divided by
the whole seconds between them (one, unless the caller was late), rounded to
an integer. Counters that went down (a peer's session restarted) count as
zero. Peers are named in samples by the first 16 hex digits of their key
(what ``p2pctl`` shows), to keep the samples small.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HISTORY_SECONDS = 300  # five minutes of samples
PEER_ID_DIGITS = 16  # hex digits of a peer key that name it in a sample


@dataclass(frozen=True, slots=True)
class PeerTotals:
    """One peer link's cumulative counters and its state now."""

    path: str  # direct or relay
    role: str  # active, backup or manual
    rtt_ms: float | None
    loss: float
    anomalous: bool
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    retransmissions: int = 0
    drops: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    """The daemon's cumulative counters at one moment."""

    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    events_sent: Mapping[str, int] = field(default_factory=dict)
    events_received: Mapping[str, int] = field(default_factory=dict)
    rate_limited: Mapping[str, int] = field(default_factory=dict)
    auth_failures: int = 0
    drops: int = 0
    invalid_events: int = 0
    rate_excess: int = 0  # authentic packets dropped beyond a peer's allowance
    internal_errors: int = 0
    peers: Mapping[bytes, PeerTotals] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeerSecond:
    path: str
    role: str
    rtt_ms: float | None
    loss: float
    anomalous: bool
    idle_s: int  # whole seconds since a packet last came from this peer
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    retransmissions: int
    drops: int

    def to_wire(self) -> dict[str, Any]:
        return {"path": self.path, "role": self.role, "rtt_ms": self.rtt_ms, "loss": self.loss,
                "anomalous": self.anomalous, "idle_s": self.idle_s,
                "in_bytes": self.bytes_in, "out_bytes": self.bytes_out,
                "in_packets": self.packets_in, "out_packets": self.packets_out,
                "retransmissions": self.retransmissions, "drops": self.drops}


@dataclass(frozen=True, slots=True)
class Second:
    """What happened in one second (rates per second)."""

    t: int  # the second (int of the core's now) that the sample closes
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    events_sent: Mapping[str, int]
    events_received: Mapping[str, int]
    rate_limited: Mapping[str, int]
    auth_failures: int
    drops: int
    invalid_events: int
    rate_excess: int
    internal_errors: int
    peers: Mapping[str, PeerSecond]

    def to_wire(self) -> dict[str, Any]:
        """The sample as docs/ipc.md 11.3 describes it (maps of kinds list only
        the kinds that occurred)."""
        return {
            "t": self.t,
            "in_bytes": self.bytes_in, "out_bytes": self.bytes_out,
            "in_packets": self.packets_in, "out_packets": self.packets_out,
            "events_sent": dict(self.events_sent),
            "events_received": dict(self.events_received),
            "rate_limited": dict(self.rate_limited),
            "errors": {"auth": self.auth_failures, "drops": self.drops,
                       "invalid_events": self.invalid_events, "rate_excess": self.rate_excess,
                       "internal": self.internal_errors},
            "peers": {name: peer.to_wire() for name, peer in self.peers.items()},
        }


def peer_id(key: bytes) -> str:
    """How a peer is named in samples: the first 16 hex digits of its key."""
    return key.hex()[:PEER_ID_DIGITS]


class StatsHistory:
    """A bounded ring of per-second samples made from cumulative totals."""

    def __init__(self, capacity: int = HISTORY_SECONDS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.samples: deque[Second] = deque(maxlen=capacity)
        self._last: Totals | None = None
        self._last_t: int | None = None
        self._heard: dict[bytes, int] = {}  # peer -> the last second it sent anything

    def record(self, now: float, totals: Totals) -> Second | None:
        """Close the second that ``now`` falls in (the first call only sets the
        baseline; a second call within the same second is ignored: its changes go
        into the next sample)."""
        t = int(now)
        last, last_t = self._last, self._last_t
        if last_t is not None and t <= last_t:
            return None
        self._last, self._last_t = totals, t
        if last is None or last_t is None:
            for key in totals.peers:
                self._heard[key] = t
            return None
        span = t - last_t

        def rate(new: int, old: int) -> int:
            return max(new - old, 0) // span if span > 1 else max(new - old, 0)

        def kinds(new: Mapping[str, int], old: Mapping[str, int]) -> dict[str, int]:
            return {kind: n for kind, value in sorted(new.items())
                    if (n := rate(value, old.get(kind, 0)))}

        peers: dict[str, PeerSecond] = {}
        heard = self._heard
        for key, now_peer in totals.peers.items():
            before = last.peers.get(key) or PeerTotals(now_peer.path, now_peer.role, None,
                                                         0.0, False)
            if key not in heard or now_peer.packets_in > before.packets_in:
                heard[key] = t
            peers[peer_id(key)] = PeerSecond(
                path=now_peer.path, role=now_peer.role, rtt_ms=now_peer.rtt_ms,
                loss=now_peer.loss, anomalous=now_peer.anomalous, idle_s=t - heard[key],
                bytes_in=rate(now_peer.bytes_in, before.bytes_in),
                bytes_out=rate(now_peer.bytes_out, before.bytes_out),
                packets_in=rate(now_peer.packets_in, before.packets_in),
                packets_out=rate(now_peer.packets_out, before.packets_out),
                retransmissions=rate(now_peer.retransmissions, before.retransmissions),
                drops=rate(now_peer.drops, before.drops),
            )
        for key in [k for k in heard if k not in totals.peers]:
            del heard[key]  # bounded by the links there are
        sample = Second(
            t=t,
            bytes_in=rate(totals.bytes_in, last.bytes_in),
            bytes_out=rate(totals.bytes_out, last.bytes_out),
            packets_in=rate(totals.packets_in, last.packets_in),
            packets_out=rate(totals.packets_out, last.packets_out),
            events_sent=kinds(totals.events_sent, last.events_sent),
            events_received=kinds(totals.events_received, last.events_received),
            rate_limited=kinds(totals.rate_limited, last.rate_limited),
            auth_failures=rate(totals.auth_failures, last.auth_failures),
            drops=rate(totals.drops, last.drops),
            invalid_events=rate(totals.invalid_events, last.invalid_events),
            rate_excess=rate(totals.rate_excess, last.rate_excess),
            internal_errors=rate(totals.internal_errors, last.internal_errors),
            peers=peers,
        )
        self.samples.append(sample)
        return sample

    def latest(self) -> Second | None:
        return self.samples[-1] if self.samples else None

    def since(self, t: int) -> list[Second]:
        """The samples after second ``t``, oldest first."""
        return [sample for sample in self.samples if sample.t > t]
