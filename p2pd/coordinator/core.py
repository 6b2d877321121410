"""The coordinator, sans-IO: admission, certificates, presence, candidates, reports.

Driven like an :class:`~p2pd.session.endpoint.Endpoint` (bytes and ``now`` in;
datagrams, events and a deadline out); the trio server in ``p2pd.io`` is its
only caller outside the tests. It speaks the daemons' own protected protocol:
a daemon opens a session to the coordinator's static key and presents its
connect token where peers present a certificate.

Admission (spec §5.1):

- The token is checked inside the handshake, by the endpoint's peer policy,
  before any session state exists: a request without a valid token, signed by
  a trusted issuer for the very static key that made the request, gets no
  answer at all (nothing to amplify, nothing kept).
- The same check remembers the address a token was first used from
  (:class:`~p2pd.coordinator.credentials.TokenReplayGuard`): the same token
  from another address gets no answer either.
- The daemon then gets a certificate binding its player id to its key
  (``registered``), which its peers check in their handshakes.

Relay (spec §10.1, fallback to server): two daemons that cannot reach each
other directly send each other's datagrams through the coordinator in RELAY
packets (``p2pd.wire.relay``): end-to-end protected, forwarded the same size,
only from a registered daemon's address to a daemon it was introduced to, and
at most ``relay_rate`` bytes per second per daemon.

Presence: a daemon reports its map and cell (a PRESENCE frame, unreliable:
the next report supersedes a lost one). When it changes map, enters another
bucket of the index (about a view range) or moves a few cells, the index is
asked for the nearest daemons within view range; the daemon gets them
(``candidates``) when they differ from its last list, on a map change, and
at least every ``refresh`` seconds while it reports. A daemon that dials one
of them says so (``dial``), and the coordinator tells that one about it
(``introduce``), so that both dial at once. Nothing beyond view
range is ever handed out (spec §5.2), nor the address of a daemon that asked to stay relay-only.

State lives in a :class:`DaemonStore` (in memory here), so that a shared store
can back several coordinator instances later.

Sessions: one per daemon, each carrying a few packets a second (reports,
acknowledgements, PINGs). Their replay window is the coordinator's own
(``CoordinatorSettings.replay_window``, 128 counters: seconds of reordering at
that rate, docs/protocol.md 5.3) and they keep no RTT samples for percentiles,
whatever the session configuration given says; everything else comes from it.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pd.coordinator.credentials import (
    ConnectToken,
    CredentialError,
    TokenReplayGuard,
    issue_certificate,
    public_key_bytes,
    verify_token_untrusted,
)
from p2pd.coordinator.messages import (
    REPORT_CODES,
    Addresses,
    Candidates,
    ControlMessage,
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
    decode_presence_untrusted,
    encode_control,
)
from p2pd.coordinator.presence import PresenceIndex
from p2pd.crypto.identity import Identity
from p2pd.crypto.replay import MIN_WINDOW
from p2pd.ipc.fields import format_address
from p2pd.mesh.policy import VIEW_RANGE
from p2pd.meters import TokenBucket
from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import (
    Address,
    MessageReceived,
    PeerAddressChanged,
    SessionClosed,
    SessionEstablished,
)
from p2pd.wire.errors import BadPacket
from p2pd.wire.relay import decode_relay_untrusted, is_relay, swap_daemon_id
from p2pd.wire.types import PacketType

_COORDINATOR = PacketType.COORDINATOR
_PRESENCE = PacketType.PRESENCE
_KIND = {Registered: "registered", Candidates: "candidates", Introduce: "introduce",
         Report: "report", Dial: "dial", Links: "links"}
_MAX_ADMITTED = 4096  # tokens admitted in handshakes whose sessions are not up yet


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    view_range: int = VIEW_RANGE  # cells: what a daemon may learn of
    certificate_lifetime: float = 3600.0
    refresh: float = 10.0  # seconds between candidate lists for a daemon that stays put
    # cells a daemon moves (Chebyshev, since its last list) that earn it a new list at
    # once, within its index bucket too, when its last list was full; one whose list
    # was short (room for more peers, a sparse area: a cheap query) gets one per cell
    requery_cells: int = 3
    max_daemons: int = 100_000
    token_replay_capacity: int = 200_000
    report_history: int = 1000  # reports kept for the operator
    max_introduced: int = 256  # introductions remembered per daemon (then forgotten)
    relay_rate: float = 64 * 1024.0  # bytes per second relayed for one daemon
    relay_burst: float = 16 * 1024.0
    dial_rate: float = 2.0  # introductions a daemon may ask for per second (dial)
    dial_burst: float = 16.0
    # counters remembered per daemon session against replays (docs/protocol.md 5.3):
    # a daemon sends a few packets a second, so 128 cover seconds of reordering
    replay_window: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.view_range <= 255:
            raise ValueError(f"view_range must be within 1..255, got {self.view_range}")
        for name in ("certificate_lifetime", "refresh", "max_daemons", "token_replay_capacity",
                     "report_history", "max_introduced", "relay_rate", "relay_burst",
                     "requery_cells", "dial_rate", "dial_burst"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.replay_window < MIN_WINDOW:
            raise ValueError(f"replay_window must be >= {MIN_WINDOW}, got {self.replay_window}")


# -- what the operator sees ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonRegistered:
    daemon_id: int
    player_id: int
    key: bytes
    address: Address


@dataclass(frozen=True, slots=True)
class DaemonLeft:
    daemon_id: int
    player_id: int
    key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class ReportReceived:
    daemon_id: int
    player_id: int
    report: Report


@dataclass(frozen=True, slots=True)
class AdmissionRefused:
    key: bytes
    reason: str  # a credential refusal, or "player_elsewhere"


CoordinatorEvent = DaemonRegistered | DaemonLeft | ReportReceived | AdmissionRefused


# -- state -------------------------------------------------------------------------


@dataclass(slots=True)
class DaemonRecord:
    daemon_id: int
    player_id: int
    key: bytes
    address: Address
    certificate: bytes
    relay_only: bool = False
    walking: bool = False
    want: int = 13
    map: str | None = None
    candidates_at: float = float("-inf")
    candidates_x: int = -1  # where it stood at its last candidate list
    candidates_y: int = -1
    candidates_short: bool = True  # that list had fewer than it wanted
    # a digest of the last list sent (its peers, and which were walking): a query
    # whose answer digests the same sends nothing
    answered: int = 0
    presence_seq: int = -1  # the newest presence report taken (u16), -1 before any
    # the keys of the daemons it was introduced to or with: a list (a few dozen at
    # most, bounded by max_introduced; far smaller than a set), None before the first
    introduced: list[bytes] | None = None
    relay_allowance: TokenBucket | None = None  # made at its first relayed packet
    dial_allowance: TokenBucket | None = None  # made at its first dial
    relayed_packets: int = 0  # sent by it through the relay
    relayed_bytes: int = 0
    reports_received: int = 0
    links: tuple[LinkEntry, ...] = ()  # its links as it last told them (operator's view)
    nat_candidates: tuple[str, ...] = ()  # what it published (addresses), for its peers


def _was_introduced(record: DaemonRecord, key: bytes) -> bool:
    return record.introduced is not None and key in record.introduced


def _note_introduced(record: DaemonRecord, key: bytes) -> None:
    introduced = record.introduced
    if introduced is None:
        record.introduced = [key]
    elif key not in introduced:
        introduced.append(key)


class DaemonStore(Protocol):
    """Where the coordinator keeps its registered daemons."""

    def add(self, record: DaemonRecord) -> None: ...
    def remove(self, key: bytes) -> DaemonRecord | None: ...
    def by_key(self, key: bytes) -> DaemonRecord | None: ...
    def by_id(self, daemon_id: int) -> DaemonRecord | None: ...
    def by_player(self, player_id: int) -> DaemonRecord | None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[DaemonRecord]: ...


class MemoryStore:
    """The in-memory :class:`DaemonStore`."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, DaemonRecord] = {}
        self._by_id: dict[int, DaemonRecord] = {}
        self._by_player: dict[int, DaemonRecord] = {}

    def add(self, record: DaemonRecord) -> None:
        self._by_key[record.key] = record
        self._by_id[record.daemon_id] = record
        self._by_player[record.player_id] = record

    def remove(self, key: bytes) -> DaemonRecord | None:
        record = self._by_key.pop(key, None)
        if record is not None:
            del self._by_id[record.daemon_id]
            if self._by_player.get(record.player_id) is record:
                del self._by_player[record.player_id]
        return record

    def by_key(self, key: bytes) -> DaemonRecord | None:
        return self._by_key.get(key)

    def by_id(self, daemon_id: int) -> DaemonRecord | None:
        return self._by_id.get(daemon_id)

    def by_player(self, player_id: int) -> DaemonRecord | None:
        return self._by_player.get(player_id)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[DaemonRecord]:
        return iter(list(self._by_key.values()))


