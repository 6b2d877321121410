"""Adapters that let the sans-IO cores run on the simulated network."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from p2pd.session.endpoint import Endpoint
from p2pd.session.events import Event

Address = tuple[str, int]
E = TypeVar("E")


class Core(Protocol):
    """What a simulated node drives: the sans-IO driver API."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def handle_timer(self, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...


C = TypeVar("C", bound=Core)


class CoreNode(Generic[C]):
    """Any sans-IO core with that API (a daemon's Node, a Coordinator) at an address."""

    def __init__(self, address: Address, core: C) -> None:
        self.address = address
        self.core = core

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.core.receive_datagram(data, addr, now)

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.core.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def low_ttl_datagrams(self) -> list[tuple[bytes, Address, int]]:
        """Hole punches of a core that makes them (a daemon's Node), sent with a low TTL."""
        low = getattr(self.core, "low_ttl_datagrams", None)
        out: list[tuple[bytes, Address, int]] = low() if low is not None else []
        return out


class EndpointNode:
    """An :class:`Endpoint` at an address, recording every event it reports."""

    def __init__(self, address: Address, endpoint: Endpoint) -> None:
        self.address = address
        self.endpoint = endpoint
        self.events: list[tuple[float, Event]] = []

    def _drain(self, now: float) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.events.append((now, event))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.endpoint.receive_datagram(data, addr, now)
        self._drain(now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._drain(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self._drain(now)
        return self.endpoint.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def events_of(self, kind: type[E]) -> list[E]:
        return [event for _, event in self.events if isinstance(event, kind)]

    def __repr__(self) -> str:
        return f"EndpointNode({self.address!r})"
