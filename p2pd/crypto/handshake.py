"""Handshake datagrams: the Noise IK messages framed for the wire, with MACs.

The Noise handshake itself (p2pd.crypto.noise) authenticates both sides and
agrees on the keys. This module adds what a UDP responder needs to stay cheap
under attack, following WireGuard's design:

- mac1 = HMAC-SHA256(SHA-256("p2pd mac1" || receiver static key), bytes
  before mac1)[:16]. Only a sender that knows the receiver's static public
  key can produce it, and it is checked before any Diffie-Hellman.
- mac2 = HMAC-SHA256(cookie, bytes before mac2)[:16], or zeros without a
  cookie. A responder under load answers a request that lacks a valid mac2
  with a COOKIE_REPLY instead of doing the handshake; the cookie is bound to
  the requester's address, so a spoofing flood cannot complete handshakes.

Request  (HANDSHAKE_REQUEST, flags 0)::

    header(14) | sender index(4) | noise message 1 | mac1(16) | mac2(16)
    noise message 1 = e(32) | enc s(48) | enc payload(n+16)
    payload = timestamp u64 (ns) | certificate length u16 | certificate

Response (HANDSHAKE_RESPONSE, flags 0)::

    header(14) | receiver index(4) | noise message 2 | mac1(16) | mac2(16)
    noise message 2 = e(32) | enc payload(n+16)
    payload = sender index u32 | certificate length u16 | certificate

Cookie reply (COOKIE_REPLY, flags 0)::

    header(14) | receiver index(4) | nonce(12) | AES-256-GCM(cookie)(16+16)
    key = SHA-256("p2pd cookie" || responder static key || request mac1),
    aad = request mac1
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.header import HEADER_SIZE, MAX_DATAGRAM, encode_header
from p2pd.wire.types import PacketType

PROLOGUE_PREFIX = b"p2pd handshake v1"
MAC_SIZE = 16
COOKIE_SIZE = 16
COOKIE_NONCE_SIZE = 12
TIMESTAMP_SIZE = 8
MAX_CERTIFICATE = 768
_INDEX = struct.Struct(">I")
_REQUEST_PAYLOAD = struct.Struct(">QBH")  # timestamp, state flags, certificate length
_RESPONSE_PAYLOAD = struct.Struct(">IBH")  # sender index, state flags, certificate length
FRESH = 0x01
"""State flag: the sender holds no channel state for this peer (a first contact,
or it restarted): the other side starts its channels afresh too (section 8.10)."""
# noise message 1 without payload: e(32) + enc s(32+16) + payload tag(16)
_NOISE1_MIN = 32 + 48 + 16
# noise message 2 without payload: e(32) + payload tag(16)
_NOISE2_MIN = 32 + 16
REQUEST_MIN_SIZE = HEADER_SIZE + 4 + _NOISE1_MIN + _REQUEST_PAYLOAD.size + 2 * MAC_SIZE
RESPONSE_MIN_SIZE = HEADER_SIZE + 4 + _NOISE2_MIN + _RESPONSE_PAYLOAD.size + 2 * MAC_SIZE
COOKIE_REPLY_SIZE = HEADER_SIZE + 4 + COOKIE_NONCE_SIZE + COOKIE_SIZE + 16
_ZERO_MAC = bytes(MAC_SIZE)


def mac1_key(static_public: bytes) -> bytes:
    return hashlib.sha256(b"p2pd mac1" + static_public).digest()


def cookie_key(static_public: bytes, request_mac1: bytes) -> bytes:
    """A key per request: the random cookie-reply nonce never meets a reused key."""
    return hashlib.sha256(b"p2pd cookie" + static_public + request_mac1).digest()


def request_prologue(sender_index: int) -> bytes:
    """The Noise prologue binds the cleartext sender index into the handshake."""
    return PROLOGUE_PREFIX + _INDEX.pack(sender_index)


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:MAC_SIZE]


def _frame(packet_type: PacketType, index: int, noise_message: bytes,
           receiver_mac1_key: bytes, cookie: bytes | None) -> bytes:
    length = 4 + len(noise_message) + 2 * MAC_SIZE
    if HEADER_SIZE + length > MAX_DATAGRAM:
        raise ValueError(f"handshake message of {HEADER_SIZE + length} bytes is too large")
    body = encode_header(0, packet_type, length) + _INDEX.pack(index) + noise_message
    body += _mac(receiver_mac1_key, body)
    return body + (_mac(cookie, body) if cookie is not None else _ZERO_MAC)


def _encode_payload(layout: struct.Struct, number: int, certificate: bytes | None,
                    fresh: bool) -> bytes:
    cert = certificate or b""
    if len(cert) > MAX_CERTIFICATE:
        raise ValueError(f"certificate of {len(cert)} bytes exceeds {MAX_CERTIFICATE}")
    return layout.pack(number, FRESH if fresh else 0, len(cert)) + cert


def encode_request_payload(timestamp: int, certificate: bytes | None, *,
                           fresh: bool = False) -> bytes:
    return _encode_payload(_REQUEST_PAYLOAD, timestamp, certificate, fresh)


def encode_response_payload(sender_index: int, certificate: bytes | None, *,
                            fresh: bool = False) -> bytes:
    return _encode_payload(_RESPONSE_PAYLOAD, sender_index, certificate, fresh)


def frame_request(sender_index: int, noise_message: bytes, responder_mac1_key: bytes,
                  cookie: bytes | None = None) -> bytes:
    return _frame(PacketType.HANDSHAKE_REQUEST, sender_index, noise_message,
                  responder_mac1_key, cookie)


def frame_response(receiver_index: int, noise_message: bytes, initiator_mac1_key: bytes) -> bytes:
    return _frame(PacketType.HANDSHAKE_RESPONSE, receiver_index, noise_message,
                  initiator_mac1_key, None)


class Framed:
    """A handshake datagram whose mac1 verified; the Noise part is still untrusted."""

    __slots__ = ("index", "mac1", "mac2", "mac2_covered", "noise_message")

    def __init__(self, index: int, noise_message: bytes, mac1: bytes, mac2: bytes,
                 mac2_covered: bytes) -> None:
        self.index = index
        self.noise_message = noise_message
        self.mac1 = mac1
        self.mac2 = mac2
        self.mac2_covered = mac2_covered

    def has_valid_mac2(self, cookie: bytes) -> bool:
        return hmac.compare_digest(_mac(cookie, self.mac2_covered), self.mac2)


def unframe_untrusted(data: bytes, own_mac1_key: bytes, min_size: int) -> Framed:
    """Split a handshake datagram (header already checked) and verify mac1."""
    if len(data) < min_size:
        raise BadPacket(DropReason.TRUNCATED, f"handshake of {len(data)} bytes")
    mac1_at = len(data) - 2 * MAC_SIZE
    mac2_at = mac1_at + MAC_SIZE
    mac1 = data[mac1_at:mac2_at]
    if not hmac.compare_digest(_mac(own_mac1_key, data[:mac1_at]), mac1):
        raise BadPacket(DropReason.BAD_MAC, "mac1")
    (index,) = _INDEX.unpack_from(data, HEADER_SIZE)
    return Framed(index, data[HEADER_SIZE + 4 : mac1_at], mac1, data[mac2_at:], data[:mac2_at])


class HandshakePayload(NamedTuple):
    number: int  # a request's timestamp, a response's sender index
    certificate: bytes | None
    fresh: bool = False  # the FRESH state flag


def _decode_payload_untrusted(layout: struct.Struct, payload: bytes,
                              what: str) -> HandshakePayload:
    """Split ``layout`` (a number, state flags, the certificate length) and the certificate."""
    if len(payload) < layout.size:
        raise BadPacket(DropReason.MALFORMED, f"{what} payload too short")
    number, flags, cert_len = layout.unpack_from(payload)
    if flags & ~FRESH:
        raise BadPacket(DropReason.MALFORMED, f"{what} state flags 0x{flags:02x}")
    if cert_len > MAX_CERTIFICATE:
        raise BadPacket(DropReason.MALFORMED, f"{what} certificate of {cert_len} bytes")
    if len(payload) != layout.size + cert_len:
        raise BadPacket(DropReason.MALFORMED, f"{what} payload length")
    return HandshakePayload(number, payload[layout.size :] or None, bool(flags & FRESH))


def decode_request_payload_untrusted(payload: bytes) -> HandshakePayload:
    """(timestamp, certificate or None, fresh)."""
    return _decode_payload_untrusted(_REQUEST_PAYLOAD, payload, "request")


def decode_response_payload_untrusted(payload: bytes) -> HandshakePayload:
    """(responder's sender index, certificate or None, fresh)."""
    return _decode_payload_untrusted(_RESPONSE_PAYLOAD, payload, "response")


# -- cookies ---------------------------------------------------------------


class CookieJar:
    """Responder side: makes and checks address-bound cookies.

    The secret rotates every ``lifetime`` seconds; a cookie made under the
    previous secret is still accepted, so a cookie lives 1-2 lifetimes.
    """

    def __init__(self, random_secret: bytes, lifetime: float = 120.0) -> None:
        self._secrets = [random_secret, random_secret]
        self._lifetime = lifetime
        self._rotated_at: float | None = None

    def rotate(self, now: float, fresh_secret: bytes) -> None:
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self._lifetime:
            self._secrets = [fresh_secret, self._secrets[0]]
            self._rotated_at = now

    def cookie_for(self, address: tuple[str, int]) -> bytes:
        return _cookie(self._secrets[0], address)

    def accepts(self, framed: Framed, address: tuple[str, int]) -> bool:
        return any(framed.has_valid_mac2(_cookie(s, address)) for s in self._secrets)


def _cookie(secret: bytes, address: tuple[str, int]) -> bytes:
    host, port = address
    return hmac.digest(secret, f"{host}|{port}".encode(), "sha256")[:COOKIE_SIZE]


def build_cookie_reply(receiver_index: int, cookie: bytes, request_mac1: bytes,
                       responder_static_public: bytes, nonce: bytes) -> bytes:
    key = cookie_key(responder_static_public, request_mac1)
    sealed = AESGCM(key).encrypt(nonce, cookie, request_mac1)
    body = _INDEX.pack(receiver_index) + nonce + sealed
    return encode_header(0, PacketType.COOKIE_REPLY, len(body)) + body


def open_cookie_reply_untrusted(data: bytes, request_mac1: bytes,
                                responder_static_public: bytes) -> bytes:
    """Return the cookie from a COOKIE_REPLY (header already checked)."""
    if len(data) != COOKIE_REPLY_SIZE:
        raise BadPacket(DropReason.MALFORMED, f"cookie reply of {len(data)} bytes")
    nonce_at = HEADER_SIZE + 4
    nonce = data[nonce_at : nonce_at + COOKIE_NONCE_SIZE]
    try:
        return AESGCM(cookie_key(responder_static_public, request_mac1)).decrypt(
            nonce, data[nonce_at + COOKIE_NONCE_SIZE :], request_mac1
        )
    except InvalidTag:
        raise BadPacket(DropReason.AUTH_FAILED, "cookie reply") from None


def cookie_reply_index(data: bytes) -> int:
    (index,) = _INDEX.unpack_from(data, HEADER_SIZE)
    return int(index)
