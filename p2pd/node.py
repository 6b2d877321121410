"""The daemon's logic between the game client and its peers, without I/O.

``Node`` owns the session endpoint, turns the client's game events into peer
messages (with the per-peer limits of ``ai_client.ini``), turns peer messages
back into events for the client, and keeps the statistics of spec §8.2. It is
driven like the endpoint: bytes and ``now`` in; datagrams, notifications for
IPC clients and a timer deadline out. The trio daemon (p2pd.io.daemon) is its
only caller outside the tests.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from p2pd.channels.position_codec import PositionState
from p2pd.channels.positions import predict
from p2pd.channels.quality import REDUCED_DETAIL
from p2pd.cheat.anomaly import Offence
from p2pd.cheat.mapgrid import MapStore
from p2pd.config import DaemonConfig
from p2pd.coordinator.messages import MAX_LINKS, LinkEntry
from p2pd.crypto.identity import Identity
from p2pd.ipc.errors import IpcError
from p2pd.ipc.fields import format_address
from p2pd.ipc.messages import (
    MAP_NAME_PATTERN,
    MAX_STATS_HISTORY,
    AiInteraction,
    Chat,
    Environment,
    GameEvent,
    LegendData,
    Position,
    SyncRequest,
    VisualEffect,
)
from p2pd.ipc.outgoing import (
    anomaly_event,
    coordinator_event,
    game_event_to_message,
    hidden_event,
    link_event,
    peer_joined_event,
    peer_left_event,
)
from p2pd.ipc.peer_codec import decode_peer_event_untrusted, encode_peer_event
from p2pd.mesh.manager import PREDICT_FOR, ManagerSettings, P2PManager
from p2pd.mesh.policy import VIEW_RANGE, MeshSettings, chebyshev
from p2pd.meters import RateMeter, TokenBucket
from p2pd.nat.agent import NatAgent, NatSettings
from p2pd.nat.candidates import PortMapper, is_turn_path
from p2pd.nat.demux import Kind, classify
from p2pd.nat.turn import TurnCredentials
from p2pd.session.endpoint import Endpoint, SendQueueFull, SessionError
from p2pd.session.events import (
    Address,
    MessageReceived,
    PeerAddressChanged,
    PositionReceived,
    SessionClosed,
    SessionEstablished,
)
from p2pd.session.rtt import percentile
from p2pd.session.session import MessageTooLarge
from p2pd.stats_history import PEER_ID_DIGITS, PeerTotals, StatsHistory, Totals
from p2pd.sync.core import GameSync
from p2pd.sync.requests import SyncApi
from p2pd.sync.settings import sync_rules
from p2pd.sync.state import is_snapshot_request
from p2pd.sync.visibility import VISIBILITY_KEY, read_notice
from p2pd.sync.visibility import notice as visibility_notice
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.relay import (
    decode_relay_untrusted,
    encode_relay,
    is_relay,
    is_relay_address,
    relay_address,
)
from p2pd.wire.types import PacketType

_MAP_NAME = re.compile(MAP_NAME_PATTERN)
MAX_NOTIFICATIONS = 10_000  # pushed events waiting for the IPC layer to take them
INVALID_REPORTED = 5  # a peer's invalid events that make a report (spec 5.1)
# seconds after a course change (a stop, a turn) when it goes again unless acknowledged
POSITION_REPEATS = (0.15, 0.8)
AUTH_FAILURES_REPORTED = 20  # datagrams failing authentication that make one (8.1)
LINKS_TOLD_MIN = 2.0  # seconds between two link sets told to the coordinator, at least
LINKS_TOLD_REFRESH = 30.0  # and at least this often while linked (fresh RTTs)
ALL_RELAYED_REPORTED = 2  # links, every one relayed: the direct paths of an area failed
NAT_GATHER_WAIT = 2.0  # seconds the first presence may wait for the NAT candidates


@dataclass
class PeerLink:
    """What the node keeps about one peer on top of its session."""

    key: bytes
    address: Address
    since: float
    positions: TokenBucket
    effects: TokenBucket
    last_position: PositionState | None = None  # the last one sent to this peer
    position: PositionState | None = None  # the peer's, as last received
    position_at: float = 0.0  # when
    quality: float = 1.0  # adaptive quality factor of the position and effect rates
    sent: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    invalid: int = 0  # its events that did not decode or were impossible
    deferred: PositionState | None = None  # the newest position its rate limit held back
    invalid_reported: int = 0
    course_at: float | None = None  # when the last course change went (see hand_position)
    fresh: bool = False  # the next position goes even if unchanged (the peer dropped it)
    repeats: int = 0  # how many of POSITION_REPEATS are done for it


class Node:
    def __init__(
        self,
        config: DaemonConfig,
        identity: Identity,
        *,
        epoch: float = 0.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config
        self.p2p = config.p2p
        session_config = config.session_config()
        self.endpoint = Endpoint(identity, session_config, random_bytes=random_bytes,
                                 epoch=epoch)
        self.public_key = identity.public_key
        self.udp_address: Address | None = None
        self._links: dict[bytes, PeerLink] = {}
        self._pending: dict[bytes, Address] = {}  # connect() called, not yet established
        self._notifications: deque[dict[str, Any]] = deque()
        self.notifications_dropped = 0
        self.bytes_in = RateMeter()
        self.bytes_out = RateMeter()
        self.events_sent: Counter[str] = Counter()
        self.events_received: Counter[str] = Counter()
        self.events_limited: Counter[str] = Counter()
        self.events_invalid = 0
        self.positions_hidden = 0  # position updates not sent: the peer was out of view
        self.positions_repeated = 0  # course changes sent a second time (hand_position)
        self.own_hidden = False  # this player is hidden (position's hidden): _set_hidden
        self.dropped_while_disabled = 0  # datagrams that arrived with enabled=false
        self.own_position: PositionState | None = None  # this player's, as the client sent it
        self.own_position_at = 0.0  # when
        self.mesh: P2PManager | None = None  # with a coordinator: who to link with
        self.nat: NatAgent | None = None  # NAT traversal ([P2P] nat_traversal): start_nat
        self._low_ttl: list[tuple[bytes, Address, int]] = []  # punches, for the driver
        self.dropped_unknown = 0  # datagrams neither p2pd, STUN nor ChannelData
        self._epoch = epoch
        self._now = 0.0  # the driver's latest now, for the wall clock of certificate checks
        self._next_watch = 0.0  # problems to report to the coordinator, once a second
        self._coordinator_state: str | None = None  # as last told to the clients
        self._auth_failures_reported = 0
        # game-state sync and cheat checks (spec 4, 5.2): p2pd.sync, p2pd.cheat
        # maps are asked for here and loaded by the shell ([sync] map_dir: p2pd.io.maps)
        self.sync = GameSync(sync_rules(config),
                             MapStore(loading=config.sync.map_dir is not None))
        self.sync_api = SyncApi(self)
        self.history = StatsHistory(MAX_STATS_HISTORY)  # per second, for stats (ipc.md 11.3)
        self._internal_errors_reported = 0
        self._links_told: tuple[tuple[int, bool, bool], ...] = ()  # as told the coordinator
        self._links_told_at = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.p2p.enabled

    def start_mesh(self, address: Address, token: bytes, now: float,
                   rng: random.Random | None = None) -> None:
        """Register with the coordinator at ``address`` (its key from the
        configuration) and let the P2PManager choose the peers from now on."""
        coordinator = self.config.coordinator
        assert coordinator.public_key is not None
        p2p = self.p2p
        settings = ManagerSettings(
            mesh=MeshSettings(max_peers=p2p.max_peers, backups=coordinator.backups,
                              connect_radius=VIEW_RANGE),
            discovery_interval=p2p.discovery_interval,
            relay_only=coordinator.relay_only,
        )
        self._now = now
        self.mesh = P2PManager(self.endpoint, coordinator.public_key, address, token, settings,
                               rng=rng or random.Random(), clock=self._wall_clock,
                               nat=self.nat)
        self._gate_presence(now)
        self.mesh.start(now)

    def start_nat(self, stun_servers: list[Address], turn_server: Address | None,
                  host_addresses: list[Address], now: float,
                  random_bytes: Callable[[int], bytes] = os.urandom, *,
                  port_mapper: PortMapper | None = None) -> NatAgent | None:
        """Start NAT traversal ([nat], with the server names resolved by the
        driver, and the host's own addresses; ``port_mapper``: the router's port
        mapping, when one is asked for); None when ``nat_traversal`` is off."""
        if not self.p2p.nat_traversal or not self.enabled:
            return None
        nat = self.config.nat
        credentials = None
        if turn_server is not None:
            credentials = TurnCredentials(username=nat.turn_username,
                                          password=nat.turn_password,
                                          secret=nat.turn_secret or None)
        settings = NatSettings(stun_servers=tuple(stun_servers), turn_server=turn_server,
                               turn_credentials=credentials,
                               relay_only=self.config.coordinator.relay_only,
                               punch_ttl=nat.punch_ttl, discovery=nat.discovery)
        self._now = now
        self.nat = NatAgent(settings, clock=self._wall_clock, random_bytes=random_bytes)
        self.endpoint.on_collision = self.nat.learned_path
        self.nat.set_host_addresses([] if settings.relay_only else host_addresses)
        self.nat.port_mapper = port_mapper
        self.nat.start(now)
        if self.mesh is not None:
            self.mesh.nat = self.nat
            self._gate_presence(now)
        return self.nat

    def _gate_presence(self, now: float) -> None:
        mesh, nat = self.mesh, self.nat
        if mesh is not None and nat is not None:
            mesh.presence_gate = lambda: nat.gathered
            mesh.hold_presence_until = now + NAT_GATHER_WAIT

    def set_coordinator_token(self, token: bytes, address: Address | None,
                              now: float) -> dict[str, Any]:
        """A connect token from the game: registers with the configured coordinator
        (at ``address``, resolved) or renews the token of the registration."""
        if self.mesh is not None:
            self.mesh.set_token(token, now)
        elif address is not None and self.config.coordinator.public_key is not None:
            self.start_mesh(address, token, now)
        else:
            raise IpcError("no_coordinator", "no coordinator is configured ([coordinator]"
                           " address and public_key)")
        status = self._coordinator_status()
        assert status is not None
        return status

    def _wall_clock(self) -> float:
        return self._epoch + self._now

    # -- driver calls --------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self._now = now
        self.bytes_in.add(len(data), now)
        if not self.enabled:
            self.dropped_while_disabled += 1
            return
        kind = classify(data)
        nat = self.nat
        if kind is Kind.UNKNOWN:
            self.dropped_unknown += 1
        elif kind is not Kind.P2P and nat is not None:
            refused = nat.refused()
            if kind is Kind.STUN:
                inner = nat.receive_stun(data, address, now)
            else:
                inner = nat.receive_channel_data(data, address)
            if inner is None:
                if nat.refused() > refused:  # counted with the other drops as well
                    self.endpoint.count_drop(DropReason.MALFORMED)
                self._after_nat(now)
                return
            data, address = inner  # a peer's datagram through this daemon's TURN server
        if is_relay(data):  # a peer's datagram through the coordinator
            mesh = self.mesh
            try:
                if mesh is None or address != mesh.coordinator_address:
                    raise BadPacket(DropReason.UNEXPECTED, "RELAY not from the coordinator")
                source, data = decode_relay_untrusted(data)
            except BadPacket as error:
                self.endpoint.count_drop(error.reason)
                return
            address = relay_address(source)
        self.endpoint.receive_datagram(data, address, now)
        self._process_events(now)

    def handle_timer(self, now: float) -> None:
        self._now = now
        self.endpoint.handle_timer(now)
        self._process_events(now)
        self.sync_api.on_timer(now)
        nat = self.nat
        if nat is not None and (deadline := nat.deadline()) is not None and now >= deadline:
            nat.handle_timer(now)
            self._after_nat(now)
        mesh = self.mesh
        if mesh is not None and (deadline := mesh.deadline()) is not None and now >= deadline:
            mesh.handle_timer(now)
            self._process_events(now)
            if now >= self._next_watch:
                self._next_watch = now + 1.0
                self._report_problems(mesh, now)

    def _report_problems(self, mesh: P2PManager, now: float) -> None:
        """Spec 8.1 and 5.1: what the coordinator (the server) should know of."""
        endpoint = self.endpoint
        for key, link in self._links.items():
            if endpoint.session_statistics(key).anomalous:
                mesh.report("warn", "anomalous_peer",
                            "sent beyond its allowance of packets or bytes per second", now, key)
            if link.invalid - link.invalid_reported >= INVALID_REPORTED:
                mesh.report("warn", "invalid_events",
                            f"{link.invalid} events that do not decode or are impossible",
                            now, key)
                link.invalid_reported = link.invalid
        drops = endpoint.statistics().drops
        failures = sum(drops.get(r, 0) for r in ("auth_failed", "bad_mac", "handshake_failed"))
        if failures - self._auth_failures_reported >= AUTH_FAILURES_REPORTED:
            mesh.report("error", "auth_failures",
                        f"{failures} datagrams failed authentication", now)
            self._auth_failures_reported = failures
        self._tell_links(mesh, now)
        relayed = [key for key, link in self._links.items() if is_relay_address(link.address)]
        if (len(relayed) >= ALL_RELAYED_REPORTED and len(relayed) == len(self._links)
                and not self.config.coordinator.relay_only):  # relayed by choice
            mesh.report("error", "all_links_relayed",
                        f"every one of {len(relayed)} links goes through the relay", now)

    def _tell_links(self, mesh: P2PManager, now: float) -> None:
        """The operator's view of the mesh: this daemon's links (by the peers'
        daemon ids), when they change and every LINKS_TOLD_REFRESH seconds."""
        if now - self._links_told_at < LINKS_TOLD_MIN:
            return
        entries = []
        for key, link in self._links.items():
            candidate = mesh.candidates.get(key)
            if candidate is None:
                continue  # not known to the coordinator by this key
            rtt = self.endpoint.session_statistics(key).rtt.smoothed
            entries.append(LinkEntry(candidate.daemon_id, self._path(link.address) != "direct",
                                     None if rtt is None else min(round(rtt * 1000), 65535)))
        entries.sort(key=lambda e: e.daemon_id)
        shape = tuple((e.daemon_id, e.relayed, e.rtt_ms is None) for e in entries[:MAX_LINKS])
        if shape == self._links_told and (
                not shape or now - self._links_told_at < LINKS_TOLD_REFRESH):
            return
        if mesh.tell_links(tuple(entries[:MAX_LINKS]), now):
            self._links_told, self._links_told_at = shape, now

    def get_timer(self) -> float | None:
        deadline = self.endpoint.get_timer()
        if (snapshot := self.sync_api.deadline()) is not None:
            deadline = snapshot if deadline is None else min(deadline, snapshot)
        if self.mesh is not None and (mesh := self.mesh.deadline()) is not None:
            deadline = mesh if deadline is None else min(deadline, mesh)
        if self.nat is not None and (nat := self.nat.deadline()) is not None:
            deadline = nat if deadline is None else min(deadline, nat)
        return deadline

    def _after_nat(self, now: float) -> None:
        """Publish this daemon's candidates when they changed."""
        nat, mesh = self.nat, self.mesh
        if nat is None or mesh is None or not mesh.coordinator_up or mesh.registered is None:
            return
        texts = nat.candidates_to_publish()
        if texts is not None:
            mesh.publish_candidates(texts, now)

    def flush(self, now: float) -> None:
        """Send the messages waiting to be batched (end of an input burst)."""
        self.endpoint.flush(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """What to send at the normal IP TTL; :meth:`low_ttl_datagrams` holds the
        hole punches to send with a low one."""
        mesh, nat = self.mesh, self.nat
        out = []
        for data, address in self.endpoint.datagrams_to_send(now):
            if nat is not None:
                for item, path, ttl in nat.expand(data, address, now):
                    if ttl is not None:
                        self._low_ttl.append((item, path, ttl))
                    elif is_relay_address(path):
                        if mesh is not None:
                            out.append((encode_relay(path[1], item), mesh.coordinator_address))
                    else:
                        out.append((item, path))
            elif not is_relay_address(address):
                out.append((data, address))
            elif mesh is not None:  # wrapped for the coordinator to pass on (none: dropped)
                out.append((encode_relay(address[1], data), mesh.coordinator_address))
        if nat is not None:
            nat.notice_port_mapping(now)  # discovery again when the port mapping changed
            for data, address, ttl in nat.take_datagrams():
                if is_relay_address(address):  # a check joining on the coordinator's relay
                    if mesh is not None:
                        out.append((encode_relay(address[1], data), mesh.coordinator_address))
                elif ttl is None:
                    out.append((data, address))
                else:
                    self._low_ttl.append((data, address, ttl))
            self._after_nat(now)
        for data, _ in out:
            self.bytes_out.add(len(data), now)
        return out

    def low_ttl_datagrams(self) -> list[tuple[bytes, Address, int]]:
        """Hole punches: each to be sent with the IP TTL it names (after
        :meth:`datagrams_to_send`, which makes them)."""
        out = self._low_ttl
        self._low_ttl = []
        for data, _, _ in out:
            self.bytes_out.add(len(data), self._now)
        return out

    def take_notifications(self) -> list[dict[str, Any]]:
        out = list(self._notifications)
        self._notifications.clear()
        return out

    # -- client requests -----------------------------------------------------

    def connect(self, address: Address, key: bytes, now: float) -> None:
        self._require_enabled()
        if key not in self._links and len(self._links) + len(self._pending) >= self.p2p.max_peers:
            raise IpcError("too_many_peers", f"already at max_peers={self.p2p.max_peers}")
        try:
            self.endpoint.connect(key, address, now)
        except SessionError as error:
            raise IpcError("bad_field", str(error), "key") from None
        if key not in self._links:
            self._pending[key] = address

    def disconnect(self, key: bytes, now: float) -> None:
        self._require_enabled()
        if key not in self._links and key not in self._pending:
            raise IpcError("no_such_peer", f"no link with peer {key.hex()}", "peer")
        self._pending.pop(key, None)
        self.endpoint.close(key, now)
        self._process_events(now)

    def send_event(self, event: GameEvent, targets: Iterable[bytes], now: float) -> dict[str, int]:
        """Send ``event`` to ``targets`` (every linked peer when empty)."""
        self._require_enabled()
        self._now = max(self._now, now)
        chosen = list(targets) or list(self._links)
        absent = []  # links down for now whose channels wait for the next (8.10)
        for key in chosen:
            if key not in self._links:
                if not self.endpoint.parked(key, now):
                    raise IpcError("no_such_peer", f"no link with peer {key.hex()}", "to")
                absent.append(key)
        if absent:
            chosen = [key for key in chosen if key in self._links]
        kind = event.OP
        endpoint = self.endpoint
        sent = limited = hidden = 0
        if isinstance(event, Position):
            state = PositionState(event.map, event.x, event.y, event.dir, event.speed,
                                  event.moving, event.tick)
            self._set_own_position(state)
            self.own_position_at = now
            if self.mesh is not None:  # the coordinator (the server's side) may know
                self.mesh.set_own_position(state.map, state.x, state.y, now,
                                           walking=state.moving)
            if event.hidden != self.own_hidden:
                self._set_hidden(event.hidden, now)
            for key in chosen:
                link = self._links[key]
                if self.own_hidden or not self._in_view(link, state, now):
                    # spec 5.2: not for a player who cannot see this one (judged by
                    # its dead-reckoned place: within a cell, see Node._in_view)
                    hidden += 1
                    continue
                if not self._position_allowed(link, state, now):
                    limited += 1
                    link.deferred = state  # sent when the limit allows, unless replaced
                    continue
                link.deferred = None
                self.hand_position(link, state, now)
                link.sent[kind] += 1
                sent += 1
        else:
            if isinstance(event, Environment | LegendData):
                self.sync.on_state(event)  # what newcomers get (spec 10.2)
            packet_type, payload = encode_peer_event(
                event, endpoint.config.max_message_size)
            value_key = _latest_value_key(event)
            effect = packet_type == PacketType.VISUAL_EFFECT
            place = self._place_of(event)
            if place is not None:  # spec 5.2: only to players who may see it
                seeing = [key for key in chosen if self._sees(self._links[key], place, now)]
                hidden, chosen = len(chosen) - len(seeing), seeing
            for key in chosen + ([] if effect else absent):  # all or nothing
                try:
                    endpoint.check_send(key, packet_type, payload, value_key)
                except MessageTooLarge as error:
                    raise IpcError("too_large", str(error)) from None
                except SendQueueFull as error:
                    raise IpcError("busy", f"peer {key.hex()[:16]}: {error}", "to") from None
            for key in chosen:
                link = self._links[key]
                if effect and not self._effect_allowed(link, now):
                    limited += 1
                    continue
                endpoint.send(key, packet_type, payload, now, value_key)
                link.sent[kind] += 1
                sent += 1
            if not effect:
                for key in absent:  # delivered when the link is back
                    endpoint.hold(key, packet_type, payload, now, value_key)
        self.events_sent[kind] += sent
        self.events_limited[kind] += limited
        if hidden:
            self.positions_hidden += hidden
        return {"sent": sent, "rate_limited": limited, "out_of_view": hidden,
                "absent": len(absent)}

    def _place_of(self, event: GameEvent) -> tuple[str, int, int] | None:
        """Where an event happens, when it does somewhere: an effect's cell, an
        AI interaction's AI entity (by its Legend ``info``, when known)."""
        if isinstance(event, VisualEffect):
            return event.map, event.x, event.y
        if isinstance(event, AiInteraction):
            return self.sync.ai_location(event.ai_entity_id)
        return None

    def _sees(self, link: PeerLink, place: tuple[str, int, int], now: float) -> bool:
        """Whether the peer's player may see ``place`` (spec 5.2): within view
        range of where it is as far as this side can tell (its last position,
        walked on by dead reckoning); with that unknown, as positions go
        (Node._in_view). Nothing positional goes anywhere while this player is
        hidden."""
        if self.own_hidden:
            return False
        map_name, x, y = place
        peer = link.position
        if peer is not None:
            ahead = min(max(now - link.position_at, 0.0), PREDICT_FOR)
            px, py = predict(peer, peer.tick + int(ahead * 1000))
            return peer.map == map_name and chebyshev((px, py), (x, y)) <= VIEW_RANGE
        own = self.own_position
        return own is None or self._in_view(link, own, now)

    def _set_hidden(self, hidden: bool, now: float) -> None:
        """This player is hidden now, or shown again: every peer is told (a
        visibility notice, p2pd/sync/visibility.py); while hidden nothing
        positional goes out (positions, effects, repeats, refreshes)."""
        self.own_hidden = hidden
        for key, link in self._links.items():
            self.endpoint.send(key, PacketType.ENVIRONMENTAL, visibility_notice(hidden), now,
                               VISIBILITY_KEY)
            link.deferred = None
            link.course_at = None
            # peers dropped what they had: the next position goes whatever it is
            link.fresh = not hidden
            link.last_position = None

    def _in_view(self, link: PeerLink, own: PositionState, now: float) -> bool:
        """Whether the peer's player is within view range of this one, by where
        it is now as far as this side can tell: its last position walked on by
        dead reckoning (its sender sends every step that prediction would miss
        by more than a cell), so a peer that walks out of view stops getting
        positions without having to say so."""
        if self.mesh is not None:
            return self.mesh.in_view(link.key, now)
        peer = link.position
        if peer is None:
            return True
        ahead = min(max(now - link.position_at, 0.0), PREDICT_FOR)
        x, y = predict(peer, peer.tick + int(ahead * 1000))
        return peer.map == own.map and chebyshev((own.x, own.y), (x, y)) <= VIEW_RANGE

    def _adapt(self, link: PeerLink, now: float) -> float:
        """Apply the session's adaptive quality to the link's unreliable rates."""
        quality = self.endpoint.quality(link.key, now)
        if quality != link.quality:
            link.quality = quality
            link.positions.set_rate(self.p2p.position_update_rate * quality, now)
            link.effects.set_rate(self.p2p.effect_update_rate * quality, now)
        return quality

    def _position_allowed(self, link: PeerLink, state: PositionState, now: float) -> bool:
        quality = self._adapt(link, now)
        last = link.last_position
        if (quality <= REDUCED_DETAIL and last is not None and last.x == state.x
                and last.y == state.y and last.map == state.map
                and last.moving == state.moving):
            return False  # reduced detail: turns and clock ticks in place wait
        if link.deferred is None and on_course(last, state):
            # the next cell of a walk the peer predicts: the position channel sends
            # none of these but a refresh a second, so they take no token and the
            # tokens are there for the stops and turns that must go at once
            return True
        return link.positions.take(1, now)

    def _effect_allowed(self, link: PeerLink, now: float) -> bool:
        self._adapt(link, now)
        return link.effects.take(1, now)

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise IpcError("p2p_disabled", "P2P is disabled (enabled=false): use the server path")

    def shutdown(self, now: float) -> None:
        if self.nat is not None:
            self.nat.close(now)  # the TURN allocation is deleted, not left to expire
        self.endpoint.close_all(now)
        self._process_events(now)

    # -- session events ------------------------------------------------------

    def _process_events(self, now: float) -> None:
        endpoint = self.endpoint
        mesh = self.mesh
        while (event := endpoint.next_event()) is not None:
            if mesh is not None and mesh.on_event(event, now):
                self._tell_coordinator_state()
                continue  # the coordinator's: not a peer
            if isinstance(event, MessageReceived):
                self._on_message(event, now)
            elif isinstance(event, PositionReceived):
                self._on_position(event, now)
            elif isinstance(event, SessionEstablished):
                self._on_established(event, now)
            elif isinstance(event, SessionClosed):
                self._on_closed(event)
            elif isinstance(event, PeerAddressChanged):
                if self.nat is not None:
                    self.nat.end_checks(event.peer)
                link = self._links.get(event.peer)
                if link is not None:
                    link.address = event.new
                self._notify(link_event(event.peer.hex(), "moved",
                                        self._smoothed_rtt_ms(event.peer),
                                        address=format_address(event.new)))

    def _tell_coordinator_state(self) -> None:
        """Graceful degradation, said to the clients: without the coordinator the
        links that stand keep working, and no new ones are found."""
        status = self._coordinator_status()
        state = None if status is None else str(status["state"])
        if state is None or state == self._coordinator_state:
            return
        first = self._coordinator_state is None
        self._coordinator_state = state
        if state == "unreachable":
            self._notify(coordinator_event(
                state, True, "the coordinator is unreachable: links that stand keep "
                "working; no new peers are found and nothing is relayed until it is back"))
        elif state == "registered" and not first:
            self._notify(coordinator_event(state, False, "the coordinator is back"))
        elif state == "registered":
            self._notify(coordinator_event(state, False, "registered with the coordinator"))

    def _on_message(self, event: MessageReceived, now: float) -> None:
        link = self._links.get(event.peer)
        if link is None:
            return
        if event.type == PacketType.ENVIRONMENTAL and is_snapshot_request(event.payload):
            self.sync_api.send_snapshot(event.peer, now)
            return
        if event.type == PacketType.ENVIRONMENTAL and (
                (hidden := read_notice(event.payload)) is not None):
            self._on_visibility(link, hidden, now)
            return
        try:
            game_event = decode_peer_event_untrusted(event.type, event.payload)
        except IpcError as error:
            self.events_invalid += 1
            link.invalid += 1
            self.offend(event.peer, Offence.INVALID_PACKET, str(error), now)
            return
        extra = self._judge(event.peer, game_event, now)
        if extra is None:
            return  # refused, expired or stale
        link.received[game_event.OP] += 1
        self.events_received[game_event.OP] += 1
        message = game_event_to_message(game_event, event.peer.hex())
        message.update(extra)
        self._notify(message)

    def _on_visibility(self, link: PeerLink, hidden: bool, now: float) -> None:
        """The peer's player is hidden (not drawn: what was drawn of it is
        dropped; its positions and effects not pushed) or shown again (its
        daemon sends where it is at once; a position received while it was
        hidden, in flight or from a daemon that does not hide, is pushed now)."""
        peer = self.sync.peer(link.key, now)
        if peer.hidden == hidden:
            return
        self.sync.set_hidden(link.key, hidden, now)
        self._notify(hidden_event(link.key.hex(), hidden))
        if not hidden and peer.track:
            reported = peer.reported
            assert reported is not None
            self._notify(game_event_to_message(_as_position(reported), link.key.hex()))

    def _judge(self, peer: bytes, event: GameEvent, now: float) -> dict[str, Any] | None:
        """Spec 4.2, 5.2, 9: what a peer's event adds to the pushed event, or None
        when it is not to be shown (an offence counted, expired, or stale)."""
        sync = self.sync
        extra: dict[str, Any] = {}
        if isinstance(event, VisualEffect):
            rtt = self.endpoint.session_statistics(peer).rtt.smoothed
            check, remaining = sync.on_effect(peer, event, now, rtt)
            extra["remaining_ms"] = remaining
        elif isinstance(event, AiInteraction):
            check, remaining = sync.on_interaction(peer, event, now), 0
            extra["claim"] = "claimed"  # until the server confirms it: verify_interaction
        elif isinstance(event, Environment | LegendData):
            return extra if sync.on_state(event) else None
        elif isinstance(event, Chat):
            check, remaining = sync.on_chat(peer, now), 0
        else:
            check, remaining = None, 0
        if check is not None:
            self.offend(peer, check[0], check[1], now)
            return None
        return None if remaining is None else extra

    def offend(self, peer: bytes, offence: Offence, detail: str, now: float) -> None:
        """Count an offence of ``peer``; past the anomaly threshold its data is
        dropped from now on, its link closed, the coordinator told (spec 5.2)."""
        if not self.sync.offend(peer, offence, now):
            return
        score = self.sync.peer(peer, now).score
        self.sync.ban(peer, now)
        if self.mesh is not None:  # not dialled again while banned
            self.mesh.ban(peer, now + self.sync.rules.ban_seconds, now)
        self._notify(anomaly_event(peer.hex(), round(score.value(now), 2), offence.value,
                                   detail, dict(score.counts)))
        if self.mesh is not None:
            self.mesh.report("warn", "anomalous_peer", f"{offence.value}: {detail}"[:200], now,
                             peer)
        if peer in self._links:
            self.endpoint.close(peer, now)

    def sync_request(self, request: SyncRequest, now: float) -> dict[str, Any]:
        """``render``, ``server_position``, ``verify_interaction``, ``shared_state``,
        ``request_snapshot`` (docs/ipc.md 6.8)."""
        self._require_enabled()
        return self.sync_api.handle(request, now)

    @property
    def links(self) -> dict[bytes, PeerLink]:
        return self._links

    @property
    def now_hint(self) -> float:
        """The latest ``now`` the node was given."""
        return self._now

    def in_view(self, link: PeerLink, own: PositionState, now: float) -> bool:
        return self._in_view(link, own, now)

    def send_deferred(self, now: float) -> bool:
        """Positions the rate limit held back (a stop, a turn: what dead reckoning
        cannot guess) go out as soon as it allows; True while some still wait."""
        waiting = False
        for link in self._links.values():
            state = link.deferred
            if state is None:
                continue
            if self.own_hidden or not self._in_view(link, state, now):
                link.deferred = None
            elif link.positions.take(1, now):
                link.deferred = None
                self.hand_position(link, state, now)
                link.sent[Position.OP] += 1
            else:
                waiting = True
        return waiting

    def hand_position(self, link: PeerLink, state: PositionState, now: float) -> None:
        """Give ``state`` to the link's position channel (which leaves out what
        the peer can predict). A course change (a start, a stop, a turn, a jump:
        what dead reckoning cannot guess) goes again at each of POSITION_REPEATS
        after it, unless the peer acknowledged it by then (it acknowledges after
        up to position_ack_delay, so the first repeat nearly always goes, the
        second only when the course change and its repeat were lost): a lost
        stop or turn would leave the peer walking the player on until the next
        update."""
        if changes_course(link.last_position, state):
            link.course_at, link.repeats = now, 0
        self.endpoint.send_position(link.key, state, now, fresh=link.fresh)
        link.fresh = False
        link.last_position = state

    def repeat_positions(self, now: float) -> None:
        """The course changes due again (see hand_position), to peers still in view."""
        own = self.own_position
        for key, link in self._links.items():
            at = _repeat_due(link)
            if at is None or at > now:
                continue
            link.repeats += 1
            if own is not None and not self.own_hidden and self._in_view(link, own, now) and (
                    self.endpoint.repeat_position(key, now)):
                self.positions_repeated += 1

    def next_repeat(self) -> float | None:
        times = [at for link in self._links.values() if (at := _repeat_due(link)) is not None]
        return min(times) if times else None

    def _set_own_position(self, state: PositionState) -> None:
        old = self.own_position
        self.own_position = state
        if old is None or (old.x, old.y, old.map) != (state.x, state.y, state.map):
            for link in self._links.values():
                self._prioritize(link)

    def _prioritize(self, link: PeerLink) -> None:
        """Nearer peers first when the shared budget is short (spec 3.3)."""
        self.endpoint.set_priority(link.key, proximity_weight(self.own_position, link.position))

    def _on_position(self, event: PositionReceived, now: float) -> None:
        link = self._links.get(event.peer)
        if link is None:
            return
        state = event.state
        if not _MAP_NAME.fullmatch(state.map):  # what a client could not send either
            self.events_invalid += 1
            link.invalid += 1
            self.offend(event.peer, Offence.INVALID_PACKET, "impossible map name", now)
            return
        check, news = self.sync.on_position(event.peer, state, now)
        if check is not None:  # spec 5.2: an impossible move is not shown
            self.offend(event.peer, check[0], check[1], now)
            return
        if not news:  # the same position again (a course change repeated): shown once
            return
        moved = link.position is None or (link.position.x, link.position.y) != (state.x, state.y)
        link.position = state
        link.position_at = now
        if self.mesh is not None:
            self.mesh.on_peer_position(event.peer, state, now)
        if moved:
            self._prioritize(link)
        link.received[Position.OP] += 1
        self.events_received[Position.OP] += 1
        if self.sync.peer(event.peer, now).hidden:  # checked and kept, not shown
            self.sync.hidden_dropped += 1
            return
        self._notify(game_event_to_message(_as_position(state), event.peer.hex()))

    def _max_links(self) -> int:
        """max_peers, plus the warm backups when a coordinator chooses the peers."""
        return self.p2p.max_peers + (self.config.coordinator.backups if self.mesh else 0)

    def _on_established(self, event: SessionEstablished, now: float) -> None:
        was_pending = self._pending.pop(event.peer, None) is not None
        if self.sync.banned(event.peer, now):  # flagged as a cheat: not again for a while
            self._links.pop(event.peer, None)
            self.endpoint.close(event.peer, now)
            if was_pending:
                self._notify(link_event(event.peer.hex(), "failed", None, reason="banned"))
            return
        if event.peer not in self._links and len(self._links) >= self._max_links():
            self.endpoint.close(event.peer, now)  # a link beyond max_peers
            if was_pending:
                self._notify(link_event(event.peer.hex(), "failed", None,
                                        reason="too_many_peers"))
            return
        if event.peer in self._links:  # its daemon restarted: a new peer, on the same key
            self._notify(peer_left_event(event.peer.hex(), "restarted"))
        p2p = self.p2p
        self._links[event.peer] = PeerLink(
            key=event.peer,
            address=event.address,
            since=now,
            positions=TokenBucket(p2p.position_update_rate, p2p.position_update_rate, now),
            effects=TokenBucket(p2p.effect_update_rate, p2p.effect_update_rate, now),
        )
        self._prioritize(self._links[event.peer])
        self._notify(peer_joined_event(event.peer.hex(), format_address(event.address)))
        self._introduce_position(self._links[event.peer], now)
        self.sync_api.ask_snapshot(event.peer, now)  # the area's state, one round trip away

    def _introduce_position(self, link: PeerLink, now: float) -> None:
        """A new link learns where this player stands at once: a player standing
        still sends no position updates, and the mesh needs the distance."""
        own = self.own_position
        if self.own_hidden:  # the peer learns that, and nothing of where
            self.endpoint.send(link.key, PacketType.ENVIRONMENTAL, visibility_notice(True), now,
                               VISIBILITY_KEY)
            return
        if own is None or not self._in_view(link, own, now):
            return
        self.hand_position(link, own, now)
        link.sent[Position.OP] += 1

    def _on_closed(self, event: SessionClosed) -> None:
        self.sync.forget(event.peer)
        if self._links.pop(event.peer, None) is not None:
            self._notify(peer_left_event(event.peer.hex(), event.reason.value))
        elif self._pending.pop(event.peer, None) is not None:
            self._notify(link_event(event.peer.hex(), "failed", None,
                                    reason=event.reason.value))

    def _smoothed_rtt_ms(self, peer: bytes) -> float | None:
        try:
            return _ms(self.endpoint.session_statistics(peer).rtt.smoothed)
        except SessionError:  # the session closed in the same breath
            return None

    def _notify(self, message: dict[str, Any]) -> None:
        if len(self._notifications) >= MAX_NOTIFICATIONS:
            self._notifications.popleft()
            self.notifications_dropped += 1
        self._notifications.append(message)

    # -- status and statistics (spec §8.2) -----------------------------------

    def peers(self, now: float) -> list[dict[str, Any]]:
        rows = []
        for key, link in self._links.items():
            stats = self.endpoint.session_statistics(key)
            rtt = stats.rtt
            rows.append({
                "peer": key.hex(),
                "address": format_address(link.address),
                "path": self._path(link.address),
                "role": self._role(key),
                "state": "established",
                "since_s": round(now - link.since, 3),
                "rtt_ms": _ms(rtt.smoothed),
                "bytes_sent": stats.bytes_sent,
                "bytes_received": stats.bytes_received,
                "packets_sent": stats.packets_sent,
                "packets_received": stats.packets_received,
                "loss": round(stats.inbound_loss, 4),
                "anomalous": stats.anomalous,
                "quality": stats.quality,
                "budget_waits": stats.budget_waits,
                "queued_bytes": stats.queued,
                "retransmissions": stats.channels["retransmissions"],
                "in_flight": stats.channels["in_flight"],
                "events_sent": dict(link.sent),
                "events_received": dict(link.received),
                "sync": self.sync.peer_row(key, now),
            })
        for key, address in self._pending.items():
            rows.append({"peer": key.hex(), "address": format_address(address),
                         "path": self._path(address), "state": "connecting"})
        return rows

    def _path(self, address: Address) -> str:
        """direct, turn (through a TURN server) or relay (the coordinator's)."""
        return _kind_of(address, self.nat)

    def nat_status(self, now: float) -> dict[str, Any]:
        """The NAT picture for ``p2pctl nat`` (docs/ipc.md): addresses, behaviour,
        port mapping, candidates, and the path each peer uses."""
        nat = self.nat
        mesh = self.mesh
        paths = []
        for key, link in self._links.items():
            paths.append({"peer": key.hex(), "path": self._path(link.address),
                          "address": format_address(link.address),
                          "since_s": round(now - link.since, 3)})
        for key, address in self._pending.items():
            paths.append({"peer": key.hex(), "path": self._path(address),
                          "address": format_address(address), "state": "connecting"})
        body: dict[str, Any] = {
            "enabled": nat is not None,
            "udp_address": format_address(self.udp_address) if self.udp_address else None,
            "relay_only": self.config.coordinator.relay_only,
            "peers": paths,
            "path_fallbacks": mesh.paths.fallbacks if mesh is not None else 0,
            "path_recoveries": mesh.paths.recoveries if mesh is not None else 0,
        }
        if nat is not None:
            body.update(nat.status())
        else:
            body.update({"local": [], "public": {}, "behaviour": None, "port_mapping": None,
                         "turn": None, "candidates": []})
        if mesh is not None and mesh.registered is not None and (
                "coordinator" not in body["public"]):
            body["public"]["coordinator"] = mesh.registered.address
        body["dropped_unknown"] = self.dropped_unknown
        return body

    def _role(self, peer: bytes) -> str:
        """``active`` or ``backup`` as the mesh holds it; ``manual`` without one."""
        mesh = self.mesh
        if mesh is None:
            return "manual"
        link = mesh.links.get(peer)
        return link.role.value if link is not None else "active"

    def status(self, now: float) -> dict[str, Any]:
        return {
            "state": "running",
            "p2p_enabled": self.enabled,
            "public_key": self.public_key.hex(),
            "udp_address": format_address(self.udp_address) if self.udp_address else None,
            "encryption_level": self.p2p.encryption_level.value,
            "max_peers": self.p2p.max_peers,
            "peers": self.peers(now),
            "coordinator": self._coordinator_status(),
        }

    def _coordinator_status(self) -> dict[str, Any] | None:
        mesh = self.mesh
        if mesh is None:
            address = self.config.coordinator.address
            return None if address is None else {"address": address, "state": "no_token"}
        registered = mesh.registered
        return {
            "address": format_address(mesh.coordinator_address),
            "state": ("registered" if mesh.coordinator_up and registered is not None
                      else "connecting" if registered is None else "unreachable"),
            "daemon_id": registered.daemon_id if registered is not None else None,
            "seen_as": registered.address if registered is not None else None,
            "candidates": len(mesh.candidates),
            "active": len(mesh.active()),
            "backups": len(mesh.backups()),
        }

    def totals(self, now: float, internal_errors: int = 0) -> Totals:
        """The cumulative counters behind the per-second history."""
        endpoint = self.endpoint.statistics()
        drops = endpoint.drops
        peers = {}
        for key, link in self._links.items():
            stats = self.endpoint.session_statistics(key)
            peers[key] = PeerTotals(
                path=self._path(link.address), role=self._role(key), rtt_ms=_ms(stats.rtt.smoothed),
                loss=round(stats.inbound_loss, 4), anomalous=stats.anomalous,
                bytes_in=stats.bytes_received, bytes_out=stats.bytes_sent,
                packets_in=stats.packets_received, packets_out=stats.packets_sent,
                retransmissions=stats.channels.get("retransmissions", 0),
                drops=sum(stats.drops.values()))
        return Totals(
            bytes_in=self.bytes_in.total, bytes_out=self.bytes_out.total,
            packets_in=endpoint.datagrams_received, packets_out=endpoint.datagrams_sent,
            events_sent=dict(self.events_sent), events_received=dict(self.events_received),
            rate_limited=dict(self.events_limited),
            auth_failures=sum(drops.get(r, 0) for r in _AUTH_FAILURES),
            drops=sum(drops.values()), invalid_events=self.events_invalid,
            rate_excess=drops.get("rate_limited", 0), internal_errors=internal_errors,
            peers=peers)

    def record_second(self, now: float, internal_errors: int = 0) -> None:
        """Once a second, from the shell: a sample for the history, and the
        daemon's own errors reported to the coordinator (spec 8.1)."""
        self._now = now
        self.history.record(now, self.totals(now, internal_errors))
        mesh = self.mesh
        if (mesh is not None and internal_errors > self._internal_errors_reported
                and mesh.report("error", "internal_errors",
                                f"{internal_errors} internal errors in the daemon (see its log)",
                                now)):
            self._internal_errors_reported = internal_errors

    def graph_links(self, now: float) -> list[dict[str, Any]]:
        """The connection graph's edges: each link and attempt, with its state."""
        latest = self.history.latest()
        rows = []
        for row in self.peers(now):
            entry = {name: row[name] for name in _LINK_FIELDS if name in row}
            entry["id"] = row["peer"][:PEER_ID_DIGITS]
            second = latest.peers.get(entry["id"]) if latest is not None else None
            entry["idle_s"] = second.idle_s if second is not None else 0
            rows.append(entry)
        return rows

    def stats(self, now: float, history: int = 0) -> dict[str, Any]:
        """Spec 8.2's statistics; with ``history``, the newest seconds of the
        per-second history as well (docs/ipc.md 11.3)."""
        result = self._stats(now)
        result["public_key"] = self.public_key.hex()
        result["coordinator"] = self._coordinator_status()
        result["links"] = self.graph_links(now)
        result["bandwidth"]["limit_bytes_per_s_total"] = int(
            self.p2p.total_bandwidth_limit * 1024)
        drops = result["packets"]["dropped_by_reason"]
        result["errors"]["rate_excess"] = drops.get("rate_limited", 0)
        mesh = self.mesh
        result["reports"] = ({"sent": mesh.reports_sent, "dropped": mesh.reports_dropped}
                             if mesh is not None else None)
        result["history_seconds"] = self.history.capacity
        samples = list(self.history.samples)[-history:] if history > 0 else []
        result["history"] = [sample.to_wire() for sample in samples]
        return result

    def _stats(self, now: float) -> dict[str, Any]:
        endpoint = self.endpoint.statistics()
        samples = sorted(x for key in self._links for x in self.endpoint.rtt_samples(key))
        drops = endpoint.drops
        anomalous = [key.hex() for key in self._links
                     if self.endpoint.session_statistics(key).anomalous]
        return {
            "connections": len(self._links),
            "anomalous_peers": anomalous,
            "bandwidth": {
                "in_bytes_per_s": self.bytes_in.per_second(now),
                "out_bytes_per_s": self.bytes_out.per_second(now),
                "in_bytes_total": self.bytes_in.total,
                "out_bytes_total": self.bytes_out.total,
                "limit_bytes_per_s_per_peer": int(self.p2p.bandwidth_limit * 1024),
            },
            "packets": {
                "sent": endpoint.datagrams_sent,
                "received": endpoint.datagrams_received,
                "dropped": sum(drops.values()),
                "dropped_by_reason": dict(drops),
                "dropped_while_disabled": self.dropped_while_disabled,
            },
            "latency_ms": {  # round trips, recent samples of every peer
                "samples": len(samples),
                "avg": _ms(sum(samples) / len(samples)) if samples else None,
                "min": _ms(samples[0]) if samples else None,
                "max": _ms(samples[-1]) if samples else None,
                "p50": _ms(percentile(samples, 0.5)),
                "p99": _ms(percentile(samples, 0.99)),
            },
            "errors": {
                "decode": sum(n for reason, n in drops.items() if reason not in _NOT_DECODE),
                "auth": drops.get("auth_failed", 0) + drops.get("bad_mac", 0)
                + drops.get("handshake_failed", 0),
                "retransmissions": sum(
                    self.endpoint.session_statistics(key).channels["retransmissions"]
                    for key in self._links),
                "invalid_events": self.events_invalid,
            },
            "events": {
                "sent": dict(self.events_sent),
                "received": dict(self.events_received),
                "rate_limited": dict(self.events_limited),
                "out_of_view": self.positions_hidden,
                "notifications_dropped": self.notifications_dropped,
            },
            "sync": self.sync.statistics(now),
        }


_AUTH_FAILURES = ("auth_failed", "bad_mac", "handshake_failed")
_LINK_FIELDS = ("peer", "address", "path", "role", "state", "rtt_ms", "loss", "anomalous",
                "quality", "since_s")
_NOT_DECODE = frozenset({"auth_failed", "bad_mac", "handshake_failed", "replayed",
                         "handshake_replayed", "queue_full", "peer_refused"})


def changes_course(last: PositionState | None, state: PositionState) -> bool:
    """Whether the peer, walking ``last`` on, could not guess ``state``: a start,
    a stop, a turn, another speed or map, or a jump of more than a cell."""
    return (last is None or last.moving != state.moving or last.dir != state.dir
            or last.speed != state.speed or last.map != state.map
            or (not state.moving and (abs(last.x - state.x) > 1 or abs(last.y - state.y) > 1)))


def _as_position(state: PositionState) -> Position:
    return Position(id=0, map=state.map, x=state.x, y=state.y, dir=state.dir,
                    speed=state.speed, moving=state.moving, tick=state.tick)


def _repeat_due(link: PeerLink) -> float | None:
    if link.course_at is None or link.repeats >= len(POSITION_REPEATS):
        return None
    return link.course_at + POSITION_REPEATS[link.repeats]


def on_course(last: PositionState | None, state: PositionState) -> bool:
    """Whether ``state`` is a next cell of the walk of ``last``: the same course,
    another cell, within a cell of where dead reckoning from ``last`` puts it."""
    if (last is None or changes_course(last, state) or not state.moving
            or (last.x, last.y) == (state.x, state.y)):
        return False
    x, y = predict(last, state.tick)
    return abs(x - state.x) <= 1 and abs(y - state.y) <= 1


def proximity_weight(own: PositionState | None, peer: PositionState | None) -> float:
    """1 for a peer on this player's cell, 0.5 at the edge of view range, falling
    beyond; 0.05 on another map; 0.25 while either position is unknown."""
    if own is None or peer is None:
        return 0.25
    if own.map != peer.map:
        return 0.05
    distance = chebyshev((own.x, own.y), (peer.x, peer.y))  # cells, as the game counts
    return 1.0 / (1.0 + distance / VIEW_RANGE)


def _latest_value_key(event: GameEvent) -> bytes | None:
    """The key under which a newer value supersedes an older one, or None."""
    if isinstance(event, Environment):
        name = f"environment\0{event.kind}\0{event.key}"
    elif isinstance(event, LegendData):
        name = f"legend\0{event.ai_entity_id}\0{event.kind}"
    else:
        return None
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def _kind_of(address: Address, nat: NatAgent | None) -> str:
    if is_relay_address(address):
        return "relay"
    if is_turn_path(address) or (nat is not None and nat.is_relayed(address)):
        return "turn"
    return "direct"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
