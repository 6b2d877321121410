"""Connect tokens and certificates: the credentials a coordinator checks and issues.

Sans-IO: no clock and no sockets. Every check takes ``now`` in unix seconds;
the one exception is :func:`certificate_policy`, whose result the session
``Endpoint`` calls without a time, so it takes a wall clock as an injectable
callable. Signatures are Ed25519 (the ``cryptography`` package), made over a
fixed domain-separation context followed by the signed bytes, so that a
token's signature can never pass for a certificate's and the other way round.
All integers are big-endian; every layout has one fixed size.

Connect token, 141 bytes (after netcode.io's connect tokens). The operator's
game server (or an admin command) mints one for an account and character; the
daemon presents it when it registers with the coordinator::

    offset size  field
         0    1  version      u8, 1
         1    8  account_id   u64
         9    4  player_id    u32, the character
        13   32  daemon_key   X25519 static public key of the daemon allowed to use it
        45    8  issued_at    u64 unix seconds
        53    8  expires_at   u64 unix seconds, at most 3600 after issued_at
        61   16  nonce        random; names the token for the replay guard
        77   64  signature    Ed25519 by the issuer over TOKEN_CONTEXT + bytes 0..76

Certificate, 125 bytes. The coordinator issues one to a registered daemon; it
binds the daemon's player id to its identity key, and travels in the session
handshake, where peers refuse anyone without a valid one::

    offset size  field
         0    1  version      u8, 1
         1    4  player_id    u32
         5   32  identity_key X25519 static public key of the daemon
        37    8  issued_at    u64 unix seconds
        45    8  expires_at   u64 unix seconds, at most 86400 after issued_at
        53    8  key_id       first 8 bytes of SHA-256 of the coordinator's Ed25519
                              public key: several keys can be trusted during rotation
        61   64  signature    Ed25519 by the coordinator over CERTIFICATE_CONTEXT
                              + bytes 0..60

Functions whose names end in ``_untrusted`` raise only :class:`CredentialError`
for any bytes they are given; its ``reason`` is one of :class:`Refusal`.
Checks run cheapest first: length and version, then the key id, then the
signature, then time. ``issued_at`` may lie up to ``skew`` seconds in the
future (clocks differ); ``expires_at`` is exclusive and gets no skew. Local
misuse (a bad argument to a minting function, a non-finite ``now``) raises
``ValueError``.

A token is not bound to a network address: the coordinator keeps a
:class:`TokenReplayGuard` and must also check that ``ConnectToken.daemon_key``
is the static key of the session the token arrived on.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2pd.crypto.keyfile import load_or_create_key

__all__ = [
    "CERTIFICATE_CONTEXT",
    "CERTIFICATE_SIZE",
    "CERTIFICATE_VERSION",
    "KEY_FILE_TAG",
    "MAX_CERTIFICATE_LIFETIME",
    "MAX_TOKEN_LIFETIME",
    "TOKEN_CONTEXT",
    "TOKEN_SIZE",
    "TOKEN_VERSION",
    "Certificate",
    "ConnectToken",
    "CredentialError",
    "GuardStatistics",
    "Refusal",
    "SigningKeyFileError",
    "TokenReplayGuard",
    "certificate_policy",
    "issue_certificate",
    "key_id",
    "load_or_create_signing_key",
    "mint_token",
    "public_key_bytes",
    "verify_certificate_untrusted",
    "verify_token_untrusted",
]

TOKEN_VERSION = 1
TOKEN_CONTEXT = b"p2pd connect token v1"
MAX_TOKEN_LIFETIME = 3600
CERTIFICATE_VERSION = 1
CERTIFICATE_CONTEXT = b"p2pd certificate v1"
MAX_CERTIFICATE_LIFETIME = 86400
KEY_FILE_TAG = "p2pd-signing-key-v1"

KEY_SIZE = 32
NONCE_SIZE = 16
KEY_ID_SIZE = 8
SIGNATURE_SIZE = 64

_TOKEN_BODY = struct.Struct(">BQI32sQQ16s")
_CERTIFICATE_BODY = struct.Struct(">BI32sQQ8s")
TOKEN_SIZE = _TOKEN_BODY.size + SIGNATURE_SIZE  # 141
CERTIFICATE_SIZE = _CERTIFICATE_BODY.size + SIGNATURE_SIZE  # 125

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1


class Refusal(StrEnum):
    """Why a credential was refused; the value is the name used in logs and counters."""

    MALFORMED = "malformed"  # wrong size, or fields that contradict each other
    BAD_VERSION = "bad_version"
    UNKNOWN_KEY = "unknown_key"  # a certificate's key id names no trusted key
    BAD_SIGNATURE = "bad_signature"
    WRONG_KEY = "wrong_key"  # a certificate presented with another static key
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    TOO_LONG = "too_long"  # a lifetime beyond the maximum
    REPLAYED = "replayed"  # a token already used from another address
    BUSY = "busy"  # the replay guard is full of live tokens


class CredentialError(Exception):
    """A token or certificate was refused; ``reason`` is countable, ``detail`` is for logs."""

    def __init__(self, reason: Refusal, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ConnectToken:
    version: int
    account_id: int
    player_id: int
    daemon_key: bytes  # X25519 static public key, 32 bytes
    issued_at: int
    expires_at: int
    nonce: bytes  # 16 bytes


@dataclass(frozen=True, slots=True)
class Certificate:
    version: int
    player_id: int
    identity_key: bytes  # X25519 static public key, 32 bytes
    issued_at: int
    expires_at: int
    key_id: bytes  # 8 bytes: names the coordinator key that signed it


# -- keys ------------------------------------------------------------------


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte Ed25519 public key of ``key``."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes_raw()


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """First 8 bytes of SHA-256 of the raw public key: how a certificate names its signer."""
    return hashlib.sha256(public_key_bytes(key)).digest()[:KEY_ID_SIZE]


class SigningKeyFileError(Exception):
    """The signing key file is unreadable, malformed or readable by others."""


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 signing key at ``path``, creating it (mode 0600) if absent.

    The file is laid out like the daemon's identity file: two lines,
    ``p2pd-signing-key-v1`` and the raw 32-byte private key in hex.
    """
    raw = load_or_create_key(
        path, KEY_FILE_TAG, "signing key",
        lambda: Ed25519PrivateKey.generate().private_bytes_raw(), SigningKeyFileError)
    return Ed25519PrivateKey.from_private_bytes(raw)


