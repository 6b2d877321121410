"""Messages between a daemon and its coordinator.

Control messages travel in COORDINATOR frames (0x0020) on the session's
reliable, ordered control channel (docs/protocol.md §13), so they arrive once
and in order. Each is one msgpack map whose key ``k`` names its kind; other
keys are short:

============  =========  ===========================================================
kind          direction  keys
============  =========  ===========================================================
report        d -> c     s severity (info, warn, error, critical), c code,
                         p peer key (32 bytes, optional), d detail
registered    c -> d     i daemon id, c certificate, s coordinator's signing key
                         (32 bytes, Ed25519), a the daemon's address as seen
                         ("host:port"), e certificate expiry (unix seconds)
candidates    c -> d     m map, p list of peers (below), nearest first
dial          d -> c     i the daemon id of a peer from its list: this daemon is
                         dialling it now (the coordinator introduces it there)
introduce     c -> d     p one peer (below): it is dialling this daemon now
links         d -> c     l the daemon's links (at most 64), each [daemon id, relayed
                         (bool), smoothed RTT in ms (0-65535) or nil]: for the
                         operator's view of the mesh
addresses     d -> c     c list of this daemon's NAT candidates, at most 8, each
                         "<kind> <ip>:<port>" (p2pd.nat.candidates), for its peers
============  =========  ===========================================================

A peer entry is a map: k key (32 bytes, X25519 static), u player id, i its
daemon id at the coordinator (what RELAY packets name, docs/protocol.md §13B),
a its address ("host:port") or nil when it is relay-only, x and y its cell
when last reported (on the receiver's map, within its view range), w whether
it was walking (it may have moved on since), and in an introduction only, c
its certificate (the peer presents it again in its handshake, where it is
checked; a list leaves it out, as it would repeat it every few cells), and,
when the daemon published any, n its NAT candidates (a list as in
``addresses``; only ``relay`` ones for a relay-only daemon).

A daemon's presence, the commonest message by far, is not one of them: it is
a latest-value report that the next one supersedes, so it travels unreliably
in a PRESENCE frame (0x0022) of fixed binary layout, which costs the
coordinator no acknowledgement and no retransmission state::

    seq u16 | x u16 | y u16 | want u8 | flags u8 | map name (1-32 bytes)

big-endian; ``seq`` counts the daemon's reports (wrapping; the coordinator
ignores one older than the newest it took), ``flags`` bit 0 relay only (never
hand out this daemon's address), bit 1 walking; every other bit zero.

The decoders are parsers of untrusted bytes: they raise only
:class:`ControlMessageError`, and refuse unknown kinds, unknown or missing
keys, wrong types and values out of range.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from p2pd.ipc.errors import IpcError
from p2pd.ipc.fields import split_address
from p2pd.ipc.framing import unpack_map_untrusted
from p2pd.ipc.messages import MAP_NAME_PATTERN, MAX_CELL
from p2pd.nat.candidates import MAX_CANDIDATES as MAX_NAT_CANDIDATES
from p2pd.nat.candidates import CandidateError, parse_candidate_untrusted

MAX_CANDIDATES: Final = 64
MAX_CERTIFICATE: Final = 256
MAX_CODE: Final = 64
MAX_DETAIL: Final = 512
SEVERITIES: Final = ("info", "warn", "error", "critical")
MAX_LINKS: Final = 64
# the report codes daemons send (p2pd/node.py, p2pd/mesh/manager.py); others may come
REPORT_CODES: Final = frozenset({"anomalous_peer", "invalid_events", "auth_failures",
                                 "relay_fallback", "all_links_relayed", "internal_errors"})
_MAP_NAME = re.compile(MAP_NAME_PATTERN)
_MAP_NAME_BYTES = re.compile(MAP_NAME_PATTERN.encode())
PRESENCE_FIXED: Final = struct.Struct(">HHHBB")  # seq, x, y, want, flags; the map name follows
PRESENCE_RELAY_ONLY: Final = 0x01
PRESENCE_WALKING: Final = 0x02
_PRESENCE_FLAGS: Final = PRESENCE_RELAY_ONLY | PRESENCE_WALKING
MAX_PRESENCE: Final = PRESENCE_FIXED.size + 32


class ControlMessageError(Exception):
    """A control message was refused; the text says what was wrong."""


@dataclass(frozen=True, slots=True)
class Presence:
    map: str
    x: int
    y: int
    want: int = 13
    relay_only: bool = False
    walking: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    severity: str
    code: str
    peer: bytes | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Registered:
    daemon_id: int
    certificate: bytes
    signing_key: bytes
    address: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class PeerEntry:
    key: bytes
    player_id: int
    daemon_id: int
    address: str | None
    x: int  # its cell when the coordinator last heard of it (on this daemon's map)
    y: int
    walking: bool = False
    certificate: bytes | None = None  # in introductions; lists leave it out
    candidates: tuple[str, ...] = ()  # its NAT candidates, "<kind> <ip>:<port>"


@dataclass(frozen=True, slots=True)
class Addresses:
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidates:
    map: str
    peers: tuple[PeerEntry, ...]


@dataclass(frozen=True, slots=True)
class Introduce:
    peer: PeerEntry


@dataclass(frozen=True, slots=True)
class Dial:
    daemon_id: int


@dataclass(frozen=True, slots=True)
class LinkEntry:
    daemon_id: int
    relayed: bool
    rtt_ms: int | None


@dataclass(frozen=True, slots=True)
class Links:
    links: tuple[LinkEntry, ...]


ControlMessage = Report | Registered | Candidates | Introduce | Dial | Links | Addresses


def _entry(peer: PeerEntry) -> dict[str, Any]:
    entry = {"k": peer.key, "u": peer.player_id, "i": peer.daemon_id, "a": peer.address,
             "x": peer.x, "y": peer.y, "w": peer.walking}
    if peer.certificate is not None:
        entry["c"] = peer.certificate
    if peer.candidates:
        entry["n"] = list(peer.candidates)
    return entry


def encode_control(message: ControlMessage) -> bytes:
    body: dict[str, Any]
    if isinstance(message, Report):
        body = {"k": "report", "s": message.severity, "c": message.code, "d": message.detail}
        if message.peer is not None:
            body["p"] = message.peer
    elif isinstance(message, Registered):
        body = {"k": "registered", "i": message.daemon_id, "c": message.certificate,
                "s": message.signing_key, "a": message.address, "e": message.expires_at}
    elif isinstance(message, Candidates):
        body = {"k": "candidates", "m": message.map, "p": [_entry(p) for p in message.peers]}
    elif isinstance(message, Links):
        body = {"k": "links",
                "l": [[link.daemon_id, link.relayed, link.rtt_ms] for link in message.links]}
    elif isinstance(message, Addresses):
        body = {"k": "addresses", "c": list(message.candidates)}
    elif isinstance(message, Introduce):
        body = {"k": "introduce", "p": _entry(message.peer)}
    else:
        body = {"k": "dial", "i": message.daemon_id}
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


# -- decoding --------------------------------------------------------------------

def _fields(msg: dict[str, Any], kind: str, required: set[str], optional: set[str],
            *, kind_key: bool = True) -> None:
    keys = set(msg) - {"k"} if kind_key else set(msg)
    missing = required - keys
    if missing:
        raise ControlMessageError(f"{kind}: missing {', '.join(sorted(missing))}")
    unknown = keys - required - optional
    if unknown:
        raise ControlMessageError(f"{kind}: unknown key(s) {', '.join(sorted(unknown))[:80]}")


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ControlMessageError(f"{what} must be an integer from {lo} to {hi}")
    return value


def _str(value: Any, limit: int, what: str) -> str:
    if type(value) is not str or len(value.encode()) > limit:
        raise ControlMessageError(f"{what} must be a string of at most {limit} bytes")
    return value


def _bytes(value: Any, lo: int, hi: int, what: str) -> bytes:
    if type(value) is not bytes or not lo <= len(value) <= hi:
        raise ControlMessageError(f"{what} must be {lo}..{hi} bytes")
    return value


def _map_name(value: Any) -> str:
    if type(value) is not str or not _MAP_NAME.fullmatch(value):
        raise ControlMessageError("m must be a map name (1-32 of a-z 0-9 _ @ . -)")
    return value


def _address(value: Any, what: str) -> str:
    text = _str(value, 64, what)
    try:
        split_address(text)
    except ValueError as error:
        raise ControlMessageError(f"{what} must be host:port ({error})") from None
    return text


def _peer(value: Any) -> PeerEntry:
    if not isinstance(value, dict):
        raise ControlMessageError("a peer entry must be a map")
    _fields(value, "peer", {"k", "u", "i", "a", "x", "y", "w"}, {"c", "n"}, kind_key=False)
    if type(value["w"]) is not bool:
        raise ControlMessageError("peer w must be a boolean")
    address = value["a"]
    certificate = value.get("c")
    return PeerEntry(
        key=_bytes(value["k"], 32, 32, "peer k"),
        player_id=_int(value["u"], 0, 0xFFFFFFFF, "peer u"),
        daemon_id=_int(value["i"], 1, 0xFFFFFFFF, "peer i"),
        address=None if address is None else _address(address, "peer a"),
        x=_int(value["x"], 0, MAX_CELL, "peer x"),
        y=_int(value["y"], 0, MAX_CELL, "peer y"),
        walking=value["w"],
        certificate=(None if certificate is None
                     else _bytes(certificate, 1, MAX_CERTIFICATE, "peer c")),
        candidates=_nat_candidates(value.get("n", []), "peer n"),
    )


def _nat_candidates(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_NAT_CANDIDATES:
        raise ControlMessageError(f"{what} must be a list of at most {MAX_NAT_CANDIDATES}")
    for item in value:
        try:
            parse_candidate_untrusted(item)
        except CandidateError as error:
            raise ControlMessageError(f"{what}: {error}") from None
    return tuple(value)


def decode_control_untrusted(payload: bytes) -> ControlMessage:
    """The control message in ``payload``. Raises only ControlMessageError."""
    try:
        msg = unpack_map_untrusted(payload)
    except IpcError as error:
        raise ControlMessageError(f"not a msgpack map: {error.message}") from None
    kind = msg.get("k")
    if kind == "report":
        _fields(msg, kind, {"s", "c", "d"}, {"p"})
        severity = msg["s"]
        if severity not in SEVERITIES:
            raise ControlMessageError(f"s must be one of {', '.join(SEVERITIES)}")
        peer = msg.get("p")
        return Report(severity, _str(msg["c"], MAX_CODE, "c"),
                      None if peer is None else _bytes(peer, 32, 32, "p"),
                      _str(msg["d"], MAX_DETAIL, "d"))
    if kind == "registered":
        _fields(msg, kind, {"i", "c", "s", "a", "e"}, set())
        return Registered(_int(msg["i"], 0, 0xFFFFFFFF, "i"),
                          _bytes(msg["c"], 1, MAX_CERTIFICATE, "c"), _bytes(msg["s"], 32, 32, "s"),
                          _address(msg["a"], "a"), _int(msg["e"], 0, (1 << 63) - 1, "e"))
    if kind == "candidates":
        _fields(msg, kind, {"m", "p"}, set())
        peers = msg["p"]
        if not isinstance(peers, list) or len(peers) > MAX_CANDIDATES:
            raise ControlMessageError(f"p must be a list of at most {MAX_CANDIDATES} peers")
        return Candidates(_map_name(msg["m"]), tuple(_peer(p) for p in peers))
    if kind == "introduce":
        _fields(msg, kind, {"p"}, set())
        return Introduce(_peer(msg["p"]))
    if kind == "links":
        _fields(msg, kind, {"l"}, set())
        links = msg["l"]
        if not isinstance(links, list) or len(links) > MAX_LINKS:
            raise ControlMessageError(f"l must be a list of at most {MAX_LINKS} links")
        return Links(tuple(_link(link) for link in links))
    if kind == "dial":
        _fields(msg, kind, {"i"}, set())
        return Dial(_int(msg["i"], 1, 0xFFFFFFFF, "i"))
    if kind == "addresses":
        _fields(msg, kind, {"c"}, set())
        return Addresses(_nat_candidates(msg["c"], "c"))
    raise ControlMessageError(f"unknown message kind {str(kind)[:32]!r}")


def _link(value: Any) -> LinkEntry:
    if not isinstance(value, list) or len(value) != 3 or type(value[1]) is not bool:
        raise ControlMessageError("a link must be [daemon id, relayed, rtt ms or nil]")
    rtt = value[2]
    return LinkEntry(_int(value[0], 1, 0xFFFFFFFF, "link daemon id"), value[1],
                     None if rtt is None else _int(rtt, 0, 65535, "link rtt"))


def encode_presence(presence: Presence, seq: int) -> bytes:
    """The body of a PRESENCE frame: ``presence`` as the daemon's report number ``seq``."""
    flags = ((PRESENCE_RELAY_ONLY if presence.relay_only else 0)
             | (PRESENCE_WALKING if presence.walking else 0))
    return PRESENCE_FIXED.pack(seq & 0xFFFF, presence.x, presence.y, presence.want,
                               flags) + presence.map.encode("ascii")


