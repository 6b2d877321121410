"""STUN messages (RFC 8489) with the TURN (RFC 8656) and NAT behaviour (RFC 5780) attributes.

A codec of stateless functions, no I/O. A message on the wire::

    offset  size  field
    0       2     type: 00 | method and class bits interleaved (RFC 8489 5)
    2       2     length of the attributes (a multiple of 4)
    4       4     magic cookie 0x2112A442
    8       12    transaction id
    20      n     attributes: type u16, length u16, value, padding to 4 bytes

:func:`decode_message_untrusted` is the one door for STUN bytes from the
network: it raises only :class:`StunError`, checks the cheap things (size,
leading bits, cookie, length) first, then the attribute framing and the
FINGERPRINT when present. MESSAGE-INTEGRITY is checked separately
(:func:`check_integrity`), by whoever knows the key. Attributes after
MESSAGE-INTEGRITY other than FINGERPRINT are ignored, as RFC 8489 14.5 says.

Passwords are used as given: no SASLprep (RFC 8265 OpaqueString). Every
password p2pd is configured with, or derives (REST credentials, base64), is
ASCII, for which that processing changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

Address = tuple[str, int]

MAGIC_COOKIE: Final = 0x2112A442
COOKIE_BYTES: Final = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_SIZE: Final = 20
MAX_MESSAGE: Final = 1472  # what one datagram of this daemon's socket carries at most
MAX_ATTRIBUTES: Final = 64
FINGERPRINT_XOR: Final = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")


class StunError(Exception):
    """STUN bytes were refused; the text says why."""


class Method(IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class Class(IntEnum):
    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


class Attr(IntEnum):
    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


# CHANGE-REQUEST flags (RFC 5780 7.2)
CHANGE_IP: Final = 0x04
CHANGE_PORT: Final = 0x02
_FAMILY_V4, _FAMILY_V6 = 0x01, 0x02


@dataclass(frozen=True, slots=True)
class StunMessage:
    method: int
    cls: Class
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()
    # set by the decoder: the datagram, and where MESSAGE-INTEGRITY starts (or -1)
    raw: bytes = field(default=b"", compare=False, repr=False)
    integrity_at: int = field(default=-1, compare=False, repr=False)

    def get(self, attr: int) -> bytes | None:
        """The first value of ``attr`` (before MESSAGE-INTEGRITY), or None."""
        for kind, value in self.attributes:
            if kind == attr:
                return value
        return None

    @property
    def type(self) -> int:
        return message_type(self.method, self.cls)


# -- the type field ------------------------------------------------------------


def message_type(method: int, cls: Class) -> int:
    """Interleave a 12-bit method and a 2-bit class (RFC 8489 5)."""
    m = method & 0xFFF
    c = int(cls)
    return ((m & 0xF80) << 2) | ((m & 0x070) << 1) | (m & 0x00F) | ((c & 2) << 7) | ((c & 1) << 4)


def split_type(value: int) -> tuple[int, Class]:
    method = ((value >> 2) & 0xF80) | ((value >> 1) & 0x070) | (value & 0x00F)
    cls = Class(((value >> 7) & 2) | ((value >> 4) & 1))
    return method, cls


# -- encoding --------------------------------------------------------------------


def _tlv(kind: int, value: bytes, pad: bytes) -> bytes:
    padding = (-len(value)) % 4
    return _TLV.pack(kind, len(value)) + value + pad * padding


def encode_message(message: StunMessage, *, integrity_key: bytes | None = None,
                   fingerprint: bool = False, pad: bytes = b"\0") -> bytes:
    """The message's bytes, with MESSAGE-INTEGRITY (HMAC-SHA1 under
    ``integrity_key``) and FINGERPRINT appended when asked. ``pad`` fills the
    attribute padding (RFC 5769's samples use spaces; zeros otherwise)."""
    body = b"".join(_tlv(kind, value, pad) for kind, value in message.attributes)
    tid = message.transaction_id
    if len(tid) != 12:
        raise ValueError("a transaction id has 12 bytes")
    head = struct.pack("!HHI", message.type, 0, MAGIC_COOKIE) + tid
    if integrity_key is not None:
        length = len(body) + 24
        mac = hmac.new(integrity_key, _with_length(head, length) + body, hashlib.sha1).digest()
        body += _tlv(Attr.MESSAGE_INTEGRITY, mac, pad)
    if fingerprint:
        length = len(body) + 8
        crc = _crc(_with_length(head, length) + body)
        body += _tlv(Attr.FINGERPRINT, crc.to_bytes(4, "big"), pad)
    return _with_length(head, len(body)) + body


def _with_length(head: bytes, length: int) -> bytes:
    return head[:2] + length.to_bytes(2, "big") + head[4:]


def _crc(data: bytes) -> int:
    return (zlib.crc32(data) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


# -- decoding --------------------------------------------------------------------


def looks_like_stun(data: bytes) -> bool:
    """Cheap: the two leading zero bits, a header's worth of bytes and the cookie."""
    return len(data) >= HEADER_SIZE and data[0] < 0x04 and data[4:8] == COOKIE_BYTES


def decode_message_untrusted(data: bytes) -> StunMessage:
    """Parse one STUN message. Raises only StunError."""
    size = len(data)
    if size < HEADER_SIZE:
        raise StunError(f"truncated: {size} bytes, a header has {HEADER_SIZE}")
    if size > MAX_MESSAGE:
        raise StunError(f"oversize: {size} bytes")
    kind, length, cookie, tid = _HEADER.unpack_from(data)
    if kind & 0xC000:
        raise StunError("the two leading bits are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("no magic cookie")
    if length % 4:
        raise StunError(f"length {length} is not a multiple of 4")
    if length != size - HEADER_SIZE:
        raise StunError(f"length {length} but {size - HEADER_SIZE} bytes follow the header")
    method, cls = split_type(kind)
    attributes: list[tuple[int, bytes]] = []
    offset = HEADER_SIZE
    integrity_at = -1
    fingerprint_seen = False
    while offset < size:
        if fingerprint_seen:
            raise StunError("an attribute after FINGERPRINT")
        if size - offset < 4:
            raise StunError("truncated attribute header")
        attr, attr_len = _TLV.unpack_from(data, offset)
        start = offset + 4
        end = start + attr_len
        if end > size:
            raise StunError(f"attribute 0x{attr:04x} runs past the message")
        value = data[start:end]
        if attr == Attr.FINGERPRINT:
            if attr_len != 4:
                raise StunError("FINGERPRINT is not 4 bytes")
            expected = _crc(_with_length(data[:HEADER_SIZE], end - HEADER_SIZE) + data[
                HEADER_SIZE:offset])
            if int.from_bytes(value, "big") != expected:
                raise StunError("FINGERPRINT does not match")
            fingerprint_seen = True
        elif integrity_at < 0:
            if attr == Attr.MESSAGE_INTEGRITY:
                if attr_len != 20:
                    raise StunError("MESSAGE-INTEGRITY is not 20 bytes")
                integrity_at = offset
            if len(attributes) >= MAX_ATTRIBUTES:
                raise StunError(f"more than {MAX_ATTRIBUTES} attributes")
            attributes.append((attr, value))
        offset = end + ((-attr_len) % 4)
    if offset != size:
        raise StunError("attribute padding runs past the message")
    return StunMessage(method, cls, tid, tuple(attributes), data, integrity_at)


def check_integrity(message: StunMessage, key: bytes) -> bool:
    """Whether the decoded message carries a MESSAGE-INTEGRITY valid under ``key``."""
    at = message.integrity_at
    raw = message.raw
    if at < 0 or len(raw) < at + 24:
        return False
    head = _with_length(raw[:HEADER_SIZE], at + 24 - HEADER_SIZE)
    mac = hmac.new(key, head + raw[HEADER_SIZE:at], hashlib.sha1).digest()
    return hmac.compare_digest(mac, raw[at + 4:at + 24])


# -- credentials -------------------------------------------------------------------


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """MD5(username ":" realm ":" password), RFC 8489 9.2.2 (no SASLprep, see above)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).digest()


def short_term_key(password: str) -> bytes:
    return password.encode()


def rest_credentials(secret: str, user: str, expiry: int) -> tuple[str, str]:
    """TURN REST (time-limited) credentials as coturn's ``use-auth-secret`` checks
    them: username "expiry:user", password base64(HMAC-SHA1(secret, username))."""
    username = f"{expiry}:{user}" if user else str(expiry)
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode()


# -- attribute values ------------------------------------------------------------


def encode_xor_address(address: Address, transaction_id: bytes) -> bytes:
    host, port = address
    ip = ipaddress.ip_address(host)
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        value = int(ip) ^ MAGIC_COOKIE
        return struct.pack("!BBHI", 0, _FAMILY_V4, xport, value)
    mask = int.from_bytes(COOKIE_BYTES + transaction_id, "big")
    return struct.pack("!BBH", 0, _FAMILY_V6, xport) + (int(ip) ^ mask).to_bytes(16, "big")


def decode_xor_address_untrusted(value: bytes, transaction_id: bytes) -> Address:
    host, port = decode_address_untrusted(value)
    ip = ipaddress.ip_address(host)
    port ^= MAGIC_COOKIE >> 16
    if ip.version == 4:
        return str(ipaddress.IPv4Address(int(ip) ^ MAGIC_COOKIE)), port
    mask = int.from_bytes(COOKIE_BYTES + transaction_id, "big")
    return str(ipaddress.IPv6Address(int(ip) ^ mask)), port


def encode_address(address: Address) -> bytes:
    host, port = address
    ip = ipaddress.ip_address(host)
    family = _FAMILY_V4 if ip.version == 4 else _FAMILY_V6
    return struct.pack("!BBH", 0, family, port) + ip.packed


def decode_address_untrusted(value: bytes) -> Address:
    """MAPPED-ADDRESS layout (also OTHER-ADDRESS, RESPONSE-ORIGIN). Raises StunError."""
    if len(value) < 4:
        raise StunError("address attribute too short")
    family, port = value[1], int.from_bytes(value[2:4], "big")
    if family == _FAMILY_V4 and len(value) == 8:
        return str(ipaddress.IPv4Address(value[4:8])), port
    if family == _FAMILY_V6 and len(value) == 20:
        return str(ipaddress.IPv6Address(value[4:20])), port
    raise StunError(f"address attribute of family {family} and {len(value)} bytes")


def encode_error_code(code: int, reason: str) -> bytes:
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def decode_error_code_untrusted(value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise StunError("ERROR-CODE too short")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise StunError("ERROR-CODE out of range")
    return klass * 100 + number, value[4:].decode("utf-8", "replace")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def decode_u32_untrusted(value: bytes | None, what: str) -> int:
    if value is None or len(value) != 4:
        raise StunError(f"{what} is not 4 bytes")
    return int.from_bytes(value, "big")


def change_request(change_ip: bool, change_port: bool) -> bytes:
    return u32((CHANGE_IP if change_ip else 0) | (CHANGE_PORT if change_port else 0))


def binding_request(transaction_id: bytes, *, change_ip: bool = False,
                    change_port: bool = False, software: str | None = None) -> bytes:
    attributes: list[tuple[int, bytes]] = []
    if software:
        attributes.append((Attr.SOFTWARE, software.encode()))
    if change_ip or change_port:
        attributes.append((Attr.CHANGE_REQUEST, change_request(change_ip, change_port)))
    return encode_message(StunMessage(Method.BINDING, Class.REQUEST, transaction_id,
                                      tuple(attributes)), fingerprint=True)


def mapped_address_untrusted(message: StunMessage) -> Address:
    """XOR-MAPPED-ADDRESS, else the old MAPPED-ADDRESS. Raises StunError."""
    value = message.get(Attr.XOR_MAPPED_ADDRESS)
    if value is not None:
        return decode_xor_address_untrusted(value, message.transaction_id)
    value = message.get(Attr.MAPPED_ADDRESS)
    if value is not None:
        return decode_address_untrusted(value)
    raise StunError("no mapped address in the response")
