"""The NAT agent: a daemon's NAT traversal on its one socket, sans-IO (spec §3.2).

Owned by the daemon's :class:`~p2pd.node.Node`, driven with ``now`` like the
rest of the core. It

- learns the socket's public mapping from STUN servers (Binding, again every
  ``stun_refresh`` seconds, which also keeps that mapping open) and runs NAT
  behaviour discovery (:mod:`p2pd.nat.discovery`);
- holds a TURN allocation when a TURN server is configured
  (:mod:`p2pd.nat.turn`) and wraps datagrams for ``("turn/<ip>", port)``
  paths into Send indications or ChannelData, and unwraps what comes back;
- gathers this daemon's candidates (host, mapped from the port mapping hook,
  srflx, relay) for the coordinator to hand to peers;
- runs the **connectivity checks** to a peer: the session's own handshake
  request, sent to every candidate path of the peer at once
  (:meth:`NatAgent.begin_checks`, :meth:`NatAgent.expand`). The first path
  whose authenticated handshake response arrives carries the session. Direct
  paths get the first request with a low IP TTL (``punch_ttl``): it opens this
  side's NAT mapping and expires before the peer's NAT, so that the peer's
  first packets, arriving a moment later, find a mapping instead of creating
  a conflicting conntrack entry (two Linux MASQUERADE NATs). TURN paths join
  after ``turn_delay``, the coordinator's relay after ``relay_delay``: the last
  resort. Later, better paths are probed by the mesh's PathMonitor with sealed
  PINGs (:meth:`NatAgent.upgrade_paths`).

Why the checks are p2pd handshakes and not STUN with short-term credentials
(ICE): a handshake request is already authenticated (mac1 under the peer's
static key, then Noise IK with the coordinator's certificate); its answer is
the session itself, so the first path that answers carries a session at
once; and the daemon never answers STUN from anyone, so its socket is no
STUN reflector to peers, and nothing extra is exchanged for credentials.
A spoofed or replayed check cannot move a session (docs/protocol.md 5.4).

In relay-only mode no candidate with this daemon's IP address is published
(only ``relay``), and no path to a peer is direct: only TURN paths and the
coordinator relay.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pd.ipc.fields import format_address
from p2pd.nat.candidates import (
    Candidate,
    PortMapper,
    is_turn_path,
    turn_path,
    turn_peer,
)
from p2pd.nat.demux import P2P_MAGIC
from p2pd.nat.discovery import Behaviour, Discovery, Test
from p2pd.nat.stun import (
    Address,
    Attr,
    Class,
    Method,
    StunError,
    StunMessage,
    binding_request,
    decode_address_untrusted,
    decode_message_untrusted,
    mapped_address_untrusted,
)
from p2pd.nat.transactions import RetransmitSettings, Transactions
from p2pd.nat.turn import TurnClient, TurnCredentials, TurnSettings, TurnState

_HANDSHAKE_REQUEST = b"\x00\x01"  # packet type at offset 8 of a p2pd header
MAX_CHECK_GROUPS = 64
MAX_PATHS = 12  # paths checked per peer
MAX_KNOWN_HOSTS = 1024  # peers' host candidates remembered (not relayed to by TURN)


@dataclass(frozen=True, slots=True)
class NatSettings:
    stun_servers: tuple[Address, ...] = ()
    turn_server: Address | None = None
    turn_credentials: TurnCredentials | None = None
    relay_only: bool = False
    punch_ttl: int = 2  # IP TTL of the first punch packets; 0: none
    low_ttl_window: float = 0.2  # seconds after a check starts in which punches go low
    turn_delay: float = 0.5  # TURN paths join the checks after this
    relay_delay: float = 1.5  # the coordinator's relay joins after this
    stun_refresh: float = 20.0  # Binding again (keeps the server's mapping open)
    mapping_wait: float = 2.0  # discovery waits this long at most for a port mapping
    discovery: bool = True
    software: str = "p2pd"

    def __post_init__(self) -> None:
        if not 0 <= self.punch_ttl <= 255:
            raise ValueError("punch_ttl must be 0..255")
        if not 0 < self.stun_refresh < 25:
            raise ValueError("stun_refresh must be within 0..25 s (NAT mapping timeouts)")


@dataclass(slots=True)
class _CheckGroup:
    peer: bytes
    started: float
    primary: Address
    paths: list[Address]  # in priority order
    relay: Address | None
    request: bytes | None = None  # the latest handshake request sent on the paths
    joined: int = 0  # 1: the TURN paths had it, 2: the coordinator's relay too


@dataclass(slots=True)
class _Counters:
    stun_received: int = 0
    stun_bad: int = 0
    stun_unmatched: int = 0
    turn_data: int = 0
    turn_bad: int = 0
    punches: int = 0
    checks_started: int = 0


class NatAgent:
    def __init__(self, settings: NatSettings, *, clock: Callable[[], float] | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.settings = settings
        self.host_addresses: list[Address] = []
        self.port_mapper: PortMapper | None = None  # filled by a port mapper (UPnP/PMP/PCP)
        self._mapping_seen: Address | None = None  # its mapping when discovery last began
        self._discover_by: float | None = None  # discovery waits for the mapping until then
        self.coordinator_seen: Address | None = None  # registration's "address as seen"
        self._tx: Transactions[tuple[str, Address]] = Transactions(
            RetransmitSettings(rto=0.25, rc=4, rm=4), random_bytes=random_bytes)
        self._random = random_bytes
        self.srflx: dict[Address, Address] = {}  # STUN server -> mapped address
        self.discovery = Discovery(list(settings.stun_servers), self.host_addresses)
        self._other: Address | None = None
        self._next_refresh: float | None = None
        self.turn: TurnClient | None = None
        if settings.turn_server is not None and settings.turn_credentials is not None:
            self.turn = TurnClient(settings.turn_server, settings.turn_credentials,
                                   TurnSettings(), clock=clock, random_bytes=random_bytes,
                                   software=settings.software)
        self._groups: dict[Address, _CheckGroup] = {}  # by primary path
        self._by_peer: dict[bytes, _CheckGroup] = {}
        self._peer_paths: dict[bytes, list[Address]] = {}  # direct paths, for upgrades
        self._relay_candidates: set[Address] = set()  # peers' TURN addresses seen
        self._hosts: set[Address] = set()  # peers' host candidates (not for TURN)
        self._outgoing: list[tuple[bytes, Address, int | None]] = []
        self.counters = _Counters()
        self._version = 0  # bumps when the candidates change
        self._published: tuple[str, ...] = ()
        self.started = False

    # -- lifecycle -----------------------------------------------------------

    def set_host_addresses(self, addresses: list[Address]) -> None:
        self.host_addresses[:] = addresses

    def start(self, now: float) -> None:
        self.started = True
        self._refresh_stun(now)
        if self.settings.discovery and self.settings.stun_servers and \
                not self.settings.relay_only:
            self._discover_by = now + self.settings.mapping_wait
            self._discover(now)
        if self.turn is not None:
            self.turn.start(now)

    def _discover(self, now: float) -> None:
        """Start behaviour discovery, unless the router's port mapping is still being
        asked for (``mapping_wait`` at most): a mapped port takes packets from anyone,
        and a test answer that reaches the router before the mapping leaves a conntrack
        entry that keeps the later ones from the daemon."""
        mapper = self.port_mapper
        if mapper is not None and mapper.status().get("state") == "requesting" and \
                self._discover_by is not None and now < self._discover_by:
            return
        self._discover_by = None
        self._mapping_seen = mapper.mapped_address() if mapper is not None else None
        self._tx.cancel_where(lambda tag: tag[0] == "refresh")  # an earlier run's tests go
        self.discovery.start()
        self._run_discovery(now)

    def close(self, now: float) -> None:
        if self.turn is not None:
            self.turn.close(now)

    # -- receiving -----------------------------------------------------------

    def refused(self) -> int:
        """STUN and TURN datagrams refused so far (bad, unmatched, unexpected)."""
        c = self.counters
        return c.stun_bad + c.stun_unmatched + c.turn_bad

    def receive_stun(self, data: bytes, source: Address,
                     now: float) -> tuple[bytes, Address] | None:
        """A STUN message on the socket: a response to one of our transactions,
        or a TURN Data indication (whose inner datagram comes back, with the
        ``turn/`` path it came over). Anything else is dropped and counted."""
        try:
            message = decode_message_untrusted(data)
        except StunError:
            self.counters.stun_bad += 1
            return None
        self.counters.stun_received += 1
        turn = self.turn
        if turn is not None and source == turn.server:
            if message.method == Method.DATA and message.cls is Class.INDICATION:
                return self._from_turn(lambda: turn.unwrap_data_indication_untrusted(message))
            if turn.owns(message):
                turn.receive(message, now)
                return None
        if message.cls in (Class.SUCCESS, Class.ERROR):
            done = self._tx.receive(message)
            if done is not None:
                self._on_binding(done[0], message, now)
                return None
        self.counters.stun_unmatched += 1  # requests from anyone are never answered
        return None

    def receive_channel_data(self, data: bytes, source: Address) -> tuple[bytes, Address] | None:
        turn = self.turn
        if turn is None or source != turn.server:
            self.counters.turn_bad += 1
            return None
        return self._from_turn(lambda: turn.unwrap_channel_data_untrusted(data))

    def _from_turn(self, unwrap: Callable[[], tuple[Address, bytes]]
                   ) -> tuple[bytes, Address] | None:
        """The p2pd datagram a peer sent through the TURN server, with its ``turn/``
        pseudo-address; None (counted) when ``unwrap`` refuses it or it is no
        p2pd datagram."""
        try:
            peer, inner = unwrap()
        except StunError:
            self.counters.turn_bad += 1
            return None
        if inner[:4] != P2P_MAGIC:
            self.counters.turn_bad += 1
            return None
        self.counters.turn_data += 1
        return inner, turn_path(peer)

    def _on_binding(self, tag: tuple[str, Address], message: StunMessage, now: float) -> None:
        name, server = tag
        mapped: Address | None = None
        other: Address | None = None
        if message.cls is Class.SUCCESS:
            try:
                mapped = mapped_address_untrusted(message)
                value = message.get(Attr.OTHER_ADDRESS)
                other = decode_address_untrusted(value) if value is not None else None
            except StunError:
                self.counters.stun_bad += 1
        if name == "refresh":
            if mapped is not None and self.srflx.get(server) != mapped:
                self.srflx[server] = mapped
                self._version += 1
            return
        if name in ("m1", "s2") and mapped is not None and self.srflx.get(server) != mapped:
            self.srflx[server] = mapped
            self._version += 1
        self.discovery.result(name, mapped, other)
        self._run_discovery(now)
        if self.discovery.done:
            self._version += 1  # the plan may change with the behaviour

    def _run_discovery(self, now: float) -> None:
        for test in self.discovery.next_tests():
            self._binding(test.name, test, now)

    def _binding(self, name: str, test: Test, now: float) -> None:
        tid = self._tx.new_id()
        request = binding_request(tid, change_ip=test.change_ip, change_port=test.change_port,
                                  software=self.settings.software)
        self._tx.start(tid, request, test.address, (name, test.address), now)

    def _refresh_stun(self, now: float) -> None:
        for server in self.settings.stun_servers:
            if not any(tag == ("refresh", server) for tag in self._tx.tags()):
                self._binding("refresh", Test("refresh", server), now)
        self._next_refresh = now + self.settings.stun_refresh

    # -- timers --------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        for name, server in self._tx.handle_timer(now):
            if name != "refresh":
                self.discovery.result(name, None, None)
                self._run_discovery(now)
            elif server in self.srflx:  # the server stopped answering: not a candidate
                del self.srflx[server]
                self._version += 1
        if self._next_refresh is not None and now >= self._next_refresh and \
                self.settings.stun_servers:
            self._refresh_stun(now)
        turn = self.turn
        if turn is not None:
            was = turn.relayed
            turn.handle_timer(now)
            if turn.relayed != was:
                self._version += 1
        for group in list(self._groups.values()):
            self._join(group, now)
        if self._discover_by is not None and now >= self._discover_by:
            self._discover(now)

    def deadline(self) -> float | None:
        times = [self._tx.deadline()]
        if self.settings.stun_servers:
            times.append(self._next_refresh)
        if self.turn is not None:
            times.append(self.turn.deadline())
        times += [self._next_join(group)[1] for group in self._groups.values()]
        times.append(self._discover_by)
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def _next_join(self, group: _CheckGroup) -> tuple[int, float | None]:
        """The next stage of ``group``'s checks (1: its TURN paths, 2: the relay) and
        when it is due; (3, None) when nothing more joins."""
        if group.request is None:
            return 3, None
        if group.joined < 1 and any(self.is_relayed(p) for p in group.paths):
            return 1, group.started + self.settings.turn_delay
        if group.joined < 2 and group.relay is not None and len(group.paths) > 1:
            return 2, group.started + self.settings.relay_delay
        return 3, None

    def _join(self, group: _CheckGroup, now: float) -> None:
        """Paths that join the checks get the handshake request in flight when they are
        due, not at its next retransmission (a second or more later)."""
        while True:
            stage, due = self._next_join(group)
            if due is None or now < due or group.request is None:
                return
            group.joined = stage
            if stage == 1:
                for path in group.paths:
                    if self.is_relayed(path):
                        self._outgoing += self._wrap(group.request, path, None, now)
            elif group.relay is not None:
                self._outgoing.append((group.request, group.relay, None))

    def take_datagrams(self) -> list[tuple[bytes, Address, int | None]]:
        """What the agent itself sends (STUN, TURN), and punches with their TTL."""
        out = self._outgoing
        self._outgoing = []
        out.extend((data, address, None) for data, address in self._tx.datagrams_to_send())
        if self.turn is not None:
            was = self.turn.relayed
            out.extend((data, address, None) for data, address in self.turn.datagrams_to_send())
            if self.turn.relayed != was:
                self._version += 1
        return out

    def notice_port_mapping(self, now: float) -> None:
        """Run behaviour discovery again when the router's port mapping came, changed
        or went: a mapped port takes packets from anyone (its filtering is then
        endpoint-independent), and discovery that ran before the mapping, or while
        it arrived, would tell ``p2pctl nat`` what no longer holds."""
        if self._discover_by is not None:  # discovery waits for the mapping
            self._discover(now)
            return
        mapper = self.port_mapper
        mapped = mapper.mapped_address() if mapper is not None else None
        settings = self.settings
        if mapped == self._mapping_seen or not (
                self.started and settings.discovery and settings.stun_servers) or \
                settings.relay_only:
            return
        self._discover(now)

    # -- candidates ------------------------------------------------------------

    def candidates(self) -> list[Candidate]:
        """This daemon's candidates, best first, without duplicates."""
        found: list[Candidate] = []
        if not self.settings.relay_only:
            found += [Candidate("host", a) for a in self.host_addresses]
            mapper = self.port_mapper
            mapped = mapper.mapped_address() if mapper is not None else None
            if mapped is not None:
                found.append(Candidate("mapped", mapped))
            if self.discovery.mapping not in (Behaviour.ADDRESS_DEPENDENT,
                                              Behaviour.ADDRESS_AND_PORT_DEPENDENT):
                # a mapping that varies with the destination is no use to a peer
                found += [Candidate("srflx", a) for a in self.srflx.values()]
        turn = self.turn
        if turn is not None and turn.relayed is not None:
            found.append(Candidate("relay", turn.relayed))
        seen: set[Address] = set()
        out = []
        for candidate in sorted(found, key=lambda c: -c.priority):
            if candidate.address not in seen:
                seen.add(candidate.address)
                out.append(candidate)
        return out[:8]

    def candidates_to_publish(self) -> tuple[str, ...] | None:
        """The candidate texts when they changed since last published, else None."""
        texts = tuple(c.encode() for c in self.candidates())
        if texts == self._published:
            return None
        self._published = texts
        return texts

    # -- checks ------------------------------------------------------------------

    def plan(self, peer_candidates: list[Candidate], seen: Address | None,
             relay: Address | None, *, direct_ok: bool = True) -> list[Address]:
        """The paths to check to a peer, best first: its direct candidates (and
        the address the coordinator saw it at), its relayed candidate, the same
        through this daemon's TURN allocation, and the coordinator's relay."""
        direct: list[Address] = []
        relayed: list[Address] = []
        public: list[Address] = []  # where a TURN server can send to
        for candidate in sorted(peer_candidates, key=lambda c: -c.priority):
            (relayed if candidate.kind == "relay" else direct).append(candidate.address)
            if candidate.kind not in ("host", "relay"):
                public.append(candidate.address)
        if seen is not None:
            if seen not in direct:
                direct.append(seen)
            if seen not in public:
                public.append(seen)
        for address in relayed:
            self._relay_candidates.add(address)
        # A peer's host addresses are reachable from its own network only: a TURN
        # server on the internet cannot relay to them (a private address may fail
        # the server's send, which coturn answers by closing the whole allocation,
        # or be a denied peer, which fails every permission asked with it). Its
        # public addresses are its host ones when it has no NAT: then the
        # coordinator saw it there.
        self._hosts.update(address for address in direct if address not in public)
        if len(self._hosts) > MAX_KNOWN_HOSTS:
            self._hosts = {address for address in direct if address not in public}
        paths: list[Address] = []
        if not self.settings.relay_only:
            paths += (direct if direct_ok else []) + relayed
        turn = self.turn
        if turn is not None and turn.state is TurnState.ALLOCATED:
            for address in public + relayed:
                if address[0] not in {a[0] for a in self.host_addresses}:
                    paths.append(turn_path(address))
        if relay is not None:
            paths.append(relay)
        unique: list[Address] = []
        for path in paths:
            if path not in unique:
                unique.append(path)
        return unique[:MAX_PATHS]

    def begin_checks(self, peer: bytes, paths: list[Address], relay: Address | None,
                     now: float) -> Address | None:
        """Check ``paths`` to ``peer``; the path to dial the session on (its
        handshake requests are copied to the others), or None when there is none."""
        if not paths:
            return None
        self.end_checks(peer)
        if len(self._by_peer) >= MAX_CHECK_GROUPS:
            self.end_checks(next(iter(self._by_peer)))
        group = _CheckGroup(peer, now, paths[0], list(paths), relay)
        self._groups[paths[0]] = group
        self._by_peer[peer] = group
        known = self._peer_paths.pop(peer, [])
        self._peer_paths[peer] = [p for p in paths if p != relay] + [
            p for p in known if p not in paths]
        if len(self._peer_paths) > 4 * MAX_CHECK_GROUPS:
            del self._peer_paths[next(iter(self._peer_paths))]
        turn = self.turn
        if turn is not None:
            for path in paths:
                if is_turn_path(path):
                    turn.permit(turn_peer(path)[0], now)
            for path in paths:  # what the peer's own TURN or its NAT may send from
                if not is_turn_path(path) and path != relay and path not in self._hosts:
                    turn.permit(path[0], now)
        self.counters.checks_started += 1
        return paths[0]

    def learned_path(self, peer: bytes, address: Address) -> None:
        """A handshake request of ``peer`` came from ``address`` (peer-reflexive, RFC
        8445 7.3.1.3): a path its NAT opened towards this side. Checked from now on."""
        group = self._by_peer.get(peer)
        if group is None or address in group.paths or len(group.paths) >= MAX_PATHS + 4:
            return
        if self.settings.relay_only and not is_turn_path(address):
            return
        group.paths.insert(0, address)
        paths = self._peer_paths.setdefault(peer, [])
        if address not in paths:
            paths.insert(0, address)
        if group.request is not None and _is_ip(address[0]):
            # the peer's NAT is open towards us there now: our request goes at once,
            # not at the handshake's next retransmission (a quarter second or more on)
            self._outgoing.append((group.request, address, None))

    def end_checks(self, peer: bytes) -> None:
        group = self._by_peer.pop(peer, None)
        if group is not None:
            self._groups.pop(group.primary, None)

    def checking(self, peer: bytes) -> bool:
        return peer in self._by_peer

    def upgrade_paths(self, peer: bytes, current: Address) -> list[Address]:
        """Paths better than ``current`` worth a probe: direct ones first, then
        (from the coordinator's relay) the paths through a TURN server."""
        paths = self._peer_paths.get(peer, [])
        if current in paths:
            return [p for p in paths[:paths.index(current)] if not self.is_relayed(p)][:4]
        direct = [p for p in paths if not self.is_relayed(p)][:4]
        if current in self._relay_candidates or is_turn_path(current):
            return direct
        relayed = [p for p in paths if self.is_relayed(p)]
        turn = self.turn
        if turn is not None and turn.state is TurnState.ALLOCATED and not self.settings.relay_only:
            relayed += [turn_path(p) for p in paths if not is_turn_path(p)
                        and p not in self._relay_candidates and p not in self._hosts]
        elif turn is not None and turn.state is TurnState.ALLOCATED:
            relayed += [turn_path(p) for p in paths if not is_turn_path(p)
                        and p not in self._hosts]
        if self.settings.relay_only:
            direct = []
            relayed = [p for p in relayed if is_turn_path(p)]
        return direct + relayed[:4]

    @property
    def gathered(self) -> bool:
        """Whether the first candidates are in: each STUN server answered or gave up,
        and the TURN allocation is done or failed (the coordinator hands out what
        a daemon published before its first presence)."""
        if any(tag[0] in ("refresh", "m1") for tag in self._tx.tags()):
            return False
        return self.turn is None or self.turn.state is not TurnState.ALLOCATING

    def is_relayed(self, address: Address) -> bool:
        """A path through a TURN server (this side's or the peer's)."""
        return is_turn_path(address) or address in self._relay_candidates

    def expand(self, data: bytes, address: Address,
               now: float) -> list[tuple[bytes, Address, int | None]]:
        """One datagram of the endpoint: a handshake request on a peer being
        checked goes to every path due; ``turn/`` paths are wrapped for the
        TURN server."""
        group = self._groups.get(address)
        if group is None or data[8:10] != _HANDSHAKE_REQUEST:
            return self._wrap(data, address, None, now)
        settings = self.settings
        group.request = data
        age = now - group.started
        if age >= settings.relay_delay:
            group.joined = 2
        elif age >= settings.turn_delay:
            group.joined = max(group.joined, 1)
        out: list[tuple[bytes, Address, int | None]] = []
        for path in group.paths:
            if path == group.relay:
                if age >= settings.relay_delay or len(group.paths) == 1:
                    out += self._wrap(data, path, None, now)
            elif is_turn_path(path) or path in self._relay_candidates:
                if age >= settings.turn_delay:
                    out += self._wrap(data, path, None, now)
            elif settings.punch_ttl and age < settings.low_ttl_window:
                self.counters.punches += 1
                out.append((data, path, settings.punch_ttl))
            else:
                out.append((data, path, None))
        return out

    def _wrap(self, data: bytes, address: Address, ttl: int | None,
              now: float) -> list[tuple[bytes, Address, int | None]]:
        if not is_turn_path(address):
            return [(data, address, ttl)]
        turn = self.turn
        if turn is None or turn.state is not TurnState.ALLOCATED:
            return []
        peer = turn_peer(address)
        turn.bind(peer, now)
        return [(turn.wrap(data, peer), turn.server, None)]

    # -- status ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        mapper = self.port_mapper
        return {
            "local": [format_address(a) for a in self.host_addresses],
            "public": {f"stun {format_address(s)}": format_address(m)
                       for s, m in self.srflx.items()} | (
                {"coordinator": format_address(self.coordinator_seen)}
                if self.coordinator_seen is not None else {}),
            "behaviour": self.discovery.status(),
            "port_mapping": mapper.status() if mapper is not None else None,
            "turn": self.turn.status() if self.turn is not None else None,
            "candidates": [c.encode() for c in self.candidates()],
            "relay_only": self.settings.relay_only,
            "checks_running": len(self._by_peer),
            "counters": {
                "stun_received": self.counters.stun_received,
                "stun_bad": self.counters.stun_bad,
                "stun_unmatched": self.counters.stun_unmatched,
                "turn_data": self.counters.turn_data,
                "turn_bad": self.counters.turn_bad,
                "punches_low_ttl": self.counters.punches,
                "checks_started": self.counters.checks_started,
            },
        }


def _is_ip(host: str) -> bool:
    """An IP literal (not a ``turn/`` path, not the coordinator relay's pseudo-host)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