# -- shared checks -----------------------------------------------------------


def _validity(now: float, lifetime: float, maximum: int) -> tuple[int, int]:
    """(issued_at, expires_at) for a credential made at ``now``.

    ``issued_at`` is ``now`` rounded down and the lifetime is rounded up to
    whole seconds, so a lifetime of ``maximum`` still verifies.
    """
    if not 0 < lifetime <= maximum:
        raise ValueError(f"lifetime {lifetime} is outside (0, {maximum}] seconds")
    if not 0 <= now <= _U64_MAX - maximum:
        raise ValueError(f"now {now} is not a unix time in seconds")
    issued_at = math.floor(now)
    return issued_at, issued_at + math.ceil(lifetime)


def _check_now(now: float, skew: float) -> None:
    if not (math.isfinite(now) and math.isfinite(skew)):
        raise ValueError(f"now ({now}) and skew ({skew}) must be finite")


def _check_time(issued_at: int, expires_at: int, maximum: int, now: float, skew: float,
                what: str) -> None:
    if issued_at > now + skew:
        raise CredentialError(Refusal.NOT_YET_VALID, f"{what} issued at {issued_at}, now {now}")
    if expires_at <= now:
        raise CredentialError(Refusal.EXPIRED, f"{what} expired at {expires_at}, now {now}")
    lifetime = expires_at - issued_at
    if lifetime > maximum:
        raise CredentialError(Refusal.TOO_LONG, f"{what} lifetime {lifetime} s > {maximum} s")
    if lifetime <= 0:
        raise CredentialError(Refusal.MALFORMED, f"{what} expires before it is issued")


def _check_layout(data: bytes, size: int, version: int, what: str) -> None:
    if len(data) != size:
        raise CredentialError(Refusal.MALFORMED, f"{what} of {len(data)} bytes, expected {size}")
    if data[0] != version:
        raise CredentialError(Refusal.BAD_VERSION, f"{what} version {data[0]}")


def _signed(key: Ed25519PublicKey, context: bytes, body: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, context + body)
    except InvalidSignature:
        return False
    return True


# -- connect tokens ----------------------------------------------------------