def decode_presence_untrusted(body: bytes) -> tuple[int, Presence]:
    """(seq, presence) from the body of a PRESENCE frame. Raises only
    ControlMessageError."""
    if not PRESENCE_FIXED.size < len(body) <= MAX_PRESENCE:
        raise ControlMessageError(f"a presence of {len(body)} bytes (it takes"
                                  f" {PRESENCE_FIXED.size + 1}-{MAX_PRESENCE})")
    seq, x, y, want, flags = PRESENCE_FIXED.unpack_from(body)
    if x > MAX_CELL or y > MAX_CELL:
        raise ControlMessageError(f"cell ({x}, {y}) beyond {MAX_CELL}")
    if not 1 <= want <= MAX_CANDIDATES:
        raise ControlMessageError(f"want must be 1-{MAX_CANDIDATES}, got {want}")
    if flags & ~_PRESENCE_FLAGS:
        raise ControlMessageError(f"unknown presence flags 0x{flags:02x}")
    name = body[PRESENCE_FIXED.size:]
    if _MAP_NAME_BYTES.fullmatch(name) is None:
        raise ControlMessageError(f"map name {name[:32]!r} does not match {MAP_NAME_PATTERN}")
    return seq, Presence(name.decode("ascii"), x, y, want, bool(flags & PRESENCE_RELAY_ONLY),
                         bool(flags & PRESENCE_WALKING))