# -- the coordinator ---------------------------------------------------------------


class Coordinator:
    def __init__(
        self,
        identity: Identity,
        signing_key: Ed25519PrivateKey,
        issuers: Sequence[Ed25519PublicKey],
        settings: CoordinatorSettings | None = None,
        *,
        session_config: SessionConfig | None = None,
        store: DaemonStore | None = None,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
        epoch: float = 0.0,
    ) -> None:
        """``clock``: wall-clock seconds, for tokens and certificates (the
        endpoint's policy runs without ``now``); tests pass a virtual one."""
        self.settings = settings or CoordinatorSettings()
        self._signing_key = signing_key
        self.signing_public_key = public_key_bytes(signing_key)
        self._issuers = list(issuers)
        self._clock = clock
        sessions = replace(session_config or SessionConfig(),
                           replay_window=self.settings.replay_window, rtt_history=0)
        self.endpoint = Endpoint(identity, sessions, admission=self._admit,
                                 random_bytes=random_bytes, epoch=epoch)
        self.public_key = identity.public_key
        self.store: DaemonStore = store if store is not None else MemoryStore()
        self.presence = PresenceIndex(self.settings.view_range)
        self._guard = TokenReplayGuard(self.settings.token_replay_capacity)
        self._admitted: OrderedDict[bytes, ConnectToken] = OrderedDict()  # key -> its token
        self._next_id = 1
        self._events: deque[CoordinatorEvent] = deque()
        self.reports: deque[ReportReceived] = deque(maxlen=self.settings.report_history)
        self.refused: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()  # control messages received, by kind
        self.sent: Counter[str] = Counter()  # control messages sent, by kind
        self.refused_dials: Counter[str] = Counter()
        self.report_codes: Counter[str] = Counter()  # known codes; any other as "other"
        self.bad_messages = 0
        self._by_address: dict[Address, DaemonRecord] = {}
        self.relay_drops: Counter[str] = Counter()
        self.relayed_packets = 0
        self.relayed_bytes = 0

    # -- the driver's calls (as Endpoint's) --------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        if is_relay(data):
            self._relay(data, address, now)
            return
        self.endpoint.receive_datagram(data, address, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        self.endpoint.handle_timer(now)
        self._process(now)

    def get_timer(self) -> float | None:
        return self.endpoint.get_timer()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self.endpoint.flush(now)
        return self.endpoint.datagrams_to_send(now)

    def next_event(self) -> CoordinatorEvent | None:
        return self._events.popleft() if self._events else None

    # -- admission ---------------------------------------------------------------

    def _admit(self, peer: bytes, token_bytes: bytes | None, address: Address) -> bool:
        """The endpoint's admission check of every handshake request, before any
        session state: a valid token, for this very key, first used from this
        address (a retransmission or rekey from it is fine; the same token from
        elsewhere is a replay, even with the right key). A daemon whose address
        changed (NAT rebinding) keeps its session until its next rekey, which
        needs a fresh token."""
        if token_bytes is None:
            self._refuse(peer, "no_token")
            return False
        wall = self._clock()
        try:
            token = verify_token_untrusted(token_bytes, self._issuers, wall)
            if token.daemon_key != peer:
                self._refuse(peer, "wrong_key")
                return False
            if len(self.store) >= self.settings.max_daemons and self.store.by_key(peer) is None:
                self._refuse(peer, "full")
                return False
            self._guard.check(token, address, wall)
        except CredentialError as error:
            self._refuse(peer, error.reason.value)
            return False
        self._admitted[peer] = token  # _register reads it; no second signature check
        if len(self._admitted) > _MAX_ADMITTED:
            self._admitted.popitem(last=False)
        return True

    def _refuse(self, peer: bytes, reason: str) -> None:
        self.refused[reason] += 1
        self._events.append(AdmissionRefused(peer, reason))

    def _register(self, event: SessionEstablished, now: float) -> None:
        peer = event.peer
        wall = self._clock()
        if event.certificate is None:  # the policy let no such request through
            self.endpoint.close(peer, now)
            return
        token = self._admitted.pop(peer, None)
        if token is None or token.expires_at <= wall:  # admitted too long ago: check again
            try:
                token = verify_token_untrusted(event.certificate, self._issuers, wall)
            except CredentialError as error:
                self._refuse(peer, error.reason.value)
                self.endpoint.close(peer, now)
                return
        old = self.store.by_key(peer)
        if old is not None:
            self._forget(old, "registered again")
        elsewhere = self.store.by_player(token.player_id)
        if elsewhere is not None:  # the same character from another daemon: the new one wins
            self._forget(elsewhere, "player_elsewhere")
            self.endpoint.close(elsewhere.key, now)
        certificate = issue_certificate(self._signing_key, player_id=token.player_id,
                                        identity_key=peer,
                                        lifetime=self.settings.certificate_lifetime, now=wall)
        record = DaemonRecord(self._next_id, token.player_id, peer, event.address, certificate)
        self._next_id += 1
        self.store.add(record)
        self._by_address[event.address] = record
        self._send(record, Registered(
            daemon_id=record.daemon_id,
            certificate=certificate,
            signing_key=self.signing_public_key,
            address=format_address(event.address),
            expires_at=int(wall + self.settings.certificate_lifetime),
        ), now)
        self._events.append(DaemonRegistered(record.daemon_id, record.player_id, peer,
                                             event.address))

    def _forget(self, record: DaemonRecord, reason: str) -> None:
        self.store.remove(record.key)
        if self._by_address.get(record.address) is record:
            del self._by_address[record.address]
        self.presence.remove(record.daemon_id)
        self._events.append(DaemonLeft(record.daemon_id, record.player_id, record.key, reason))

    # -- messages ----------------------------------------------------------------

    def _process(self, now: float) -> None:
        endpoint = self.endpoint
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, MessageReceived):
                record = self.store.by_key(event.peer)
                if record is not None and event.type is _PRESENCE:
                    self._take_presence(record, event.payload, now)
                    continue
                if record is None or event.type != _COORDINATOR:
                    self.bad_messages += 1
                    continue
                try:
                    message = decode_control_untrusted(event.payload)
                except ControlMessageError:
                    self.bad_messages += 1
                    continue
                self._on_message(record, message, now)
            elif isinstance(event, SessionEstablished):
                self._register(event, now)
            elif isinstance(event, SessionClosed):
                record = self.store.by_key(event.peer)
                if record is not None:
                    self._forget(record, event.reason.value)
            elif isinstance(event, PeerAddressChanged):
                record = self.store.by_key(event.peer)
                if record is not None:
                    if self._by_address.get(record.address) is record:
                        del self._by_address[record.address]
                    record.address = event.new
                    self._by_address[event.new] = record

    # -- relay -------------------------------------------------------------------

    def _relay(self, data: bytes, address: Address, now: float) -> None:
        """Forward one RELAY packet, or drop and count it: cheap checks first."""
        source = self._by_address.get(address)
        if source is None:
            self.relay_drops["unknown_source"] += 1
            return
        try:
            target_id, _ = decode_relay_untrusted(data)
        except BadPacket as error:
            self.relay_drops[error.reason.value] += 1
            return
        target = self.store.by_id(target_id)
        if target is None or target is source:
            self.relay_drops["unknown_target"] += 1
            return
        if not (_was_introduced(source, target.key) or _was_introduced(target, source.key)):
            self.relay_drops["not_introduced"] += 1
            return
        allowance = source.relay_allowance
        if allowance is None:
            settings = self.settings
            allowance = source.relay_allowance = TokenBucket(
                settings.relay_rate, settings.relay_burst, now)
        if not allowance.take(len(data), now):
            self.relay_drops["rate_limited"] += 1
            return
        source.relayed_packets += 1
        source.relayed_bytes += len(data)
        self.relayed_packets += 1
        self.relayed_bytes += len(data)
        self.endpoint.transmit(swap_daemon_id(data, source.daemon_id), target.address)

    def _take_presence(self, record: DaemonRecord, body: bytes, now: float) -> None:
        try:
            seq, presence = decode_presence_untrusted(body)
        except ControlMessageError:
            self.bad_messages += 1
            return
        last = record.presence_seq
        if last >= 0 and not 0 < (seq - last) & 0xFFFF < 0x8000:
            self.messages["presence_stale"] += 1  # overtaken on the way: a newer one counts
            return
        record.presence_seq = seq
        self.messages["presence"] += 1
        self._on_presence(record, presence, now)

    def _on_dial(self, record: DaemonRecord, dial: Dial, now: float) -> None:
        """Introduce ``record`` to the daemon it dials, so that both dial at once (and
        punch through their NATs together): only one offered to it, on its map,
        and at most ``dial_rate`` a second after a burst of ``dial_burst``."""
        target = self.store.by_id(dial.daemon_id)
        if target is None or target is record or not _was_introduced(record, target.key):
            self.refused_dials["not_offered"] += 1
            return
        if target.map != record.map:
            self.refused_dials["other_map"] += 1
            return
        allowance = record.dial_allowance
        if allowance is None:
            settings = self.settings
            allowance = record.dial_allowance = TokenBucket(settings.dial_rate,
                                                            settings.dial_burst, now)
        if not allowance.take(1, now):
            self.refused_dials["rate_limited"] += 1
            return
        cell = self.presence.position(record.daemon_id)
        if cell is None:
            self.refused_dials["no_presence"] += 1
            return
        if target.introduced is not None and len(target.introduced) >= self.settings.max_introduced:
            target.introduced = None
        _note_introduced(target, record.key)
        self._send(target, Introduce(self._entry(record, cell[1], cell[2],
                                                 with_certificate=True)), now)

    def _on_message(self, record: DaemonRecord, message: ControlMessage, now: float) -> None:
        if isinstance(message, Dial):
            self.messages["dial"] += 1
            self._on_dial(record, message, now)
        elif isinstance(message, Addresses):
            self.messages["addresses"] += 1
            record.nat_candidates = message.candidates
        elif isinstance(message, Report):
            self.messages["report"] += 1
            report = ReportReceived(record.daemon_id, record.player_id, message)
            self.reports.append(report)
            self._events.append(report)
            record.reports_received += 1
            self.report_codes[message.code if message.code in REPORT_CODES else "other"] += 1
        elif isinstance(message, Links):
            self.messages["links"] += 1
            record.links = message.links
        else:  # registered, candidates, introduce: the coordinator's own
            self.bad_messages += 1

    def _on_presence(self, record: DaemonRecord, presence: Presence, now: float) -> None:
        record.relay_only = presence.relay_only
        record.walking = presence.walking
        record.want = presence.want
        map_changed = record.map != presence.map
        if map_changed:  # one string per map name, not one per report
            record.map = sys.intern(presence.map)
        moved = self.presence.update(record.daemon_id, presence.map, presence.x, presence.y)
        if map_changed:
            record.introduced = None
        settings = self.settings
        threshold = 1 if record.candidates_short else settings.requery_cells
        stepped = max(abs(presence.x - record.candidates_x),
                      abs(presence.y - record.candidates_y)) >= threshold
        refresh = now - record.candidates_at >= settings.refresh
        if not (moved or map_changed or stepped or refresh):
            return
        record.candidates_x, record.candidates_y = presence.x, presence.y
        others = self._answer(record, presence.map, now, force=map_changed or refresh)
        # A daemon with room that has not heard of this one gets a fresh list now
        # (it may be standing still and report only every discovery_interval);
        # one whose list is full of nearer peers waits for its next question.
        for other in others:
            if other.candidates_short and not _was_introduced(other, record.key):
                other_map = other.map
                if other_map is not None:
                    self._answer(other, other_map, now, force=False)

    def _answer(self, record: DaemonRecord, map_name: str, now: float, *,
                force: bool) -> list[DaemonRecord]:
        """Ask the index for ``record``'s nearest and send them as its list when they
        differ from its last one (or ``force``); the daemons found."""
        nearest = self.presence.nearest(record.daemon_id, record.want)
        record.candidates_short = len(nearest) < record.want
        # The same peers as the last list (each walking or not as then): nothing new
        # to say. Entries carry cells, so the daemon follows its own steps itself;
        # a listed walker's cell ages (the daemon allows for walk speed) until the
        # next list, at least every refresh seconds.
        by_id = self.store.by_id
        others = [other for other_id, _ in nearest if (other := by_id(other_id)) is not None]
        answer = hash(tuple(sorted([(other.daemon_id, other.walking) for other in others])))
        if answer == record.answered and not force:
            return others
        record.answered = answer
        record.candidates_at = now
        position = self.presence.position
        entries = []
        for other in others:
            cell = position(other.daemon_id)
            if cell is None:  # no presence yet: nearest() does not offer it
                continue
            _, x, y = cell
            entries.append(self._entry(other, x, y))
            _note_introduced(record, other.key)  # it may dial that one: see _on_dial
        if record.introduced is not None and (
                len(record.introduced) > self.settings.max_introduced):
            record.introduced = [entry.key for entry in entries]
        self._send(record, Candidates(map_name, tuple(entries)), now)
        return others

    def _entry(self, record: DaemonRecord, x: int, y: int, *,
               with_certificate: bool = False) -> PeerEntry:
        return PeerEntry(
            key=record.key,
            player_id=record.player_id,
            daemon_id=record.daemon_id,
            address=None if record.relay_only else format_address(record.address),
            x=x,
            y=y,
            walking=record.walking,
            certificate=record.certificate if with_certificate else None,
            candidates=(tuple(c for c in record.nat_candidates if c.startswith("relay "))
                        if record.relay_only else record.nat_candidates),
        )

    def _send(self, record: DaemonRecord, message: ControlMessage, now: float) -> None:
        self.sent[_KIND[type(message)]] += 1
        self.endpoint.send(record.key, _COORDINATOR, encode_control(message), now)

    # -- for the operator --------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            "daemons": len(self.store),
            "maps": self.presence.maps(),
            "refused": dict(self.refused),
            "messages": dict(self.messages),
            "sent": dict(self.sent),
            "refused_dials": dict(self.refused_dials),
            "bad_messages": self.bad_messages,
            "reports": len(self.reports),
            "report_codes": dict(self.report_codes),
            "relay": {"packets": self.relayed_packets, "bytes": self.relayed_bytes,
                      "dropped": dict(self.relay_drops)},
        }