def mint_token(
    issuer: Ed25519PrivateKey,
    *,
    account_id: int,
    player_id: int,
    daemon_key: bytes,
    lifetime: float,
    now: float,
    nonce: bytes | None = None,
) -> bytes:
    """A signed connect token of :data:`TOKEN_SIZE` bytes, valid from ``now`` for ``lifetime``.

    ``lifetime`` lies in (0, 3600] seconds; the nonce is 16 random bytes from
    ``os.urandom`` unless given (tests give one: it must never repeat).
    """
    if not 0 <= account_id <= _U64_MAX:
        raise ValueError(f"account_id {account_id} is not a u64")
    if not 0 <= player_id <= _U32_MAX:
        raise ValueError(f"player_id {player_id} is not a u32")
    if len(daemon_key) != KEY_SIZE:
        raise ValueError(f"daemon_key has {len(daemon_key)} bytes, expected {KEY_SIZE}")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce has {len(nonce)} bytes, expected {NONCE_SIZE}")
    issued_at, expires_at = _validity(now, lifetime, MAX_TOKEN_LIFETIME)
    body = _TOKEN_BODY.pack(TOKEN_VERSION, account_id, player_id, bytes(daemon_key),
                            issued_at, expires_at, bytes(nonce))
    return body + issuer.sign(TOKEN_CONTEXT + body)


def verify_token_untrusted(
    data: bytes, issuers: Sequence[Ed25519PublicKey], now: float, *, skew: float = 30.0
) -> ConnectToken:
    """The token in ``data`` if one of ``issuers`` signed it and it is valid at ``now``.

    Raises :class:`CredentialError` (malformed, bad_version, bad_signature,
    not_yet_valid, expired, too_long). It does not check replays: see
    :class:`TokenReplayGuard`.
    """
    _check_now(now, skew)
    _check_layout(data, TOKEN_SIZE, TOKEN_VERSION, "token")
    body, signature = data[: _TOKEN_BODY.size], data[_TOKEN_BODY.size :]
    if not any(_signed(key, TOKEN_CONTEXT, body, signature) for key in issuers):
        raise CredentialError(Refusal.BAD_SIGNATURE, "token signed by no trusted issuer")
    token = ConnectToken(*_TOKEN_BODY.unpack(body))
    _check_time(token.issued_at, token.expires_at, MAX_TOKEN_LIFETIME, now, skew, "token")
    return token


@dataclass(frozen=True, slots=True)
class GuardStatistics:
    remembered: int  # live token nonces held now
    capacity: int
    accepted: int  # first uses
    repeated: int  # the same token again from its first address (retransmissions)
    replayed: int  # refused: the same token from another address
    busy: int  # refused: full of live tokens


