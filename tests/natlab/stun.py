"""A few lines of STUN (RFC 8489) and TURN (RFC 8656) for the lab's own tests.

Test-only: just enough to ask the lab's coturn for a binding (with an RFC 5780
CHANGE-REQUEST) and an allocation with long-term or REST credentials. The
daemon's STUN and TURN clients live in ``p2pd/nat/``; this module is what the
harness uses to check coturn without depending on them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass, field

MAGIC = 0x2112A442
BINDING = 0x0001
ALLOCATE = 0x0003
SUCCESS = 0x0100
ERROR = 0x0110

MAPPED_ADDRESS = 0x0001
CHANGE_REQUEST = 0x0003
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_TRANSPORT = 0x0019
XOR_MAPPED_ADDRESS = 0x0020
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

CHANGE_IP = 0x4
CHANGE_PORT = 0x2


@dataclass
class Message:
    method_class: int
    transaction: bytes
    attributes: dict[int, bytes] = field(default_factory=dict)

    def address(self, kind: int) -> tuple[str, int]:
        value = self.attributes[kind]
        port = struct.unpack_from("!H", value, 2)[0]
        raw = value[4:8]
        if kind in (XOR_MAPPED_ADDRESS, XOR_RELAYED_ADDRESS):
            port ^= MAGIC >> 16
            raw = bytes(a ^ b for a, b in zip(raw, struct.pack("!I", MAGIC), strict=True))
        return socket.inet_ntoa(raw), port

    @property
    def error_code(self) -> int | None:
        value = self.attributes.get(ERROR_CODE)
        return None if value is None else value[2] * 100 + value[3]


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def encode(method_class: int, transaction: bytes, attributes: list[tuple[int, bytes]],
           integrity_key: bytes | None = None) -> bytes:
    body = b"".join(_attribute(k, v) for k, v in attributes)
    if integrity_key is None:
        return struct.pack("!HHI", method_class, len(body), MAGIC) + transaction + body
    # MESSAGE-INTEGRITY covers the header with the length that includes it
    header = struct.pack("!HHI", method_class, len(body) + 24, MAGIC) + transaction
    mac = hmac.new(integrity_key, header + body, hashlib.sha1).digest()
    return header + body + _attribute(MESSAGE_INTEGRITY, mac)


def decode(data: bytes) -> Message:
    method_class, length, magic = struct.unpack_from("!HHI", data)
    if magic != MAGIC or length + 20 != len(data):
        raise ValueError("not a STUN message")
    message = Message(method_class, data[8:20])
    offset = 20
    while offset + 4 <= len(data):
        kind, size = struct.unpack_from("!HH", data, offset)
        message.attributes.setdefault(kind, data[offset + 4:offset + 4 + size])
        offset += 4 + size + (-size % 4)
    return message


def binding_request(change: int = 0) -> tuple[bytes, bytes]:
    """A Binding request (and its transaction id); ``change``: CHANGE_IP | CHANGE_PORT."""
    transaction = os.urandom(12)
    attributes = [(CHANGE_REQUEST, struct.pack("!I", change))] if change else []
    return encode(BINDING, transaction, attributes), transaction


def exchange(sock: socket.socket, data: bytes,
             server: tuple[str, int]) -> tuple[Message, tuple[str, int]]:
    """Send ``data`` and return the answer with the same transaction and where it came from
    (``TimeoutError`` after the socket's timeout)."""
    sock.sendto(data, server)
    while True:
        answer, source = sock.recvfrom(2048)
        try:
            message = decode(answer)
        except ValueError:
            continue
        if message.transaction == data[8:20]:
            return message, (str(source[0]), int(source[1]))


def rest_credentials(secret: str, name: str, lifetime: float = 3600.0,
                     now: float | None = None) -> tuple[str, str]:
    """TURN REST API credentials (coturn ``use-auth-secret``): ``expiry:name`` and
    base64(HMAC-SHA1(secret, username))."""
    expiry = int((time.time() if now is None else now) + lifetime)
    username = f"{expiry}:{name}"
    password = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


def allocate(sock: socket.socket, server: tuple[str, int], username: str,
             password: str) -> Message:
    """A TURN Allocate for UDP with long-term credentials: the first request draws the
    401 with realm and nonce, the second one carries MESSAGE-INTEGRITY."""
    transport = (REQUESTED_TRANSPORT, struct.pack("!B3x", 17))
    first, _ = exchange(sock, encode(ALLOCATE, os.urandom(12), [transport]), server)
    if first.error_code != 401:
        return first
    realm, nonce = first.attributes[REALM], first.attributes[NONCE]
    key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
    request = encode(ALLOCATE, os.urandom(12),
                     [transport, (USERNAME, username.encode()), (REALM, realm),
                      (NONCE, nonce)], key)
    answer, _ = exchange(sock, request, server)
    return answer
