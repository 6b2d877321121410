"""STUN client transactions over UDP (RFC 8489 6.2.1), sans-IO.

A request is sent at once and again while no response came: after RTO, then
2 RTO, 4 RTO, ... (RTO 0.5 s by default), ``rc`` transmissions in all (7); after
the last the client waits ``rm`` times the initial RTO (16) and then gives the
transaction up. A response is matched by its transaction id alone (96 random
bits: RFC 5780's CHANGE-REQUEST responses come from another address than the
request went to). Each transaction carries a ``tag``, the caller's note of
what it was for, handed back with the outcome. The table is bounded: a new
transaction beyond ``max_pending`` fails at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from p2pd.nat.stun import Address, StunMessage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetransmitSettings:
    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    max_pending: int = 64

    def __post_init__(self) -> None:
        if not (self.rto > 0 and self.rc >= 1 and self.rm >= 1 and self.max_pending >= 1):
            raise ValueError("need rto > 0, rc >= 1, rm >= 1, max_pending >= 1")

    def schedule(self) -> list[float]:
        """Offsets from the first send: each retransmission, then the give-up time."""
        out, at, interval = [], 0.0, self.rto
        for _ in range(self.rc - 1):
            at += interval
            out.append(at)
            interval *= 2
        out.append(at + self.rm * self.rto)
        return out


@dataclass(slots=True)
class _Pending(Generic[T]):
    tag: T
    request: bytes
    address: Address
    started: float
    times: list[float]  # absolute: retransmissions, then the give-up time
    sent: int = 1


class Transactions(Generic[T]):
    def __init__(self, settings: RetransmitSettings | None = None, *,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.settings = settings or RetransmitSettings()
        self._random = random_bytes
        self._pending: dict[bytes, _Pending[T]] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self.started = 0
        self.timeouts = 0
        self.refused = 0  # beyond max_pending

    def new_id(self) -> bytes:
        return self._random(12)

    def start(self, transaction_id: bytes, request: bytes, address: Address, tag: T,
              now: float) -> bool:
        """Send ``request`` (which carries ``transaction_id``) to ``address``; False
        when the table is full (nothing sent)."""
        if len(self._pending) >= self.settings.max_pending:
            self.refused += 1
            return False
        times = [now + offset for offset in self.settings.schedule()]
        self._pending[transaction_id] = _Pending(tag, request, address, now, times)
        self._outgoing.append((request, address))
        self.started += 1
        return True

    def cancel(self, transaction_id: bytes) -> None:
        self._pending.pop(transaction_id, None)

    def cancel_where(self, keep: Callable[[T], bool]) -> None:
        self._pending = {tid: p for tid, p in self._pending.items() if keep(p.tag)}

    def receive(self, message: StunMessage) -> tuple[T, float] | None:
        """The tag of the transaction ``message`` answers and when it started,
        or None (not ours, or already answered: a retransmission's answer)."""
        pending = self._pending.pop(message.transaction_id, None)
        if pending is None:
            return None
        return pending.tag, pending.started

    def handle_timer(self, now: float) -> list[T]:
        """Retransmit what is due; the tags of the transactions given up."""
        failed = []
        for tid, pending in list(self._pending.items()):
            times = pending.times
            due = 0
            while due < len(times) and now >= times[due]:
                due += 1
            if not due:
                continue
            if due == len(times):  # the last wait is over: given up
                del self._pending[tid]
                failed.append(pending.tag)
                self.timeouts += 1
                continue
            del times[:due]  # late timers send once, not once per missed time
            self._outgoing.append((pending.request, pending.address))
            pending.sent += 1
        return failed

    def deadline(self) -> float | None:
        times = [p.times[0] for p in self._pending.values() if p.times]
        return min(times) if times else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._outgoing
        self._outgoing = []
        return out

    def __len__(self) -> int:
        return len(self._pending)

    def tags(self) -> list[T]:
        return [p.tag for p in self._pending.values()]
