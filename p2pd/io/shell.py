"""The trio shell around one sans-IO core on one UDP socket.

Two tasks: the drain loop feeds every datagram to the core and then *pumps*;
the timer loop sleeps until the core's deadline (or until a pump brings an
earlier one), calls ``handle_timer`` and pumps. What a pump sends and reports
is the subclass's; re-arming the timer is here. A bug in the core is logged
and counted, never allowed to stop the loops.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Protocol

import structlog
import trio

from p2pd.io.udp import UdpSocket
from p2pd.session.events import Address


class SansIoCore(Protocol):
    def receive_datagram(self, data: bytes, address: Address, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def get_timer(self) -> float | None: ...


class Shell:
    def __init__(self, core: SansIoCore, udp: UdpSocket,
                 log: structlog.stdlib.BoundLogger) -> None:
        self.core = core
        self.udp = udp
        self._log = log
        self.counters: Counter[str] = Counter()
        self._timer_changed = trio.Event()
        self._armed: float | None = None  # what timer_loop sleeps until

    def pump(self) -> None:
        """After any input: send and report what it produced; then ``rearm()``."""
        raise NotImplementedError

    def rearm(self) -> None:
        # Wake the timer loop only for an earlier deadline: at a later one (an ack
        # moved a retransmission on) it wakes as armed, finds nothing due, re-arms.
        deadline, armed = self.core.get_timer(), self._armed
        if deadline is not None and (armed is None or deadline < armed):
            self._timer_changed.set()

    async def udp_loop(self) -> None:
        core, udp, log = self.core, self.udp, self._log
        while True:
            burst = await udp.receive_burst()
            now = trio.current_time()
            for data, address in burst:
                try:
                    core.receive_datagram(data, address, now)
                except Exception:  # a bug of ours must not take the process down
                    self.counters["internal_errors"] += 1
                    log.exception("datagram_failed", source=f"{address[0]}:{address[1]}")
            self.pump()

    async def timer_loop(self) -> None:
        core = self.core
        while True:
            deadline = self._armed = core.get_timer()
            self._timer_changed = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._timer_changed.wait()
            now = trio.current_time()
            if deadline is not None and now >= deadline:
                try:
                    core.handle_timer(now)
                except Exception:  # a bug of ours must not take the process down
                    self.counters["internal_errors"] += 1
                    self._log.exception("timer_failed")
                self.pump()
