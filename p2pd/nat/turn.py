"""A TURN client (RFC 8656) over the daemon's UDP socket, sans-IO.

One allocation on one server. Driven with ``now``: :meth:`TurnClient.start`,
:meth:`TurnClient.receive` for the server's STUN messages,
:meth:`TurnClient.handle_timer`; it queues datagrams for the server
(:meth:`datagrams_to_send`) and tells its next deadline.

- **Allocate** with REQUESTED-TRANSPORT UDP, first without credentials; the
  server's 401 brings REALM and NONCE, and the request goes again with
  USERNAME, REALM, NONCE and MESSAGE-INTEGRITY under the long-term key
  MD5(username:realm:password). A 438 (stale nonce) repeats the request
  with the new NONCE; a 437 (an allocation of an earlier run on the same
  5-tuple) deletes it (Refresh with LIFETIME 0) and allocates again. Other
  errors fail the allocation; it is tried again after ``retry_after``.
- **Credentials**: long-term (a username and password from the
  configuration) or REST-style time-limited ones made from a shared secret
  (:func:`p2pd.nat.stun.rest_credentials`: username "expiry:user", password
  base64(HMAC-SHA1(secret, username)), expiry ``rest_lifetime`` from the
  wall clock), renewed when they come near their expiry.
- **Refresh** of the allocation at ``refresh_fraction`` of its lifetime;
  **CreatePermission** for each peer IP wanted (again every 240 s, below the
  300 s lifetime); **ChannelBind** per peer address (channels 0x4000-0x4FFF,
  again every 480 s, below 600 s). Until a channel is bound, data goes in
  Send indications; afterwards in 4-byte-header ChannelData.
- Success responses to authenticated requests count only when their
  MESSAGE-INTEGRITY verifies; an unauthenticated 401/438 can only make the
  client try again with what it says (a bounded number of times).
- A Binding indication every ``keepalive`` seconds keeps the NAT mapping
  towards the server open when nothing else flows (RFC 8656 asks for
  traffic well within the NAT timeouts).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from p2pd.nat.demux import CHANNEL_MAX, CHANNEL_MIN
from p2pd.nat.stun import (
    Address,
    Attr,
    Class,
    Method,
    StunError,
    StunMessage,
    check_integrity,
    decode_error_code_untrusted,
    decode_u32_untrusted,
    decode_xor_address_untrusted,
    encode_message,
    encode_xor_address,
    long_term_key,
    rest_credentials,
    u32,
)
from p2pd.nat.transactions import RetransmitSettings, Transactions

UDP_TRANSPORT = bytes([17, 0, 0, 0])
PERMISSION_REFRESH = 240.0  # permissions last 300 s
CHANNEL_REFRESH = 480.0  # channel bindings last 600 s
MAX_PEERS = 64  # permissions and channels kept; beyond, the oldest is let go
MAX_AUTH_RETRIES = 3  # 401/438 answers followed in a row


Attributes = tuple[tuple[int, bytes], ...]
Build = Callable[[bytes], Attributes]  # a request's attributes, given its transaction id


def _fixed(attributes: Attributes) -> Build:
    return lambda tid: attributes


def _peer_attr(peer: Address) -> Callable[[bytes], tuple[int, bytes]]:
    return lambda tid: (Attr.XOR_PEER_ADDRESS, encode_xor_address(peer, tid))


def _channel_bind(number: int, peer: Address) -> Build:
    make = _peer_attr(peer)
    value = number.to_bytes(2, "big") + b"\0\0"
    return lambda tid: ((Attr.CHANNEL_NUMBER, value), make(tid))


class TurnState(Enum):
    IDLE = "idle"
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """Long-term: ``username`` and ``password``. REST: ``secret`` (and
    ``username`` as the user part), the password derived per allocation."""

    username: str = ""
    password: str = ""
    secret: str | None = None
    rest_lifetime: int = 86400


@dataclass(frozen=True, slots=True)
class TurnSettings:
    lifetime: int = 600  # asked for; the server decides
    refresh_fraction: float = 0.8
    retry_after: float = 30.0
    keepalive: float = 15.0
    retransmit: RetransmitSettings = field(
        default_factory=lambda: RetransmitSettings(rto=0.5, rc=5, rm=4))


@dataclass(slots=True)
class _Channel:
    number: int
    bound: bool = False  # the server confirmed it
    next_refresh: float = 0.0


class TurnClient:
    def __init__(self, server: Address, credentials: TurnCredentials,
                 settings: TurnSettings | None = None, *,
                 clock: Callable[[], float] | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 software: str = "p2pd") -> None:
        """``clock``: wall-clock seconds, for the expiry of REST credentials."""
        self.server = server
        self.credentials = credentials
        self.settings = settings or TurnSettings()
        self._clock = clock
        self._software = software
        self._tx: Transactions[tuple[str, bytes]] = Transactions(self.settings.retransmit,
                                                   random_bytes=random_bytes)
        self._random = random_bytes
        self.state = TurnState.IDLE
        self.error: str | None = None  # why it failed, last
        self.relayed: Address | None = None
        self.mapped: Address | None = None  # this socket's address as the server sees it
        self.lifetime = 0
        self._realm: str | None = None
        self._nonce: bytes | None = None
        self._username = credentials.username
        self._password = credentials.password
        self._username_expires: float | None = None  # wall clock, REST only
        self._auth_retries = 0
        self._requests: dict[bytes, tuple[Method, Build]] = {}
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self._keepalive_at: float | None = None
        self._permissions: dict[str, float] = {}  # peer ip -> next refresh
        self._channels: dict[Address, _Channel] = {}
        self._by_channel: dict[int, Address] = {}
        self._next_channel = CHANNEL_MIN
        self._outgoing: list[tuple[bytes, Address]] = []
        self.allocations = 0
        self.refreshes = 0

    # -- the caller's calls --------------------------------------------------

    def start(self, now: float) -> None:
        if self.state in (TurnState.ALLOCATING, TurnState.ALLOCATED):
            return
        self.state = TurnState.ALLOCATING
        self._retry_at = None
        self._auth_retries = 0
        self._request("allocate", Method.ALLOCATE, _fixed((
            (Attr.REQUESTED_TRANSPORT, UDP_TRANSPORT),
            (Attr.LIFETIME, u32(self.settings.lifetime)),
        )), now)

    def close(self, now: float) -> None:
        """Delete the allocation (Refresh with LIFETIME 0), sent once."""
        if self.state is TurnState.ALLOCATED:
            self._send_once(Method.REFRESH, _fixed(((Attr.LIFETIME, u32(0)),)))
        self._reset(TurnState.IDLE)

    def permit(self, peer_ip: str, now: float) -> None:
        """Let the peer at ``peer_ip`` send to the relayed address."""
        if peer_ip in self._permissions:
            return
        if len(self._permissions) >= MAX_PEERS:
            del self._permissions[next(iter(self._permissions))]
        self._permissions[peer_ip] = now  # due now (sent once allocated)
        if self.state is TurnState.ALLOCATED:
            self._refresh_permissions(now)

    def bind(self, peer: Address, now: float) -> None:
        """Ask for a channel to ``peer`` (data goes in Send indications until bound)."""
        self.permit(peer[0], now)
        if peer in self._channels:
            return
        if len(self._channels) >= MAX_PEERS:
            oldest = next(iter(self._channels))
            self._by_channel.pop(self._channels.pop(oldest).number, None)
        number = self._free_channel()
        if number is None:
            return
        self._channels[peer] = _Channel(number)
        self._by_channel[number] = peer
        if self.state is TurnState.ALLOCATED:
            self._refresh_channels(now)

    def wrap(self, data: bytes, peer: Address) -> bytes:
        """``data`` for ``peer`` through the relay: ChannelData on a bound channel,
        else a Send indication."""
        channel = self._channels.get(peer)
        if channel is not None and channel.bound:
            return channel.number.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
        tid = self._random(12)
        message = StunMessage(Method.SEND, Class.INDICATION, tid, (
            (Attr.XOR_PEER_ADDRESS, encode_xor_address(peer, tid)), (Attr.DATA, data)))
        return encode_message(message)

    def unwrap_channel_data_untrusted(self, data: bytes) -> tuple[Address, bytes]:
        """The peer and datagram of a ChannelData message from the server.
        Raises StunError."""
        if len(data) < 4:
            raise StunError("ChannelData shorter than its header")
        number = int.from_bytes(data[:2], "big")
        length = int.from_bytes(data[2:4], "big")
        if length > len(data) - 4 or len(data) - 4 - length > 3:
            raise StunError(f"ChannelData length {length} for {len(data) - 4} bytes")
        peer = self._by_channel.get(number)
        if peer is None:
            raise StunError(f"ChannelData on unbound channel 0x{number:04x}")
        return peer, data[4:4 + length]

    def unwrap_data_indication_untrusted(self, message: StunMessage) -> tuple[Address, bytes]:
        """The peer and datagram of a Data indication. Raises StunError."""
        peer = message.get(Attr.XOR_PEER_ADDRESS)
        data = message.get(Attr.DATA)
        if peer is None or data is None:
            raise StunError("Data indication without XOR-PEER-ADDRESS or DATA")
        address = decode_xor_address_untrusted(peer, message.transaction_id)
        if address[0] not in self._permissions:
            raise StunError("Data indication from a peer without permission")
        return address, data

    def owns(self, message: StunMessage) -> bool:
        """Whether ``message`` answers one of this client's transactions."""
        return message.transaction_id in self._requests

    # -- the driver's calls --------------------------------------------------

    def receive(self, message: StunMessage, now: float) -> None:
        """A STUN response from the server (the caller checked the source)."""
        done = self._tx.receive(message)
        if done is None:
            return
        purpose = done[0][0]
        request = self._requests.pop(message.transaction_id, None)
        if request is None:
            return
        if message.cls is Class.ERROR:
            self._on_error(purpose, request, message, now)
            return
        if message.cls is not Class.SUCCESS:
            return
        if not check_integrity(message, self._key()):
            self.error = f"{purpose}: response without valid MESSAGE-INTEGRITY"
            return
        self._auth_retries = 0
        try:
            if purpose == "allocate":
                self._on_allocated(message, now)
            elif purpose == "refresh":
                lifetime = decode_u32_untrusted(message.get(Attr.LIFETIME), "LIFETIME")
                self.lifetime = lifetime
                self.refreshes += 1
                self._refresh_at = now + lifetime * self.settings.refresh_fraction
            elif purpose.startswith("channel:"):
                number = int(purpose.split(":")[1])
                peer = self._by_channel.get(number)
                if peer is not None:
                    self._channels[peer].bound = True
        except StunError as error:
            self._fail(f"{purpose}: {error}", now)

    def handle_timer(self, now: float) -> None:
        for purpose, tid in self._tx.handle_timer(now):
            self._requests.pop(tid, None)
            if purpose in ("allocate", "refresh"):
                self._fail(f"{purpose}: no answer from the TURN server", now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.state = TurnState.IDLE
            self.start(now)
        if self.state is not TurnState.ALLOCATED:
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._request("refresh", Method.REFRESH,
                          _fixed(((Attr.LIFETIME, u32(self.settings.lifetime)),)), now)
        self._refresh_permissions(now)
        self._refresh_channels(now)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive_at = now + self.settings.keepalive
            self._outgoing.append((encode_message(StunMessage(
                Method.BINDING, Class.INDICATION, self._random(12)), fingerprint=True),
                self.server))

    def deadline(self) -> float | None:
        times = [self._tx.deadline(), self._retry_at]
        if self.state is TurnState.ALLOCATED:
            times += [self._refresh_at, self._keepalive_at,
                      min(self._permissions.values(), default=None),
                      min((c.next_refresh for c in self._channels.values()), default=None)]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._tx.datagrams_to_send() + self._outgoing
        self._outgoing = []
        return out

    def status(self) -> dict[str, object]:
        return {
            "server": f"{self.server[0]}:{self.server[1]}",
            "state": self.state.value,
            "relayed": None if self.relayed is None else f"{self.relayed[0]}:{self.relayed[1]}",
            "lifetime_s": self.lifetime,
            "permissions": len(self._permissions),
            "channels": sum(1 for c in self._channels.values() if c.bound),
            "error": self.error,
        }

    # -- internals -----------------------------------------------------------

    def _key(self) -> bytes:
        return long_term_key(self._username, self._realm or "", self._password)

    def _fresh_credentials(self) -> None:
        creds = self.credentials
        if creds.secret is None:
            return
        wall = self._clock() if self._clock is not None else 0.0
        if self._username_expires is not None and wall < self._username_expires - 60:
            return
        expiry = int(wall) + creds.rest_lifetime
        self._username, self._password = rest_credentials(creds.secret, creds.username, expiry)
        self._username_expires = float(expiry)

    def _request(self, purpose: str, method: Method, build: Build, now: float) -> None:
        tid = self._tx.new_id()
        self._requests[tid] = (method, build)
        self._tx.start(tid, self._encode(method, tid, build), self.server, (purpose, tid), now)

    def _encode(self, method: Method, tid: bytes, build: Build) -> bytes:
        attrs = list(build(tid))
        if self._software:
            attrs.insert(0, (Attr.SOFTWARE, self._software.encode()))
        key = None
        if self._realm is not None and self._nonce is not None:
            self._fresh_credentials()
            attrs += [(Attr.USERNAME, self._username.encode()),
                      (Attr.REALM, self._realm.encode()), (Attr.NONCE, self._nonce)]
            key = self._key()
        return encode_message(StunMessage(method, Class.REQUEST, tid, tuple(attrs)),
                              integrity_key=key, fingerprint=True)

    def _send_once(self, method: Method, build: Build) -> None:
        tid = self._tx.new_id()
        self._outgoing.append((self._encode(method, tid, build), self.server))

    def _on_error(self, purpose: str, request: tuple[Method, Build],
                  message: StunMessage, now: float) -> None:
        try:
            code, reason = decode_error_code_untrusted(message.get(Attr.ERROR_CODE) or b"")
        except StunError:
            code, reason = 0, "an error without a valid ERROR-CODE"
        method, build = request
        if code in (401, 438) and self._auth_retries < MAX_AUTH_RETRIES:
            realm = message.get(Attr.REALM)
            nonce = message.get(Attr.NONCE)
            if nonce is not None and (realm is not None or self._realm is not None):
                if realm is not None:
                    self._realm = realm.decode("utf-8", "replace")
                self._nonce = nonce
                self._auth_retries += 1
                self._request(purpose, method, build, now)
                return
        if code == 437 and purpose == "allocate" and self._auth_retries < MAX_AUTH_RETRIES:
            # an allocation of an earlier run on this 5-tuple: delete it, allocate anew
            self._auth_retries += 1
            self._send_once(Method.REFRESH, _fixed(((Attr.LIFETIME, u32(0)),)))
            self._request(purpose, method, build, now)
            return
        text = f"{purpose}: error {code} {reason}".strip()
        if purpose in ("allocate", "refresh"):
            self._fail(text, now)
        else:
            self.error = text

    def _on_allocated(self, message: StunMessage, now: float) -> None:
        relayed = message.get(Attr.XOR_RELAYED_ADDRESS)
        if relayed is None:
            raise StunError("Allocate success without XOR-RELAYED-ADDRESS")
        self.relayed = decode_xor_address_untrusted(relayed, message.transaction_id)
        mapped = message.get(Attr.XOR_MAPPED_ADDRESS)
        if mapped is not None:
            self.mapped = decode_xor_address_untrusted(mapped, message.transaction_id)
        self.lifetime = decode_u32_untrusted(message.get(Attr.LIFETIME), "LIFETIME")
        self.state = TurnState.ALLOCATED
        self.error = None
        self.allocations += 1
        self._refresh_at = now + self.lifetime * self.settings.refresh_fraction
        self._keepalive_at = now + self.settings.keepalive
        for ip in self._permissions:
            self._permissions[ip] = now
        for channel in self._channels.values():
            channel.bound = False
            channel.next_refresh = now
        self._refresh_permissions(now)
        self._refresh_channels(now)

    def _refresh_permissions(self, now: float) -> None:
        due = [ip for ip, at in self._permissions.items() if now >= at]
        if not due:
            return
        for ip in due:
            self._permissions[ip] = now + PERMISSION_REFRESH
        # one CreatePermission may carry several XOR-PEER-ADDRESS attributes
        makers = [_peer_attr((ip, 0)) for ip in due[:16]]
        self._request("permission", Method.CREATE_PERMISSION,
                      lambda tid: tuple(make(tid) for make in makers), now)
        for ip in due[16:]:
            self._permissions[ip] = now  # the next round

    def _refresh_channels(self, now: float) -> None:
        for peer, channel in self._channels.items():
            if now < channel.next_refresh:
                continue
            channel.next_refresh = now + CHANNEL_REFRESH
            self._request(f"channel:{channel.number}", Method.CHANNEL_BIND,
                          _channel_bind(channel.number, peer), now)

    def _free_channel(self) -> int | None:
        for _ in range(CHANNEL_MAX - CHANNEL_MIN + 1):
            number = self._next_channel
            self._next_channel = CHANNEL_MIN if number >= CHANNEL_MAX else number + 1
            if number not in self._by_channel:
                return number
        return None

    def _fail(self, why: str, now: float) -> None:
        self.error = why
        self._reset(TurnState.FAILED)
        self._retry_at = now + self.settings.retry_after

    def _reset(self, state: TurnState) -> None:
        self.state = state
        self.relayed = None
        self._refresh_at = None
        self._keepalive_at = None
        self._tx.cancel_where(lambda purpose: False)
        self._requests.clear()
        for channel in self._channels.values():
            channel.bound = False
