"""Which path each link takes: direct, or through the coordinator's relay (spec §10.1).

Sans-IO, driven by the P2PManager with ``now``. A session does not care how
its datagrams travel; this module decides, from what the session hears:

- A link that has been quiet for ``quiet_ping`` seconds is pinged (every
  ``quiet_ping``), so that silence means a dead path rather than an idle peer.
- A direct path quiet for ``path_timeout`` is given up: the session moves to
  the relay (its pseudo-address, ``p2pd.wire.relay``) and pings there. The peer
  follows, since a session follows the newest authenticated packet.
- While relayed, the direct path is probed (a lone PING to the direct address)
  after ``probe_initial`` seconds, then with exponential backoff up to
  ``probe_max``. A probe that gets through moves the peer's session back to
  direct; its PONG, coming back direct, moves this side's.
- A link quiet on every path for ``link_timeout`` is dead: the caller closes
  it, and the mesh promotes a backup.

A daemon that is relay-only, or a peer whose address it was not given, never
has a direct path: nothing is probed.

With NAT traversal a path through a TURN server counts as relayed too
(``is_relayed``): it is probed for better paths (several ``direct`` ones: each
probe round sends to all of them) and, gone quiet, falls back to the
coordinator's relay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from p2pd.session.endpoint import Endpoint
from p2pd.session.events import Address
from p2pd.wire.relay import is_relay_address


@dataclass(frozen=True, slots=True)
class PathSettings:
    quiet_ping: float = 1.0
    path_timeout: float = 3.0
    link_timeout: float = 8.0
    probe_initial: float = 1.0
    probe_max: float = 5.0
    check_interval: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.quiet_ping < self.path_timeout < self.link_timeout:
            raise ValueError("need 0 < quiet_ping < path_timeout < link_timeout, got "
                             f"{self.quiet_ping}, {self.path_timeout}, {self.link_timeout}")
        if not 0 < self.probe_initial <= self.probe_max:
            raise ValueError("need 0 < probe_initial <= probe_max")
        if not 0 < self.check_interval <= self.quiet_ping:
            raise ValueError("need 0 < check_interval <= quiet_ping")


@dataclass(slots=True)
class PathState:
    next_ping: float = 0.0
    next_probe: float | None = None  # while relayed with a direct path to try
    probe_delay: float = 0.0
    fallbacks: int = 0  # direct -> relay (this side's choice or the peer's)
    recoveries: int = 0  # relay -> direct
    relayed: bool = False


class PathMonitor:
    def __init__(self, endpoint: Endpoint, settings: PathSettings,
                 is_relayed: Callable[[Address], bool] = is_relay_address) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.is_relayed = is_relayed
        self.states: dict[bytes, PathState] = {}
        self.fallbacks = 0
        self.recoveries = 0

    def forget(self, peer: bytes) -> None:
        self.states.pop(peer, None)

    def relayed(self, peer: bytes) -> bool:
        state = self.states.get(peer)
        return state is not None and state.relayed

    def check(self, peer: bytes, direct: Address | Sequence[Address] | None,
              relay: Address | None, now: float) -> bool:
        """Look after one established link; False when it is dead (close it).

        ``direct``: the peer's direct address, if this daemon may use one;
        ``relay``: its relay pseudo-address, while the coordinator is up.
        """
        endpoint = self.endpoint
        settings = self.settings
        state = self.states.get(peer)
        if state is None:
            state = self.states[peer] = PathState(next_ping=now + settings.quiet_ping)
        address = endpoint.address_of(peer)
        relayed = self.is_relayed(address)
        if relayed != state.relayed:  # the peer's packets moved the session
            self._moved(state, relayed, now)
        quiet = now - endpoint.last_received(peer)
        if quiet >= settings.link_timeout:
            return False
        if (quiet >= settings.path_timeout and relay is not None
                and not is_relay_address(address)):
            endpoint.move(peer, relay, now)  # pings there at once
            self._moved(state, True, now)
            state.next_ping = now + settings.quiet_ping
            return True
        if quiet >= settings.quiet_ping and now >= state.next_ping:
            endpoint.ping(peer, now)
            state.next_ping = now + settings.quiet_ping
        if relayed and direct and state.next_probe is not None \
                and now >= state.next_probe:
            for target in _addresses(direct):
                endpoint.probe(peer, target, now)
            state.next_probe = now + state.probe_delay
            state.probe_delay = min(state.probe_delay * 2, settings.probe_max)
        return True

    def _moved(self, state: PathState, relayed: bool, now: float) -> None:
        state.relayed = relayed
        if relayed:  # probe the direct path from now on
            state.fallbacks += 1
            self.fallbacks += 1
            state.probe_delay = self.settings.probe_initial
            state.next_probe = now + state.probe_delay
        else:
            state.recoveries += 1
            self.recoveries += 1
            state.next_probe = None


def _addresses(direct: Address | Sequence[Address]) -> list[Address]:
    if len(direct) == 2 and isinstance(direct[0], str) and isinstance(direct[1], int):
        return [(direct[0], direct[1])]
    return [a for a in direct if not isinstance(a, (str, int))]