class TokenReplayGuard:
    """Lets each connect token be used from one address only.

    ``check`` remembers a token's nonce with the address it was first used
    from until the token expires (after which ``verify_token_untrusted``
    refuses it anyway). The same token from that address is accepted again,
    because a daemon retransmits a registration that got no answer; from any
    other address it is refused as ``replayed``.

    Memory is bounded by ``capacity`` entries. Expired entries are dropped
    lazily, on the next ``check``, in order of expiry. When every entry is
    still live, a new token is refused as ``busy``: evicting a live entry
    would let its token be replayed. Because a token lives at most an hour,
    ``capacity`` should exceed the registrations expected per hour; a flood
    of busy refusals means valid tokens are being minted faster than that.

    One guard protects one coordinator process: coordinators that share an
    issuer key do not see each other's guards.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity} must be at least 1")
        self.capacity = capacity
        self._entries: dict[bytes, tuple[tuple[str, int], int]] = {}  # nonce -> (addr, expiry)
        self._expiries: list[tuple[int, bytes]] = []  # heap of (expires_at, nonce)
        self._accepted = 0
        self._repeated = 0
        self._replayed = 0
        self._busy = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, token: ConnectToken, address: tuple[str, int], now: float) -> None:
        """Accept ``token`` from ``address`` at ``now``, or raise :class:`CredentialError`."""
        if token.expires_at <= now:
            raise CredentialError(Refusal.EXPIRED, f"token expired at {token.expires_at}")
        self._forget_expired(now)
        entry = self._entries.get(token.nonce)
        if entry is not None:
            first_address, _ = entry
            if first_address != address:
                self._replayed += 1
                raise CredentialError(
                    Refusal.REPLAYED, f"token first used from {first_address}, now from {address}"
                )
            self._repeated += 1
            return
        if len(self._entries) >= self.capacity:
            self._busy += 1
            raise CredentialError(Refusal.BUSY, f"{self.capacity} live tokens remembered")
        self._entries[token.nonce] = (address, token.expires_at)
        heapq.heappush(self._expiries, (token.expires_at, token.nonce))
        self._accepted += 1

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, nonce = heapq.heappop(self._expiries)
            del self._entries[nonce]

    def statistics(self) -> GuardStatistics:
        return GuardStatistics(len(self._entries), self.capacity, self._accepted,
                               self._repeated, self._replayed, self._busy)


# -- certificates ------------------------------------------------------------


def issue_certificate(
    coordinator: Ed25519PrivateKey,
    *,
    player_id: int,
    identity_key: bytes,
    lifetime: float,
    now: float,
) -> bytes:
    """A certificate of :data:`CERTIFICATE_SIZE` bytes binding ``player_id`` to ``identity_key``.

    ``lifetime`` lies in (0, 86400] seconds; a daemon renews its certificate
    by registering again before it expires.
    """
    if not 0 <= player_id <= _U32_MAX:
        raise ValueError(f"player_id {player_id} is not a u32")
    if len(identity_key) != KEY_SIZE:
        raise ValueError(f"identity_key has {len(identity_key)} bytes, expected {KEY_SIZE}")
    issued_at, expires_at = _validity(now, lifetime, MAX_CERTIFICATE_LIFETIME)
    body = _CERTIFICATE_BODY.pack(CERTIFICATE_VERSION, player_id, bytes(identity_key),
                                  issued_at, expires_at, key_id(coordinator))
    return body + coordinator.sign(CERTIFICATE_CONTEXT + body)


_Keyring = Mapping[bytes, Sequence[Ed25519PublicKey]]


def _keyring(trusted: Sequence[Ed25519PublicKey]) -> dict[bytes, list[Ed25519PublicKey]]:
    ring: dict[bytes, list[Ed25519PublicKey]] = {}
    for key in trusted:
        ring.setdefault(key_id(key), []).append(key)
    return ring


def verify_certificate_untrusted(
    data: bytes,
    trusted: Sequence[Ed25519PublicKey],
    identity_key: bytes,
    now: float,
    *,
    skew: float = 30.0,
) -> Certificate:
    """The certificate in ``data`` if a trusted coordinator key signed it for ``identity_key``.

    ``identity_key`` is the static key the certificate was presented with (the
    peer's key in a handshake). Raises :class:`CredentialError` (malformed,
    bad_version, unknown_key, bad_signature, wrong_key, not_yet_valid,
    expired, too_long).
    """
    return _verify_certificate(data, _keyring(trusted), identity_key, now, skew)


def _verify_certificate(data: bytes, ring: _Keyring, identity_key: bytes, now: float,
                        skew: float) -> Certificate:
    _check_now(now, skew)
    _check_layout(data, CERTIFICATE_SIZE, CERTIFICATE_VERSION, "certificate")
    body, signature = data[: _CERTIFICATE_BODY.size], data[_CERTIFICATE_BODY.size :]
    certificate = Certificate(*_CERTIFICATE_BODY.unpack(body))
    keys = ring.get(certificate.key_id)
    if not keys:
        raise CredentialError(Refusal.UNKNOWN_KEY, f"key id {certificate.key_id.hex()}")
    if not any(_signed(key, CERTIFICATE_CONTEXT, body, signature) for key in keys):
        raise CredentialError(Refusal.BAD_SIGNATURE, "certificate signature")
    if not hmac.compare_digest(certificate.identity_key, identity_key):
        raise CredentialError(Refusal.WRONG_KEY, "certificate of another static key")
    _check_time(certificate.issued_at, certificate.expires_at, MAX_CERTIFICATE_LIFETIME,
                now, skew, "certificate")
    return certificate


def certificate_policy(
    trusted: Sequence[Ed25519PublicKey], clock: Callable[[], float], *, skew: float = 30.0
) -> Callable[[bytes, bytes | None], bool]:
    """A ``p2pd.session.endpoint.PeerPolicy`` admitting exactly the certified peers.

    The policy accepts a peer (static public key, certificate or None) when
    the certificate is valid now for that key under one of ``trusted``. The
    Endpoint calls a policy without a time, so this is the one place in the
    module a clock enters: ``clock`` returns unix seconds (the daemon passes
    ``time.time``; tests pass a fixed or stepped function).
    """
    ring = _keyring(trusted)

    def policy(peer: bytes, certificate: bytes | None) -> bool:
        if certificate is None:
            return False
        try:
            _verify_certificate(certificate, ring, peer, clock(), skew)
        except CredentialError:
            return False
        return True

    return policy
