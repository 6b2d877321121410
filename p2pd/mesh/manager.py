"""The P2PManager (spec §1.2, §10.1): keeps a daemon registered and linked with the right peers.

Sans-IO, driven by the daemon's node with ``now``: it owns the session to the
coordinator (connect token in, certificate and candidates out), reports this
player's presence (on a cell change, at most every ``presence_min_interval``,
and at least every ``discovery_interval``), and carries out the plans of
:func:`p2pd.mesh.policy.plan` on the endpoint: dial the nearest candidates,
keep backups warm, drop what went out of range. Without the coordinator it
keeps the links it has (graceful degradation) and reconnects with jittered
exponential backoff.

Not here yet (issue 5): relayed paths for candidates without an address, and
the node's use of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pd.coordinator.credentials import certificate_policy
from p2pd.coordinator.messages import (
    Candidates,
    ControlMessageError,
    Introduce,
    PeerEntry,
    Presence,
    Registered,
    decode_control_untrusted,
    encode_control,
)
from p2pd.ipc.fields import split_address
from p2pd.mesh.policy import Backoff, Link, MeshSettings, Role, chebyshev, plan
from p2pd.session.endpoint import Endpoint, SessionError
from p2pd.session.events import (
    Address,
    Event,
    MessageReceived,
    SessionClosed,
    SessionEstablished,
)
from p2pd.wire.types import PacketType

_COORDINATOR = PacketType.COORDINATOR


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    mesh: MeshSettings = field(default_factory=MeshSettings)
    discovery_interval: float = 30.0  # spec 7: presence at least this often
    presence_min_interval: float = 0.2
    plan_interval: float = 1.0
    relay_only: bool = False
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0


class P2PManager:
    def __init__(self, endpoint: Endpoint, coordinator_key: bytes, coordinator_address: Address,
                 token: bytes, settings: ManagerSettings, *, rng: random.Random,
                 clock: Callable[[], float]) -> None:
        """``clock``: wall-clock seconds, for certificate checks in handshakes."""
        self.endpoint = endpoint
        self.coordinator_key = coordinator_key
        self.coordinator_address = coordinator_address
        self.settings = settings
        self._token = token
        self._clock = clock
        self._backoff = Backoff(rng, settings.reconnect_initial, settings.reconnect_max)
        self.registered: Registered | None = None
        self.coordinator_up = False
        self._reconnect_at: float | None = None
        self._own: tuple[str, int, int] | None = None
        self._presence_due = False
        self._presence_sent_at = float("-inf")
        self._next_plan: float | None = None
        self.candidates: dict[bytes, PeerEntry] = {}
        self._positions: dict[bytes, tuple[str, int, int]] = {}
        self.links: dict[bytes, Link] = {}  # established, by role
        self._dialing: dict[bytes, tuple[float, Role]] = {}
        self.connects = 0
        self.drops = 0

    @property
    def degraded(self) -> bool:
        """No coordinator: links that stand keep working, no new ones are found."""
        return not self.coordinator_up

    # -- inputs --------------------------------------------------------------

    def start(self, now: float) -> None:
        self.endpoint.connect(self.coordinator_key, self.coordinator_address, now,
                              credential=self._token)

    def set_own_position(self, map_name: str, x: int, y: int, now: float) -> None:
        old = self._own
        self._own = (map_name, x, y)
        if old is None or old != self._own:
            self._presence_due = True
        if old is not None and old[0] != map_name:
            self.candidates.clear()  # the old area's links go at the next plan
            self._next_plan = now

    def on_peer_position(self, peer: bytes, map_name: str, x: int, y: int) -> None:
        self._positions[peer] = (map_name, x, y)

    def on_event(self, event: Event, now: float) -> bool:
        """Take what concerns the mesh; True when the event was the coordinator's
        (the node must not treat the coordinator as a peer)."""
        peer = getattr(event, "peer", None)
        if peer == self.coordinator_key:
            if isinstance(event, SessionEstablished):
                self.coordinator_up = True
                self._backoff.reset()
                self._reconnect_at = None
                self._presence_due = self._own is not None
            elif isinstance(event, SessionClosed):
                self.coordinator_up = False
                self._reconnect_at = now + self._backoff.next_delay()
            elif isinstance(event, MessageReceived) and event.type == _COORDINATOR:
                self._on_control(event.payload, now)
            return True
        if isinstance(event, SessionEstablished) and peer is not None:
            role = self._dialing.pop(peer, (now, Role.ACTIVE))[1]
            self.links[peer] = Link(now, self._distance(peer), role)
            self._next_plan = now  # an inbound link may be one too many
        elif isinstance(event, SessionClosed) and peer is not None:
            self._dialing.pop(peer, None)
            if self.links.pop(peer, None) is not None:
                self._next_plan = now  # promote a backup at once
        return False

    def _on_control(self, payload: bytes, now: float) -> None:
        try:
            message = decode_control_untrusted(payload)
        except ControlMessageError:
            return
        if isinstance(message, Registered):
            self.registered = message
            self.endpoint.set_certificate(message.certificate)
            trusted = [Ed25519PublicKey.from_public_bytes(message.signing_key)]
            certified = certificate_policy(trusted, self._clock)
            coordinator = self.coordinator_key

            def policy(peer: bytes, certificate: bytes | None) -> bool:
                # peers need the coordinator's certificate; the coordinator, pinned
                # by its key, presents none
                return peer == coordinator or certified(peer, certificate)

            self.endpoint.set_peer_policy(policy)
        elif isinstance(message, Candidates):
            if self._own is not None and message.map == self._own[0]:
                self.candidates = {entry.key: entry for entry in message.peers}
                self._next_plan = now
        elif isinstance(message, Introduce):
            self.candidates[message.peer.key] = message.peer
            self._next_plan = now

    # -- timers ----------------------------------------------------------------

    def deadline(self) -> float | None:
        times = [t for t in (self._reconnect_at, self._next_plan, self._presence_deadline())
                 if t is not None]
        return min(times) if times else None

    def _presence_deadline(self) -> float | None:
        """When the next presence report goes (the same sum the timer compares)."""
        if not self.coordinator_up or self._own is None:
            return None
        settings = self.settings
        interval = (settings.presence_min_interval if self._presence_due
                    else settings.discovery_interval)
        return self._presence_sent_at + interval

    def handle_timer(self, now: float) -> None:
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            self.start(now)
        presence_at = self._presence_deadline()
        if presence_at is not None and now >= presence_at:
            self._send_presence(now)
        if self._next_plan is not None and now >= self._next_plan:
            self._carry_out(now)
            self._next_plan = now + self.settings.plan_interval

    def _send_presence(self, now: float) -> None:
        assert self._own is not None
        map_name, x, y = self._own
        want = self.settings.mesh.max_peers + self.settings.mesh.backups + 1
        presence = Presence(map_name, x, y, min(want, 64), self.settings.relay_only)
        self.endpoint.send(self.coordinator_key, _COORDINATOR, encode_control(presence), now)
        self._presence_due = False
        self._presence_sent_at = now

    # -- plans -------------------------------------------------------------------

    def _distance(self, peer: bytes) -> int | None:
        own = self._own
        if own is None:
            return None
        seen = self._positions.get(peer)
        if seen is not None:
            return chebyshev((own[1], own[2]), (seen[1], seen[2])) if seen[0] == own[0] else None
        entry = self.candidates.get(peer)
        return entry.distance if entry is not None else None

    def _guess(self, peer: bytes, since: float, now: float) -> int | None:
        """The peer's distance; for a young link to a peer this side knows nothing
        of yet (its introduction may still be on the way), inside the radius."""
        distance = self._distance(peer)
        if (distance is None and peer not in self._positions and peer not in self.candidates
                and now - since < self.settings.mesh.min_lifetime):
            return self.settings.mesh.connect_radius
        return distance

    def _carry_out(self, now: float) -> None:
        links = {peer: Link(link.since, self._guess(peer, link.since, now), link.role)
                 for peer, link in self.links.items()}
        for peer, (since, role) in self._dialing.items():  # dialling counts as linked
            links[peer] = Link(since, self._guess(peer, since, now), role)
        offers = {peer: distance for peer, entry in self.candidates.items()
                  if entry.address is not None and (distance := self._distance(peer)) is not None}
        result = plan(links, offers, now, self.settings.mesh)
        endpoint = self.endpoint
        for peer in result.drop:
            self._dialing.pop(peer, None)
            if self.links.pop(peer, None) is not None or peer in links:
                endpoint.close(peer, now)
                self.drops += 1
        for peer, role in [(p, Role.ACTIVE) for p in result.connect] + [
                (p, Role.BACKUP) for p in result.connect_backup]:
            address = self.candidates[peer].address
            assert address is not None
            try:
                endpoint.connect(peer, split_address(address), now)
            except (SessionError, ValueError):
                continue
            self._dialing[peer] = (now, role)
            self.connects += 1
        for peer in result.promote:
            self._set_role(peer, Role.ACTIVE)
        for peer in result.demote:
            self._set_role(peer, Role.BACKUP)

    def _set_role(self, peer: bytes, role: Role) -> None:
        link = self.links.get(peer)
        if link is not None:
            self.links[peer] = Link(link.since, link.distance, role)
        elif peer in self._dialing:
            self._dialing[peer] = (self._dialing[peer][0], role)

    def active(self) -> list[bytes]:
        return [p for p, link in self.links.items() if link.role is Role.ACTIVE]

    def backups(self) -> list[bytes]:
        return [p for p, link in self.links.items() if link.role is Role.BACKUP]
