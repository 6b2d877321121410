"""Candidates: the addresses a daemon may be reached at (RFC 8445 5.1 in spirit).

=======  ============================================================  ========
kind     what                                                          priority
=======  ============================================================  ========
host     an address of this host's own interfaces                      126
mapped   a port mapping the router made for it (UPnP IGD, NAT-PMP,     110
         PCP: the port mapping hook, ``PortMapper``)
srflx    server-reflexive: the public mapping a STUN server saw        100
relay    relayed: the address of its allocation on a TURN server       10
=======  ============================================================  ========

On the wire (the coordinator's ``addresses`` message and peer entries) a
candidate is the text ``"<kind> <host>:<port>"``, at most
:data:`MAX_CANDIDATES` of them. A relay-only daemon publishes only ``relay``
candidates: none of them holds its own IP address.

Paths to a peer are addresses for the session: a direct address, the
coordinator relay's ``("relay", daemon id)`` (``p2pd.wire.relay``), or
``("turn/<ip>", port)``: to that peer address through this daemon's own TURN
allocation (:func:`turn_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from p2pd.ipc.fields import format_address, split_address

Address = tuple[str, int]
KINDS: Final = {"host": 126, "mapped": 110, "srflx": 100, "relay": 10}
MAX_CANDIDATES: Final = 8
MAX_CANDIDATE_TEXT: Final = 64
TURN_PREFIX: Final = "turn/"


class CandidateError(ValueError):
    """A candidate text was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: str
    address: Address

    @property
    def priority(self) -> int:
        return KINDS[self.kind]

    def encode(self) -> str:
        return f"{self.kind} {format_address(self.address)}"


def parse_candidate_untrusted(text: object) -> Candidate:
    """``"<kind> <host>:<port>"`` with an IP literal host. Raises CandidateError."""
    if type(text) is not str or len(text) > MAX_CANDIDATE_TEXT:
        raise CandidateError(f"a candidate is a string of at most {MAX_CANDIDATE_TEXT} bytes")
    kind, _, rest = text.partition(" ")
    if kind not in KINDS:
        raise CandidateError(f"unknown candidate kind {kind[:16]!r}")
    try:
        host, port = split_address(rest)
    except ValueError as error:
        raise CandidateError(f"candidate address: {error}") from None
    if not host[:1].isdigit() and ":" not in host:  # no names: nothing to resolve
        raise CandidateError("a candidate address is an IP literal")
    return Candidate(kind, (host, port))


def turn_path(peer: Address) -> Address:
    """The pseudo-address of ``peer`` reached through this daemon's TURN allocation."""
    return (TURN_PREFIX + peer[0], peer[1])


def is_turn_path(address: Address) -> bool:
    return address[0].startswith(TURN_PREFIX)


def turn_peer(address: Address) -> Address:
    return (address[0][len(TURN_PREFIX):], address[1])


class PortMapper(Protocol):
    """The hook a port mapper (UPnP IGD, NAT-PMP, PCP) fills: the NAT agent reads
    it whenever it gathers candidates."""

    def mapped_address(self) -> Address | None:
        """The router's public address and port mapped to this daemon's UDP
        port, while the mapping holds; None otherwise."""
        ...

    def status(self) -> dict[str, object]:
        """For ``p2pctl nat``: protocol, state (``requesting`` while a mapping is
        being asked for), lease, errors."""
        ...
