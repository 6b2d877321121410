"""Counters kept by sessions and endpoints, and their frozen snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pd.session.events import Address
from p2pd.session.rtt import RttSnapshot
from p2pd.wire.errors import DropReason


class Counters:
    """Mutable traffic counters; cheap to bump on the hot path."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "drops",
        "handshakes",
        "packets_received",
        "packets_sent",
        "rekeys",
    )

    def __init__(self) -> None:
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.handshakes = 0
        self.rekeys = 0
        self.drops: dict[str, int] | None = None  # made at the first drop

    def drop(self, reason: DropReason) -> None:
        drops = self.drops
        if drops is None:
            drops = self.drops = {}
        drops[reason.value] = drops.get(reason.value, 0) + 1


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    peer: bytes
    address: Address
    established: bool
    packets_sent: int
    bytes_sent: int
    packets_received: int
    bytes_received: int
    handshakes: int  # completed handshakes, the first one included
    rekeys: int
    queued: int  # bytes of new data waiting to be sent (keys, budget or coalescing)
    rtt: RttSnapshot
    drops: dict[str, int] = field(default_factory=dict)
    inbound_loss: float = 0.0  # share of the peer's packets (current keys) that never arrived
    anomalous: bool = False  # the peer has sent beyond its allowance (spec 5.1)
    channels: dict[str, int] = field(default_factory=dict)  # ChannelLink.counters()
    budget_waits: int = 0  # times data waited for a send budget (spec 3.3)
    quality: float = 1.0  # adaptive quality factor of position and effect rates


@dataclass(frozen=True, slots=True)
class EndpointStatistics:
    datagrams_received: int
    bytes_received: int
    datagrams_sent: int
    bytes_sent: int
    sessions: int
    handshake_requests: int
    cookie_replies: int
    collisions: int  # simultaneous-open requests set aside by the tie-break
    drops: dict[str, int] = field(default_factory=dict)  # every drop, by reason
