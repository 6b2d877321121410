"""The P2PManager (spec §1.2, §10.1): keeps a daemon registered and linked with the right peers.

Sans-IO, driven by the daemon's node with ``now``: it owns the session to the
coordinator (connect token in, certificate and candidates out), reports this
player's presence (on a cell change, at most every ``presence_min_interval``,
and at least every ``discovery_interval``), and carries out the plans of
:func:`p2pd.mesh.policy.plan` on the endpoint: dial the nearest candidates,
keep backups warm, drop what went out of range. Without the coordinator it
keeps the links it has (graceful degradation) and reconnects with jittered
exponential backoff.

Paths (spec §10.1, fallback to server): a candidate is dialled directly when
it gave its address and this daemon is not relay-only, else through the
coordinator's relay; a direct dial that times out is retried at once through
the relay. Established links are watched by :class:`~p2pd.mesh.paths.PathMonitor`
(relay fallback, return to direct, dead links closed so that a backup takes over).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pd.channels.position_codec import PositionState
from p2pd.channels.positions import predict
from p2pd.coordinator.credentials import certificate_policy
from p2pd.coordinator.messages import (
    Addresses,
    Candidates,
    ControlMessageError,
    Dial,
    Introduce,
    LinkEntry,
    Links,
    PeerEntry,
    Presence,
    Registered,
    Report,
    decode_control_untrusted,
    encode_control,
    encode_presence,
)
from p2pd.ipc.fields import split_address
from p2pd.mesh.paths import PathMonitor, PathSettings
from p2pd.mesh.policy import VIEW_RANGE, Backoff, Link, MeshSettings, Role, chebyshev, plan
from p2pd.meters import TokenBucket
from p2pd.nat.agent import NatAgent
from p2pd.nat.candidates import Candidate, CandidateError, parse_candidate_untrusted
from p2pd.session.endpoint import Endpoint, SessionError
from p2pd.session.events import (
    Address,
    CloseReason,
    Event,
    MessageReceived,
    SessionClosed,
    SessionEstablished,
)
from p2pd.wire.relay import is_relay_address, relay_address
from p2pd.wire.types import PacketType

_COORDINATOR = PacketType.COORDINATOR
PREDICT_FOR = 2.0  # seconds a peer's last walking state is walked on (dead reckoning)
REPORT_RATE = 0.2  # reports per second to the coordinator, after a burst of
REPORT_BURST = 5.0
REPORT_REPEAT = 60.0  # seconds before the same (code, peer) is reported again
REPORTS_KEPT = 16  # while the coordinator is unreachable
MAX_REPORT_CODE = 64
MAX_REPORT_DETAIL = 500


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    mesh: MeshSettings = field(default_factory=MeshSettings)
    discovery_interval: float = 30.0  # spec 7: presence at least this often
    presence_min_interval: float = 0.2
    # presence travels unreliably: one on a new map goes again this often until the
    # coordinator's candidates for that map arrive (it answers every map change)
    presence_confirm: float = 1.0
    plan_interval: float = 1.0
    relay_only: bool = False
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    paths: PathSettings = field(default_factory=PathSettings)
    direct_retry_after: float = 120.0  # a failed direct dial is tried again after this
    redial_initial: float = 5.0  # a peer whose link died, or whose dial failed, rests
    redial_max: float = 60.0  # this long (doubling per failure) unless introduced again
    # cells per second a player may have walked since the coordinator placed it:
    # the default walk speed (150 ms per cell, DOMAIN.md); an offer is dialled only
    # while even that far it would still be within the connect radius
    walk_cells_per_s: float = 1000.0 / 150.0


class P2PManager:
    def __init__(self, endpoint: Endpoint, coordinator_key: bytes, coordinator_address: Address,
                 token: bytes, settings: ManagerSettings, *, rng: random.Random,
                 clock: Callable[[], float], nat: NatAgent | None = None) -> None:
        """``clock``: wall-clock seconds, for certificate checks in handshakes.
        ``nat``: the NAT agent, when NAT traversal is on: dials check every
        candidate path at once (p2pd.nat.agent), upgrades probe its better paths."""
        self.nat = nat
        self._own_candidates: tuple[str, ...] = ()  # published to the coordinator
        # the first presence waits (until hold_presence_until at most) for this to hold:
        # the NAT candidates gathered, so that the peers introduced get them
        self.presence_gate: Callable[[], bool] | None = None
        self.hold_presence_until = 0.0
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
        self._presence_seq = 0
        self._listed_map: str | None = None  # the map of the coordinator's last candidates
        self._introduced: set[bytes] = set()  # peers dialling us (introduce), not dialled yet
        self._next_plan: float | None = None
        self.candidates: dict[bytes, PeerEntry] = {}
        self._positions: dict[bytes, tuple[PositionState, float]] = {}  # the peer's, and when
        self._candidate_at: dict[bytes, float] = {}  # when the coordinator last placed it
        self._walking = False  # this player, as last reported
        self.links: dict[bytes, Link] = {}  # established, by role
        self._dialing: dict[bytes, tuple[float, Role, bool]] = {}  # since, role, relayed
        self._direct_failed: dict[bytes, float] = {}  # peer -> when a direct dial failed
        self._resting: dict[bytes, tuple[float, int]] = {}  # peer -> (until, failures)
        self._banned: dict[bytes, float] = {}  # peer -> until: flagged as a cheat, never dialled
        self.paths = PathMonitor(endpoint, settings.paths, self._is_relayed)
        self._next_path_check: float | None = None
        self.connects = 0
        self.drops = 0
        self.dead_links = 0  # closed by the path monitor: silent on every path
        # reports to the coordinator (spec 8.1, 5.1): rate-limited, each (code, peer)
        # at most once a minute, a few kept while the coordinator is away
        self._reports_allowed = TokenBucket(REPORT_RATE, REPORT_BURST, 0.0)
        self._reported: dict[tuple[str, bytes | None], float] = {}
        self._reports_waiting: deque[Report] = deque(maxlen=REPORTS_KEPT)
        self.reports_sent = 0
        self.reports_dropped = 0

    def _is_relayed(self, address: Address) -> bool:
        nat = self.nat
        return is_relay_address(address) or (nat is not None and nat.is_relayed(address))

    def publish_candidates(self, candidates: tuple[str, ...], now: float) -> None:
        """This daemon's NAT candidates, for the coordinator to hand to peers."""
        self._own_candidates = candidates
        if self.coordinator_up and self.registered is not None:
            self.endpoint.send(self.coordinator_key, _COORDINATOR,
                               encode_control(Addresses(candidates)), now)

    @property
    def degraded(self) -> bool:
        """No coordinator: links that stand keep working, no new ones are found."""
        return not self.coordinator_up

    # -- inputs --------------------------------------------------------------

    def set_token(self, token: bytes, now: float) -> None:
        """A fresh connect token (the old one expires): presented from the next
        handshake with the coordinator on, at once when it is not reachable now."""
        self._token = token
        if self.coordinator_up:
            self.endpoint.connect(self.coordinator_key, self.coordinator_address, now,
                                  credential=token)  # kept for the next rekey
        else:
            self._backoff.reset()
            self._reconnect_at = None
            self.start(now)

    def start(self, now: float) -> None:
        self.endpoint.connect(self.coordinator_key, self.coordinator_address, now,
                              credential=self._token)

    def set_own_position(self, map_name: str, x: int, y: int, now: float, *,
                         walking: bool = False) -> None:
        old = self._own
        self._own = (map_name, x, y)
        if old is None or old != self._own or walking != self._walking:
            self._presence_due = True  # a stop counts: its distance no longer grows
        self._walking = walking
        if old is not None and old[0] != map_name:
            self.candidates.clear()  # the old area's links go at the next plan
            self._next_plan = now

    def on_peer_position(self, peer: bytes, state: PositionState, now: float) -> None:
        self._positions[peer] = (state, now)

    def _seen(self, peer: bytes, now: float) -> tuple[str, int, int, float] | None:
        """Where the peer is by its own word: (map, x, y, when heard), walked on by
        dead reckoning for up to PREDICT_FOR seconds (its sender sends a step the
        prediction misses by more than a cell, so this is within a cell)."""
        entry = self._positions.get(peer)
        if entry is None:
            return None
        state, heard = entry
        ahead = min(max(now - heard, 0.0), PREDICT_FOR)
        x, y = predict(state, state.tick + int(ahead * 1000))
        return state.map, x, y, heard

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
                self._listed_map = None
                while self._reports_waiting:
                    self._send_report(self._reports_waiting.popleft(), now)
            elif isinstance(event, SessionClosed):
                self.coordinator_up = False
                self._reconnect_at = now + self._backoff.next_delay()
            elif isinstance(event, MessageReceived) and event.type == _COORDINATOR:
                self._on_control(event.payload, now)
            return True
        if self.nat is not None and peer is not None and isinstance(
                event, SessionEstablished | SessionClosed):
            self.nat.end_checks(peer)
        if isinstance(event, SessionEstablished) and peer is not None:
            role = self._dialing.pop(peer, (now, Role.ACTIVE, False))[1]
            self.links[peer] = Link(now, self._distance(peer, now), role)
            self._next_plan = now  # an inbound link may be one too many
            if self._next_path_check is None:
                self._next_path_check = now + self.settings.paths.check_interval
        elif isinstance(event, SessionClosed) and peer is not None:
            dial = self._dialing.pop(peer, None)
            if dial is not None and event.reason is CloseReason.HANDSHAKE_TIMEOUT:
                if not dial[2] and self.relay_address(peer) is not None:
                    self._direct_failed[peer] = now  # next time, through the relay
                else:
                    self._rest(peer, now)
                self._next_plan = now
            self.paths.forget(peer)
            link = self.links.pop(peer, None)
            if event.reason is CloseReason.PEER_DISCONNECT and (
                    dial is not None or (link is not None
                                         and now - link.since < self.settings.mesh.min_lifetime)):
                self._rest(peer, now)  # it did not want this link (full): do not insist
            if link is not None:
                self._next_plan = now  # promote a backup at once
        return False

    def report(self, severity: str, code: str, detail: str, now: float,
               peer: bytes | None = None) -> bool:
        """Tell the coordinator of a problem; False when the rate limit or the
        once-a-minute rule for this (code, peer) held it back."""
        last = self._reported.get((code, peer))
        if last is not None and now - last < REPORT_REPEAT:
            return False
        if not self._reports_allowed.take(1, now):
            self.reports_dropped += 1
            return False
        self._reported[(code, peer)] = now
        if len(self._reported) > 4 * REPORTS_KEPT:
            self._reported = {k: t for k, t in self._reported.items()
                              if now - t < REPORT_REPEAT}
        report = Report(severity, code[:MAX_REPORT_CODE], peer, detail[:MAX_REPORT_DETAIL])
        if self.coordinator_up:
            self._send_report(report, now)
        else:
            self._reports_waiting.append(report)
        return True

    def tell_links(self, links: tuple[LinkEntry, ...], now: float) -> bool:
        """Tell the coordinator which daemons this one is linked with (the
        operator's view of the mesh); False while it is unreachable."""
        if not self.coordinator_up:
            return False
        self.endpoint.send(self.coordinator_key, _COORDINATOR, encode_control(Links(links)),
                           now)
        return True

    def _send_report(self, report: Report, now: float) -> None:
        self._send_control(report, now)
        self.reports_sent += 1

    def _send_control(self, message: Report | Dial, now: float) -> None:
        self.endpoint.send(self.coordinator_key, _COORDINATOR, encode_control(message), now)

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
            if self._own_candidates:  # (re)registered: the coordinator forgot them
                self.publish_candidates(self._own_candidates, now)
        elif isinstance(message, Candidates):
            if self._own is not None and message.map == self._own[0]:
                self._listed_map = message.map
                self.candidates = {entry.key: entry for entry in message.peers}
                self._candidate_at = dict.fromkeys(self.candidates, now)
                self._next_plan = now
        elif isinstance(message, Introduce):  # it is dialling now: worth an answer
            if self._banned.get(message.peer.key, 0.0) > now:
                return  # a banned peer gets no answer (its handshake is closed at once)
            self._introduced.add(message.peer.key)  # our dial answers it: no dial message
            self._resting.pop(message.peer.key, None)
            self.candidates[message.peer.key] = message.peer
            self._candidate_at[message.peer.key] = now
            self._next_plan = now

    # -- timers ----------------------------------------------------------------

    def deadline(self) -> float | None:
        times = [t for t in (self._reconnect_at, self._next_plan, self._presence_deadline(),
                             self._next_path_check) if t is not None]
        return min(times) if times else None

    def _presence_deadline(self) -> float | None:
        """When the next presence report goes (the same sum the timer compares)."""
        if not self.coordinator_up or self._own is None:
            return None
        settings = self.settings
        if self._presence_due:
            interval = settings.presence_min_interval
        elif self._listed_map != self._own[0]:  # the report of this map may be lost
            interval = settings.presence_confirm
        else:
            interval = settings.discovery_interval
        due = self._presence_sent_at + interval
        gate = self.presence_gate
        if gate is not None:
            if gate():
                self.presence_gate = None
            else:
                return max(due, self.hold_presence_until)
        return due

    def handle_timer(self, now: float) -> None:
        if self._reconnect_at is not None and now >= self._reconnect_at:
            self._reconnect_at = None
            self.start(now)
        presence_at = self._presence_deadline()
        if presence_at is not None and now >= presence_at:
            self._send_presence(now)
        if self._next_path_check is not None and now >= self._next_path_check:
            self._check_paths(now)
        if self._next_plan is not None and now >= self._next_plan:
            self._carry_out(now)
            self._next_plan = now + self.settings.plan_interval

    # -- paths -------------------------------------------------------------------

    def direct_address(self, peer: bytes) -> Address | None:
        """Where to reach the peer directly, if this daemon may and knows it."""
        entry = self.candidates.get(peer)
        if self.settings.relay_only or entry is None or entry.address is None:
            return None
        try:
            return split_address(entry.address)
        except ValueError:
            return None

    def relay_address(self, peer: bytes) -> Address | None:
        """The peer's relay pseudo-address, while the coordinator is up."""
        entry = self.candidates.get(peer)
        if entry is None or not self.coordinator_up:
            return None
        return relay_address(entry.daemon_id)

    def _check_paths(self, now: float) -> None:
        endpoint = self.endpoint
        for peer in list(self.links):
            if not endpoint.established(peer):
                continue
            state = self.paths.states.get(peer)
            fallbacks = state.fallbacks if state is not None else 0
            # a fallback is a direct path that failed: one that was direct, or a first
            # look at a link made through the relay after a direct dial timed out
            # (not a link to or from a relay-only daemon, relayed by choice)
            was_direct = (not state.relayed) if state is not None else (
                peer in self._direct_failed)
            nat = self.nat
            direct = (self.direct_address(peer) if nat is None
                      else nat.upgrade_paths(peer, endpoint.address_of(peer)))
            alive = self.paths.check(peer, direct, self.relay_address(peer), now)
            state = self.paths.states.get(peer)
            if (state is not None and state.fallbacks > fallbacks and state.relayed
                    and was_direct):
                self.report("info", "relay_fallback", "the direct path failed: relayed", now,
                            peer)
            if not alive:
                self.dead_links += 1
                self._rest(peer, now)  # the coordinator may list it a while yet
                endpoint.close(peer, now)  # SessionClosed follows: a backup steps in
        self._next_path_check = (now + self.settings.paths.check_interval
                                 if self.links else None)

    def _send_presence(self, now: float) -> None:
        assert self._own is not None
        map_name, x, y = self._own
        want = self.settings.mesh.max_peers + self.settings.mesh.backups + 1
        presence = Presence(map_name, x, y, min(want, 64), self.settings.relay_only,
                            self._walking)
        self._presence_seq = (self._presence_seq + 1) & 0xFFFF
        self.endpoint.send_presence(self.coordinator_key,
                                    encode_presence(presence, self._presence_seq), now)
        self._presence_due = False
        self._presence_sent_at = now

    # -- plans -------------------------------------------------------------------

    def _distance(self, peer: bytes, now: float) -> int | None:
        """Cells to the peer by the freshest of what it said and what the
        coordinator said; None when unknown or on another map."""
        own = self._own
        if own is None:
            return None
        seen = self._seen(peer, now)
        entry = self.candidates.get(peer)
        if seen is not None and (entry is None or seen[3] >= self._candidate_at.get(peer, 0.0)):
            return chebyshev((own[1], own[2]), (seen[1], seen[2])) if seen[0] == own[0] else None
        return chebyshev((own[1], own[2]), (entry.x, entry.y)) if entry is not None else None

    def _offer_distance(self, peer: bytes, now: float) -> int | None:
        """How far a candidate may be now, at worst: for a player that was walking
        when last heard of (by the coordinator's word or its own position), that
        distance grows by what a player walks since: a walker introduced in
        passing is gone seconds later. A player standing still stays where it was
        (it reports its next step)."""
        distance = self._distance(peer, now)
        if distance is None:
            return None
        seen = self._positions.get(peer)
        given = self._candidate_at.get(peer, 0.0)
        if seen is not None and seen[1] >= given:  # predicted for PREDICT_FOR already
            heard, walking = seen[1] + PREDICT_FOR, seen[0].moving
        else:
            entry = self.candidates.get(peer)
            heard, walking = given, entry is not None and entry.walking
        if not walking or now <= heard:
            return distance
        return distance + int((now - heard) * self.settings.walk_cells_per_s)

    def in_view(self, peer: bytes, now: float) -> bool:
        """Whether the peer's player may see this one (spec §5.2: positions go
        only to players within view range). Unknown counts as in view: the
        coordinator only introduces players within range, and its fresh lists
        (at least every ``refresh``) end a standoff where each side thinks
        the other too far to tell it where it is."""
        own = self._own
        if own is None:
            return True
        if peer not in self.candidates and peer not in self._positions:
            return True
        distance = self._distance(peer, now)
        return distance is not None and distance <= VIEW_RANGE

    def _guess(self, peer: bytes, since: float, now: float) -> int | None:
        """The peer's distance; for a young link to a peer this side knows nothing
        of yet (its introduction may still be on the way), inside the radius."""
        distance = self._distance(peer, now)
        if (distance is None and peer not in self._positions and peer not in self.candidates
                and now - since < self.settings.mesh.min_lifetime):
            return self.settings.mesh.connect_radius
        return distance

    def _carry_out(self, now: float) -> None:
        links = {peer: Link(link.since, self._guess(peer, link.since, now), link.role)
                 for peer, link in self.links.items()}
        for peer, (since, role, _) in self._dialing.items():  # dialling counts as linked
            links[peer] = Link(since, self._guess(peer, since, now), role)
        if len(self._positions) > len(self.candidates) + len(self.links) + 64:
            # what peers said of themselves, kept while they are linked or offered
            self._positions = {p: v for p, v in self._positions.items()
                               if p in self.candidates or p in self.links}
        lifetime = self.settings.mesh.min_lifetime
        self._resting = {p: r for p, r in self._resting.items()  # a link that lasted: forgiven
                         if (now < r[0] or p in self.candidates)
                         and not (p in self.links and now - self.links[p].since >= lifetime)}
        self._banned = {p: until for p, until in self._banned.items() if now < until}
        offers = {peer: distance for peer in self.candidates
                  if (distance := self._offer_distance(peer, now)) is not None
                  and now >= self._resting.get(peer, (0.0, 0))[0]
                  and peer not in self._banned}
        retry = self.settings.direct_retry_after
        self._direct_failed = {p: t for p, t in self._direct_failed.items() if now - t < retry}
        self._introduced.intersection_update(self.candidates)
        result = plan(links, offers, now, self.settings.mesh)
        endpoint = self.endpoint
        for peer in result.drop:
            self._dialing.pop(peer, None)
            if self.links.pop(peer, None) is not None or peer in links:
                endpoint.close(peer, now)
                self.drops += 1
        for peer, role in [(p, Role.ACTIVE) for p in result.connect] + [
                (p, Role.BACKUP) for p in result.connect_backup]:
            address = self._dial_address(peer, now)
            if address is None:
                continue
            try:
                endpoint.connect(peer, address, now)
            except SessionError:
                continue
            self._dialing[peer] = (now, role, address == self.relay_address(peer))
            self.connects += 1
            entry = self.candidates.get(peer)
            if peer in self._introduced:
                self._introduced.discard(peer)
            elif entry is not None and self.coordinator_up:
                # ask the coordinator to introduce us there, so that it dials too
                self._send_control(Dial(entry.daemon_id), now)
        for peer in result.promote:
            self._set_role(peer, Role.ACTIVE)
        for peer in result.demote:
            self._set_role(peer, Role.BACKUP)

    def ban(self, peer: bytes, until: float, now: float) -> None:
        """The peer was flagged as a cheat (spec 5.2): it is not dialled, nor
        answered when introduced, until ``until`` (a resting peer that never
        wakes before then); a dial to it under way is dropped. At most 4096
        bans are kept, the soonest to end forgotten first."""
        self._banned[peer] = until
        if len(self._banned) > 4096:
            del self._banned[min(self._banned, key=self._banned.__getitem__)]
        self._introduced.discard(peer)
        if self._dialing.pop(peer, None) is not None:
            self.endpoint.close(peer, now)
        self._next_plan = now

    def banned(self, peer: bytes, now: float) -> bool:
        return self._banned.get(peer, 0.0) > now

    def _rest(self, peer: bytes, now: float) -> None:
        failures = self._resting.get(peer, (0.0, 0))[1] + 1
        settings = self.settings
        delay = min(settings.redial_initial * 2 ** (failures - 1), settings.redial_max)
        self._resting[peer] = (now + delay, failures)

    def _dial_address(self, peer: bytes, now: float) -> Address | None:
        """Direct when possible; through the relay for a relay-only side, or
        after a direct dial to this peer timed out (for a while)."""
        failed = self._direct_failed.get(peer)
        if failed is not None and now - failed >= self.settings.direct_retry_after:
            del self._direct_failed[peer]
            failed = None
        nat = self.nat
        entry = self.candidates.get(peer)
        if nat is not None and entry is not None:
            relay = self.relay_address(peer)
            seen = self.direct_address(peer)
            paths = nat.plan(_peer_candidates(entry), seen, relay, direct_ok=failed is None)
            return nat.begin_checks(peer, paths, relay, now)
        direct = self.direct_address(peer)
        if direct is not None and failed is None:
            return direct
        return self.relay_address(peer)

    def _set_role(self, peer: bytes, role: Role) -> None:
        link = self.links.get(peer)
        if link is not None:
            self.links[peer] = Link(link.since, link.distance, role)
        elif peer in self._dialing:
            since, _, relayed = self._dialing[peer]
            self._dialing[peer] = (since, role, relayed)

    def active(self) -> list[bytes]:
        return [p for p, link in self.links.items() if link.role is Role.ACTIVE]

    def backups(self) -> list[bytes]:
        return [p for p, link in self.links.items() if link.role is Role.BACKUP]


def _peer_candidates(entry: PeerEntry) -> list[Candidate]:
    """The NAT candidates a peer published, those that parse (the coordinator checked)."""
    out = []
    for text in entry.candidates:
        try:
            out.append(parse_candidate_untrusted(text))
        except CandidateError:
            continue
    return out
