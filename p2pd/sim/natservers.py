"""A STUN server (RFC 8489, RFC 5780) and a TURN server (RFC 8656) for the simulated network.

Small and strict enough to run the daemon's clients against in virtual time;
the real servers (coturn) are checked in tests/test_nat_coturn.py.

:class:`SimStunServer` listens on two IPs and two ports (four nodes), answers
Binding with XOR-MAPPED-ADDRESS and OTHER-ADDRESS, and honours CHANGE-REQUEST
by answering from the other IP and/or port. :class:`SimTurnServer` does
long-term authentication (401 with REALM and NONCE, then
MESSAGE-INTEGRITY), Allocate, Refresh, CreatePermission, ChannelBind, Send and
Data indications and ChannelData, and relays from addresses it adds to the
simulation as it allocates them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from p2pd.nat.stun import (
    CHANGE_IP,
    CHANGE_PORT,
    Attr,
    Class,
    Method,
    StunError,
    StunMessage,
    check_integrity,
    decode_message_untrusted,
    decode_u32_untrusted,
    decode_xor_address_untrusted,
    encode_address,
    encode_error_code,
    encode_message,
    encode_xor_address,
    long_term_key,
    u32,
)

Address = tuple[str, int]


class _Facade:
    """One listening address of a server: a SimNode that hands what it receives
    to the server and sends what the server queued for this address."""

    def __init__(self, address: Address,
                 handler: Callable[[Address, bytes, Address, float], None]) -> None:
        self.address = address
        self._handler = handler
        self.outgoing: list[tuple[bytes, Address]] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._handler(self.address, data, addr, now)

    def handle_timer(self, now: float) -> None:
        return None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.outgoing = self.outgoing, []
        return out

    def get_timer(self) -> float | None:
        return None


class SimStunServer:
    def __init__(self, ip: str, alt_ip: str, port: int = 3478, alt_port: int = 3479, *,
                 wake: Callable[[], None] | None = None) -> None:
        """``wake``: the simulation's ``flush`` (an answer may leave from another of
        the server's addresses than the one the request came to, and the simulation
        polls only nodes that received something)."""
        self._wake = wake
        self.ips = (ip, alt_ip)
        self.ports = (port, alt_port)
        self.facades = {(i, p): _Facade((i, p), self._receive)
                        for i in self.ips for p in self.ports}
        self.answered = 0

    @property
    def address(self) -> Address:
        return (self.ips[0], self.ports[0])

    def nodes(self) -> list[_Facade]:
        return list(self.facades.values())

    def _receive(self, local: Address, data: bytes, source: Address, now: float) -> None:
        try:
            request = decode_message_untrusted(data)
        except StunError:
            return
        if request.method != Method.BINDING or request.cls is not Class.REQUEST:
            return
        change = 0
        value = request.get(Attr.CHANGE_REQUEST)
        if value is not None:
            try:
                change = decode_u32_untrusted(value, "CHANGE-REQUEST")
            except StunError:
                return
        ip = local[0]
        if change & CHANGE_IP:
            ip = self.ips[1] if local[0] == self.ips[0] else self.ips[0]
        port = local[1]
        if change & CHANGE_PORT:
            port = self.ports[1] if local[1] == self.ports[0] else self.ports[0]
        other = (self.ips[1] if local[0] == self.ips[0] else self.ips[0],
                 self.ports[1] if local[1] == self.ports[0] else self.ports[0])
        tid = request.transaction_id
        response = encode_message(StunMessage(Method.BINDING, Class.SUCCESS, tid, (
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(source, tid)),
            (Attr.OTHER_ADDRESS, encode_address(other)),
            (Attr.RESPONSE_ORIGIN, encode_address((ip, port))),
        )), fingerprint=True)
        self.facades[(ip, port)].outgoing.append((response, source))
        self.answered += 1
        if (ip, port) != local and self._wake is not None:
            self._wake()


@dataclass(slots=True)
class _Allocation:
    client: Address
    relayed: Address
    expires: float
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Address] = field(default_factory=dict)


class SimTurnServer:
    REALM = "sim.test"
    NONCE = b"sim-nonce-1"

    def __init__(self, address: Address, users: dict[str, str],
                 add_node: Callable[[_Facade], None], *,
                 wake: Callable[[], None] | None = None) -> None:
        self._wake = wake
        self.address = address
        self.users = users
        self._add_node = add_node
        self.facade = _Facade(address, self._from_client)
        self._allocations: dict[Address, _Allocation] = {}
        self._by_relayed: dict[Address, _Allocation] = {}
        self._relays: dict[Address, _Facade] = {}
        self._next_port = 50000
        self.relayed_packets = 0
        self.down = False  # a down server answers nothing
        self.peer_ips: set[str] = set()  # every peer IP a client permitted, bound or sent to

    def nodes(self) -> list[_Facade]:
        return [self.facade]

    def _send(self, data: bytes, to: Address) -> None:
        self.facade.outgoing.append((data, to))

    def _from_client(self, local: Address, data: bytes, source: Address, now: float) -> None:
        if self.down or not data:
            return
        if 0x40 <= data[0] <= 0x4F:  # ChannelData
            allocation = self._allocations.get(source)
            if allocation is None or len(data) < 4:
                return
            number = int.from_bytes(data[:2], "big")
            peer = allocation.channels.get(number)
            length = int.from_bytes(data[2:4], "big")
            if peer is not None and length <= len(data) - 4:
                self._relay_out(allocation, peer, data[4:4 + length], now)
            return
        try:
            message = decode_message_untrusted(data)
        except StunError:
            return
        if message.cls is Class.INDICATION:
            allocation = self._allocations.get(source)
            if message.method == Method.SEND and allocation is not None:
                peer_value, payload = message.get(Attr.XOR_PEER_ADDRESS), message.get(Attr.DATA)
                if peer_value is None or payload is None:
                    return
                try:
                    peer = decode_xor_address_untrusted(peer_value, message.transaction_id)
                except StunError:
                    return
                self._relay_out(allocation, peer, payload, now)
            return
        if message.cls is not Class.REQUEST:
            return
        tid = message.transaction_id
        username = message.get(Attr.USERNAME)
        password = self.users.get(username.decode("utf-8", "replace")) if username else None
        key = (long_term_key(username.decode(), self.REALM, password)
               if username is not None and password is not None else None)
        if message.method == Method.BINDING:
            self._send(encode_message(StunMessage(Method.BINDING, Class.SUCCESS, tid, (
                (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(source, tid)),)),
                fingerprint=True), source)
            return
        if key is None or message.get(Attr.NONCE) != self.NONCE or not check_integrity(
                message, key):
            self._error(message, 401, "Unauthorized", source)
            return
        allocation = self._allocations.get(source)
        if allocation is not None and now >= allocation.expires:
            self._drop(allocation)
            allocation = None
        if message.method == Method.ALLOCATE:
            if allocation is not None:
                self._error(message, 437, "Allocation Mismatch", source, key)
                return
            relayed = (self.address[0], self._next_port)
            self._next_port += 1
            allocation = _Allocation(source, relayed, now + 600)
            self._allocations[source] = allocation
            self._by_relayed[relayed] = allocation
            facade = _Facade(relayed, self._from_peer)
            self._relays[relayed] = facade
            self._add_node(facade)
            self._ok(message, key, source, (
                (Attr.XOR_RELAYED_ADDRESS, encode_xor_address(relayed, tid)),
                (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(source, tid)),
                (Attr.LIFETIME, u32(600))))
            return
        if allocation is None:
            self._error(message, 437, "Allocation Mismatch", source, key)
            return
        if message.method == Method.REFRESH:
            lifetime = message.get(Attr.LIFETIME)
            seconds = 600 if lifetime is None else min(int.from_bytes(lifetime, "big"), 3600)
            if seconds == 0:
                self._drop(allocation)
            else:
                allocation.expires = now + seconds
            self._ok(message, key, source, ((Attr.LIFETIME, u32(seconds)),))
        elif message.method == Method.CREATE_PERMISSION:
            for kind, value in message.attributes:
                if kind == Attr.XOR_PEER_ADDRESS:
                    peer = decode_xor_address_untrusted(value, tid)
                    allocation.permissions[peer[0]] = now + 300
                    self.peer_ips.add(peer[0])
            self._ok(message, key, source, ())
        elif message.method == Method.CHANNEL_BIND:
            number_value = message.get(Attr.CHANNEL_NUMBER)
            peer_value = message.get(Attr.XOR_PEER_ADDRESS)
            if number_value is None or peer_value is None:
                self._error(message, 400, "Bad Request", source, key)
                return
            number = int.from_bytes(number_value[:2], "big")
            peer = decode_xor_address_untrusted(peer_value, tid)
            allocation.channels[number] = peer
            allocation.permissions[peer[0]] = now + 300
            self.peer_ips.add(peer[0])
            self._ok(message, key, source, ())

    def _from_peer(self, local: Address, data: bytes, source: Address, now: float) -> None:
        allocation = self._by_relayed.get(local)
        if self.down or allocation is None or allocation.permissions.get(
                source[0], -1.0) < now:
            return
        self.relayed_packets += 1
        for number, peer in allocation.channels.items():
            if peer == source:
                self._send(number.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data,
                           allocation.client)
                if self._wake is not None:
                    self._wake()
                return
        tid = bytes(12)
        self._send(encode_message(StunMessage(Method.DATA, Class.INDICATION, tid, (
            (Attr.XOR_PEER_ADDRESS, encode_xor_address(source, tid)), (Attr.DATA, data)))),
            allocation.client)
        if self._wake is not None:
            self._wake()

    def _relay_out(self, allocation: _Allocation, peer: Address, data: bytes,
                   now: float) -> None:
        self.peer_ips.add(peer[0])
        if allocation.permissions.get(peer[0], -1.0) < now:
            return
        self.relayed_packets += 1
        self._relays[allocation.relayed].outgoing.append((data, peer))
        if self._wake is not None:
            self._wake()

    def _drop(self, allocation: _Allocation) -> None:
        self._allocations.pop(allocation.client, None)
        self._by_relayed.pop(allocation.relayed, None)

    def _ok(self, request: StunMessage, key: bytes, to: Address,
            attributes: tuple[tuple[int, bytes], ...]) -> None:
        self._send(encode_message(StunMessage(request.method, Class.SUCCESS,
                                              request.transaction_id, attributes),
                                  integrity_key=key, fingerprint=True), to)

    def _error(self, request: StunMessage, code: int, reason: str, to: Address,
               key: bytes | None = None) -> None:
        attributes: tuple[tuple[int, bytes], ...] = (
            (Attr.ERROR_CODE, encode_error_code(code, reason)),
            (Attr.REALM, self.REALM.encode()), (Attr.NONCE, self.NONCE))
        self._send(encode_message(StunMessage(request.method, Class.ERROR,
                                              request.transaction_id, attributes),
                                  integrity_key=key, fingerprint=True), to)
