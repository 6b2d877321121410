"""Messages between a daemon and its coordinator: the payloads of COORDINATOR frames.

They travel on the session's reliable, ordered control channel (frame type
0x0020, docs/protocol.md §13), so they arrive once and in order. Each is one
msgpack map whose key ``k`` names its kind; other keys are short:

============  =========  ===========================================================
kind          direction  keys
============  =========  ===========================================================
presence      d -> c     m map, x, y (cells), n candidates wanted (1-64),
                         r relay only (bool: never hand out this daemon's address),
                         w walking (bool)
report        d -> c     s severity (info, warn, error, critical), c code,
                         p peer key (32 bytes, optional), d detail
registered    c -> d     i daemon id, c certificate, s coordinator's signing key
                         (32 bytes, Ed25519), a the daemon's address as seen
                         ("host:port"), e certificate expiry (unix seconds)
candidates    c -> d     m map, p list of peers (below), nearest first
introduce     c -> d     p one peer (below): it is dialling this daemon now
addresses     d -> c     c list of this daemon's NAT candidates, at most 8, each
                         "<kind> <ip>:<port>" (p2pd.nat.candidates), for its peers
============  =========  ===========================================================

A peer entry is a map: k key (32 bytes, X25519 static), u player id, i its
daemon id at the coordinator (what RELAY packets name, docs/protocol.md §13B),
c its certificate, a its address ("host:port") or nil when it is relay-only,
d distance in cells, w whether it was walking (its distance may grow),
and, when the daemon published any, x its NAT candidates (a list as in
``addresses``; only ``relay`` ones for a relay-only daemon).

The decoder is a parser of untrusted bytes: it raises only
:class:`ControlMessageError`, and refuses unknown kinds, unknown or missing
keys, wrong types and values out of range.
"""

from __future__ import annotations

import re
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
_MAP_NAME = re.compile(MAP_NAME_PATTERN)


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
    certificate: bytes
    address: str | None
    distance: int
    walking: bool = False
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


ControlMessage = Presence | Report | Registered | Candidates | Introduce | Addresses


def _entry(peer: PeerEntry) -> dict[str, Any]:
    entry = {"k": peer.key, "u": peer.player_id, "i": peer.daemon_id, "c": peer.certificate,
             "a": peer.address, "d": peer.distance, "w": peer.walking}
    if peer.candidates:
        entry["x"] = list(peer.candidates)
    return entry


def encode_control(message: ControlMessage) -> bytes:
    body: dict[str, Any]
    if isinstance(message, Presence):
        body = {"k": "presence", "m": message.map, "x": message.x, "y": message.y,
                "n": message.want, "r": message.relay_only, "w": message.walking}
    elif isinstance(message, Report):
        body = {"k": "report", "s": message.severity, "c": message.code, "d": message.detail}
        if message.peer is not None:
            body["p"] = message.peer
    elif isinstance(message, Registered):
        body = {"k": "registered", "i": message.daemon_id, "c": message.certificate,
                "s": message.signing_key, "a": message.address, "e": message.expires_at}
    elif isinstance(message, Candidates):
        body = {"k": "candidates", "m": message.map, "p": [_entry(p) for p in message.peers]}
    elif isinstance(message, Addresses):
        body = {"k": "addresses", "c": list(message.candidates)}
    else:
        body = {"k": "introduce", "p": _entry(message.peer)}
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
    _fields(value, "peer", {"k", "u", "i", "c", "a", "d", "w"}, {"x"}, kind_key=False)
    if type(value["w"]) is not bool:
        raise ControlMessageError("peer w must be a boolean")
    address = value["a"]
    return PeerEntry(
        key=_bytes(value["k"], 32, 32, "peer k"),
        player_id=_int(value["u"], 0, 0xFFFFFFFF, "peer u"),
        daemon_id=_int(value["i"], 1, 0xFFFFFFFF, "peer i"),
        certificate=_bytes(value["c"], 1, MAX_CERTIFICATE, "peer c"),
        address=None if address is None else _address(address, "peer a"),
        distance=_int(value["d"], 0, MAX_CELL, "peer d"),
        walking=value["w"],
        candidates=_nat_candidates(value.get("x", []), "peer x"),
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


_PRESENCE_KEYS: Final = frozenset({"k", "m", "x", "y", "n", "r", "w"})
_FIXMAP_OF_7 = b"\x87"  # a msgpack map of seven pairs: the presence, as encode_control makes it


def _presence_untrusted(payload: bytes) -> Presence | None:
    """The commonest message, a presence, when it is exactly what encode_control
    makes (seven pairs, one per key, every value valid); None for anything else,
    which the general path then refuses or accepts. The same checks, without the
    general path's per-map hook and tree walk: a map of seven pairs that decodes
    to seven distinct str keys has no duplicate, and scalar values nest nothing."""
    size = len(payload)
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                              max_str_len=size, max_bin_len=size, max_array_len=size,
                              max_map_len=size // 2, max_ext_len=0)
    except Exception:  # msgpack raises ValueError subclasses: the general path says why
        return None
    if type(msg) is not dict or len(msg) != 7 or msg.keys() != _PRESENCE_KEYS:
        return None
    map_name, x, y, want, relay_only, walking = (msg["m"], msg["x"], msg["y"], msg["n"],
                                                 msg["r"], msg["w"])
    if (msg["k"] == "presence" and type(x) is int and 0 <= x <= MAX_CELL
            and type(y) is int and 0 <= y <= MAX_CELL
            and type(want) is int and 1 <= want <= MAX_CANDIDATES
            and type(relay_only) is bool and type(walking) is bool
            and type(map_name) is str and _MAP_NAME.fullmatch(map_name)):
        return Presence(map_name, x, y, want, relay_only, walking)
    return None


def decode_control_untrusted(payload: bytes) -> ControlMessage:
    """The control message in ``payload``. Raises only ControlMessageError."""
    if payload[:1] == _FIXMAP_OF_7:
        presence = _presence_untrusted(payload)
        if presence is not None:
            return presence
    try:
        msg = unpack_map_untrusted(payload)
    except IpcError as error:
        raise ControlMessageError(f"not a msgpack map: {error.message}") from None
    kind = msg.get("k")
    if kind == "presence":
        _fields(msg, kind, {"m", "x", "y", "n", "r", "w"}, set())
        if type(msg["r"]) is not bool or type(msg["w"]) is not bool:
            raise ControlMessageError("r and w must be booleans")
        return Presence(_map_name(msg["m"]), _int(msg["x"], 0, MAX_CELL, "x"),
                        _int(msg["y"], 0, MAX_CELL, "y"), _int(msg["n"], 1, MAX_CANDIDATES, "n"),
                        msg["r"], msg["w"])
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
    if kind == "addresses":
        _fields(msg, kind, {"c"}, set())
        return Addresses(_nat_candidates(msg["c"], "c"))
    raise ControlMessageError(f"unknown message kind {str(kind)[:32]!r}")
