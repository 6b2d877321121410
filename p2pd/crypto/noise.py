"""The Noise handshake ``Noise_IK_25519_AESGCM_SHA256`` (Noise Protocol Framework, revision 34).

Written from the specification at https://noiseprotocol.org/noise.html (revision 34,
2018-07-11): the CipherState, SymmetricState and HKDF of sections 4 and 5, the handshake
pattern IK of section 7.5, DH = X25519 (RFC 7748), cipher = AES-256-GCM with the Noise nonce
(32 bits of zeros, then the 64-bit counter big-endian), hash = SHA-256 (HASHLEN 32). No PSK.

Pattern IK::

    <- s
    ...
    -> e, es, s, ss
    <- e, ee, se

The initiator knows the responder's static public key before it starts (``<- s``). Message 1
is ``e (32) || AEAD(s) (32+16) || AEAD(payload) (len+16)``; message 2 is
``e (32) || AEAD(payload) (len+16)``. Payload security (spec section 7.7): the message 1
payload is encrypted to the responder's static key, but it is not forward secret against a
later compromise of that key and a recorded message 1 can be replayed to the responder; the
message 2 payload has weak forward secrecy; transport messages have full forward secrecy.

Keys:

* ``s`` / ``rs``: the long-term X25519 static key pair of a side / the peer's static public key.
* ``e`` / ``re``: a fresh X25519 ephemeral key pair per handshake / the peer's ephemeral public.
* ``es`` = DH(initiator e, responder s), ``ss`` = DH(initiator s, responder s),
  ``ee`` = DH(initiator e, responder e), ``se`` = DH(initiator s, responder e). Each is mixed
  into the chaining key ``ck`` with HKDF (HMAC-SHA256), yielding the handshake cipher key ``k``.
  ``ss`` depends only on the two static keys, so a caller may cache it per peer
  (``static_static`` / ``static_static_cache``) and skip one X25519 exchange per handshake.
* ``h``: the running SHA-256 transcript hash; its final value is
  :attr:`TransportKeys.handshake_hash`, a channel binding identical on both sides.
* Split: the two 32-byte AES-256-GCM transport keys, the first for initiator -> responder,
  the second for responder -> initiator (:class:`TransportKeys`). Transport messages use
  nonce = 4 zero bytes || 8-byte big-endian counter starting at 0 (:func:`noise_nonce`).

Sans-IO: no sockets, clocks or randomness, except that a fresh ephemeral key is generated when
none is injected (tests inject it to reproduce published test vectors).

Every function whose name ends in ``_untrusted`` raises only
:class:`~p2pd.wire.errors.BadPacket` with ``DropReason.HANDSHAKE_FAILED`` on bad bytes, and a
failed attempt leaves the handshake state untouched so that a genuine message arriving later
still succeeds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pd.wire.errors import BadPacket, DropReason

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "PROTOCOL_NAME",
    "REQUEST_OVERHEAD",
    "RESPONSE_OVERHEAD",
    "TAGLEN",
    "CipherState",
    "InitiatorHandshake",
    "ResponderHandshake",
    "SymmetricState",
    "TransportKeys",
    "dh",
    "hkdf2",
    "hkdf3",
    "noise_nonce",
    "public_bytes",
]

PROTOCOL_NAME: Final = b"Noise_IK_25519_AESGCM_SHA256"

DHLEN: Final = 32
"""Length of an X25519 public key and of a DH output."""
HASHLEN: Final = 32
"""SHA-256 output length; also the length of ``ck``, ``h`` and the cipher keys."""
TAGLEN: Final = 16
"""AES-GCM authentication tag length."""
MAX_MESSAGE_LEN: Final = 65535
"""Largest Noise message (spec section 3)."""
MAX_NONCE: Final = 2**64 - 1
"""Reserved nonce value: never used to encrypt (spec section 5.1), except by ``rekey``."""
REQUEST_OVERHEAD: Final = DHLEN + (DHLEN + TAGLEN) + TAGLEN
"""Message 1 length minus its payload length: e, encrypted s, payload tag (96)."""
RESPONSE_OVERHEAD: Final = DHLEN + TAGLEN
"""Message 2 length minus its payload length: e, payload tag (48)."""

_ZERO_NONCE: Final = bytes(12)
_NONCE_PREFIX: Final = bytes(4)
_ONE: Final = b"\x01"
_TWO: Final = b"\x02"
_THREE: Final = b"\x03"


def _initial_hash() -> bytes:
    # InitializeSymmetric: a name of at most HASHLEN bytes is zero-padded, else hashed.
    if len(PROTOCOL_NAME) <= HASHLEN:
        return PROTOCOL_NAME.ljust(HASHLEN, b"\x00")
    return hashlib.sha256(PROTOCOL_NAME).digest()


_H0: Final = _initial_hash()


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte X25519 public key of ``key``."""
    return key.public_key().public_bytes_raw()


def noise_nonce(n: int) -> bytes:
    """The 12-byte AES-GCM nonce for counter ``n``: 4 zero bytes || ``n`` as 8 bytes big-endian."""
    return _NONCE_PREFIX + n.to_bytes(8, "big")


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519(private, public).

    Raises ValueError if ``public`` is not 32 bytes or the result is all zeros (a low-order
    point), as ``cryptography`` does.
    """
    return private.exchange(X25519PublicKey.from_public_bytes(public))


def hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """HKDF(chaining_key, input_key_material, 2) of spec section 4.3, with HMAC-SHA256."""
    temp_key = hmac.digest(chaining_key, input_key_material, "sha256")
    output1 = hmac.digest(temp_key, _ONE, "sha256")
    output2 = hmac.digest(temp_key, output1 + _TWO, "sha256")
    return output1, output2


def hkdf3(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF(chaining_key, input_key_material, 3) of spec section 4.3, with HMAC-SHA256."""
    temp_key = hmac.digest(chaining_key, input_key_material, "sha256")
    output1 = hmac.digest(temp_key, _ONE, "sha256")
    output2 = hmac.digest(temp_key, output1 + _TWO, "sha256")
    output3 = hmac.digest(temp_key, output2 + _THREE, "sha256")
    return output1, output2, output3


class CipherState:
    """Spec section 5.1: a key ``k`` (or none) and a 64-bit counter nonce ``n``.

    Usable for transport messages after the handshake. The AES-GCM context is built once per
    key, on first use. Decryption failures raise ``cryptography.exceptions.InvalidTag`` and
    leave ``n`` unchanged.
    """

    __slots__ = ("_aead", "_k", "n")

    def __init__(self, key: bytes | None = None, nonce: int = 0) -> None:
        self._k: bytes | None = None
        self._aead: AESGCM | None = None
        if key is not None:
            self.initialize_key(key)
        self.n = nonce

    def initialize_key(self, key: bytes | None) -> None:
        """InitializeKey(key): set ``k`` (32 bytes, or None for no key) and reset ``n`` to 0."""
        if key is not None and len(key) != 32:
            raise ValueError("a Noise AESGCM key is 32 bytes")
        self._k = key
        self._aead = None
        self.n = 0

    def has_key(self) -> bool:
        return self._k is not None

    @property
    def key(self) -> bytes | None:
        return self._k

    def set_nonce(self, nonce: int) -> None:
        self.n = nonce

    def _cipher(self) -> AESGCM:
        aead = self._aead
        if aead is None:
            if self._k is None:
                raise RuntimeError("CipherState has no key")
            aead = self._aead = AESGCM(self._k)
        return aead

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd: AEAD-encrypt under ``k`` (identity if no key), then ``n += 1``."""
        if self._k is None:
            return plaintext
        n = self.n
        if n >= MAX_NONCE:
            raise OverflowError("Noise nonce exhausted")
        ciphertext = self._cipher().encrypt(
            _ZERO_NONCE if n == 0 else _NONCE_PREFIX + n.to_bytes(8, "big"), plaintext, ad
        )
        self.n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd: AEAD-decrypt (identity if no key); ``n += 1`` only on success."""
        if self._k is None:
            return ciphertext
        n = self.n
        if n >= MAX_NONCE:
            raise OverflowError("Noise nonce exhausted")
        plaintext = self._cipher().decrypt(
            _ZERO_NONCE if n == 0 else _NONCE_PREFIX + n.to_bytes(8, "big"), ciphertext, ad
        )
        self.n = n + 1
        return plaintext

    def rekey(self) -> None:
        """Rekey(): ``k = ENCRYPT(k, maxnonce, zerolen, zeros)[:32]``; ``n`` is unchanged."""
        if self._k is None:
            raise RuntimeError("CipherState has no key")
        new_key = self._cipher().encrypt(noise_nonce(MAX_NONCE), bytes(32), b"")[:32]
        self._k = new_key
        self._aead = None


class SymmetricState:
    """Spec section 5.2: chaining key ``ck``, transcript hash ``h`` and a CipherState.

    ``SymmetricState()`` is InitializeSymmetric(PROTOCOL_NAME). :meth:`copy` allows speculative
    processing of untrusted messages without disturbing the committed state.
    """

    __slots__ = ("ck", "cs", "h")

    def __init__(self) -> None:
        self.h: bytes = _H0
        self.ck: bytes = _H0
        self.cs = CipherState()

    def copy(self) -> SymmetricState:
        other = SymmetricState.__new__(SymmetricState)
        other.h = self.h
        other.ck = self.ck
        other.cs = CipherState()
        other.cs._k = self.cs._k
        other.cs._aead = self.cs._aead
        other.cs.n = self.cs.n
        return other

    def mix_key(self, input_key_material: bytes) -> None:
        """MixKey: ``ck, temp_k = HKDF(ck, ikm, 2)``; InitializeKey(temp_k)."""
        self.ck, temp_k = hkdf2(self.ck, input_key_material)
        self.cs.initialize_key(temp_k)  # HASHLEN == 32: no truncation needed

    def mix_hash(self, data: bytes) -> None:
        """MixHash: ``h = HASH(h || data)``."""
        self.h = hashlib.sha256(self.h + data).digest()

    def get_handshake_hash(self) -> bytes:
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: encrypt with ``h`` as associated data, then MixHash(ciphertext)."""
        h = self.h
        ciphertext = self.cs.encrypt_with_ad(h, plaintext)
        self.h = hashlib.sha256(h + ciphertext).digest()
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash: decrypt with ``h`` as associated data, then MixHash(ciphertext).

        Raises ``InvalidTag`` on a bad ciphertext; ``h`` is then unchanged.
        """
        h = self.h
        plaintext = self.cs.decrypt_with_ad(h, ciphertext)
        self.h = hashlib.sha256(h + ciphertext).digest()
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """Split: the two 32-byte transport keys ``HKDF(ck, zerolen, 2)``."""
        return hkdf2(self.ck, b"")


@dataclass(frozen=True, slots=True)
class TransportKeys:
    """The result of a completed handshake, identical on both sides."""

    initiator_to_responder: bytes
    """32-byte AES-256-GCM key for initiator -> responder (the first key from Split)."""
    responder_to_initiator: bytes
    """32-byte AES-256-GCM key for responder -> initiator (the second key from Split)."""
    handshake_hash: bytes
    """The final transcript hash ``h`` (32 bytes), usable as a channel binding."""


def _fail(detail: str) -> BadPacket:
    return BadPacket(DropReason.HANDSHAKE_FAILED, detail)


def _check_payload(payload: bytes, overhead: int) -> None:
    if len(payload) + overhead > MAX_MESSAGE_LEN:
        raise ValueError(f"payload too long for a Noise message ({len(payload)} bytes)")


class InitiatorHandshake:
    """The initiator of IK: ``write_request`` then ``read_response_untrusted``.

    ``static_static`` may carry a cached DH(s, rs) for this responder; otherwise it is computed
    here and exposed as the ``static_static`` attribute so the caller can cache it.
    Raises ValueError if ``responder_static_public`` is not a usable X25519 public key (when
    ``static_static`` is supplied, a low-order key is only detected by ``write_request``).
    """

    __slots__ = (
        "_ephemeral",
        "_prologue",
        "_remote_static_key",
        "_state",
        "_static",
        "remote_static",
        "static_static",
    )

    def __init__(
        self,
        static_private: X25519PrivateKey,
        responder_static_public: bytes,
        prologue: bytes,
        ephemeral_private: X25519PrivateKey | None = None,
        static_static: bytes | None = None,
    ) -> None:
        if len(responder_static_public) != DHLEN:
            raise ValueError("the responder static public key is 32 bytes")
        self._static = static_private
        self.remote_static = bytes(responder_static_public)
        self._remote_static_key = X25519PublicKey.from_public_bytes(self.remote_static)
        self._prologue = prologue
        self._ephemeral = ephemeral_private
        if static_static is None:
            static_static = static_private.exchange(self._remote_static_key)
        elif len(static_static) != DHLEN:
            raise ValueError("static_static is 32 bytes")
        self.static_static: bytes = static_static
        self._state: SymmetricState | None = None

    def write_request(self, payload: bytes) -> bytes:
        """Message 1: ``-> e, es, s, ss`` then the encrypted payload. Call once."""
        if self._state is not None:
            raise RuntimeError("write_request was already called")
        _check_payload(payload, REQUEST_OVERHEAD)
        ephemeral = self._ephemeral
        if ephemeral is None:
            ephemeral = self._ephemeral = X25519PrivateKey.generate()
        e_pub = public_bytes(ephemeral)

        state = SymmetricState()
        state.mix_hash(self._prologue)
        state.mix_hash(self.remote_static)  # pre-message: <- s
        state.mix_hash(e_pub)  # e
        state.mix_key(ephemeral.exchange(self._remote_static_key))  # es
        encrypted_static = state.encrypt_and_hash(public_bytes(self._static))  # s
        state.mix_key(self.static_static)  # ss
        encrypted_payload = state.encrypt_and_hash(payload)
        self._state = state
        return b"".join((e_pub, encrypted_static, encrypted_payload))

    def read_response_untrusted(self, message: bytes) -> tuple[bytes, TransportKeys]:
        """Message 2: ``<- e, ee, se`` then the payload; returns (payload, transport keys).

        Raises only BadPacket(HANDSHAKE_FAILED). A bad message leaves the state untouched, so
        a later genuine response is still accepted; after a success further calls fail.
        """
        committed = self._state
        ephemeral = self._ephemeral
        if committed is None or ephemeral is None:
            raise _fail("no request outstanding")
        if len(message) < RESPONSE_OVERHEAD:
            raise _fail("response too short")
        if len(message) > MAX_MESSAGE_LEN:
            raise _fail("response too long")
        re = message[:DHLEN]
        state = committed.copy()
        state.mix_hash(re)  # e
        try:
            re_key = X25519PublicKey.from_public_bytes(re)
            state.mix_key(ephemeral.exchange(re_key))  # ee
            state.mix_key(self._static.exchange(re_key))  # se
            payload = state.decrypt_and_hash(message[DHLEN:])
        except ValueError:
            raise _fail("low-order ephemeral key in response") from None
        except InvalidTag:
            raise _fail("response authentication failed") from None
        self._ephemeral = None  # done: forget the ephemeral secret
        k1, k2 = state.split()
        return payload, TransportKeys(k1, k2, state.h)


class ResponderHandshake:
    """The responder of IK, created from message 1 by :meth:`read_request_untrusted`.

    Attributes after a successful read: ``remote_static`` (the initiator's static public key,
    32 bytes), ``payload`` (the decrypted request payload) and ``static_static``
    (DH(s, rs), computed or taken from the cache, so the caller can cache it).
    """

    __slots__ = (
        "_remote_ephemeral",
        "_remote_static_key",
        "_state",
        "payload",
        "remote_static",
        "static_static",
    )

    def __init__(
        self,
        state: SymmetricState,
        *,
        remote_ephemeral: X25519PublicKey,
        remote_static: bytes,
        remote_static_key: X25519PublicKey,
        static_static: bytes,
        payload: bytes,
    ) -> None:
        # Internal: use read_request_untrusted().
        self._state: SymmetricState | None = state
        self._remote_ephemeral = remote_ephemeral
        self._remote_static_key = remote_static_key
        self.remote_static = remote_static
        self.static_static = static_static
        self.payload = payload

    @classmethod
    def read_request_untrusted(
        cls,
        static_private: X25519PrivateKey,
        message: bytes,
        prologue: bytes,
        static_static_cache: Callable[[bytes], bytes | None] | None = None,
    ) -> ResponderHandshake:
        """Read message 1 with the responder's static key.

        ``static_static_cache(initiator_static_public)`` may return a cached DH(s, rs) (or
        None). Raises only BadPacket(HANDSHAKE_FAILED) for bad bytes (exceptions raised by the
        cache callable itself propagate).
        """
        if len(message) < REQUEST_OVERHEAD:
            raise _fail("request too short")
        if len(message) > MAX_MESSAGE_LEN:
            raise _fail("request too long")
        re = message[:DHLEN]
        state = SymmetricState()
        state.mix_hash(prologue)
        state.mix_hash(public_bytes(static_private))  # pre-message: <- s
        state.mix_hash(re)  # e
        try:
            re_key = X25519PublicKey.from_public_bytes(re)
            state.mix_key(static_private.exchange(re_key))  # es
        except ValueError:
            raise _fail("low-order ephemeral key in request") from None
        try:
            rs = state.decrypt_and_hash(message[DHLEN : DHLEN + DHLEN + TAGLEN])  # s
        except InvalidTag:
            raise _fail("request authentication failed (static key)") from None
        rs_key = X25519PublicKey.from_public_bytes(rs)  # 32 bytes: cannot fail
        ss = static_static_cache(rs) if static_static_cache is not None else None
        if ss is None:
            try:
                ss = static_private.exchange(rs_key)
            except ValueError:
                raise _fail("low-order static key in request") from None
        state.mix_key(ss)  # ss
        try:
            payload = state.decrypt_and_hash(message[DHLEN + DHLEN + TAGLEN :])
        except InvalidTag:
            raise _fail("request authentication failed (payload)") from None
        return cls(
            state,
            remote_ephemeral=re_key,
            remote_static=rs,
            remote_static_key=rs_key,
            static_static=ss,
            payload=payload,
        )

    def write_response(
        self, payload: bytes, ephemeral_private: X25519PrivateKey | None = None
    ) -> tuple[bytes, TransportKeys]:
        """Message 2: ``<- e, ee, se`` then the encrypted payload. Call once."""
        state = self._state
        if state is None:
            raise RuntimeError("write_response was already called")
        _check_payload(payload, RESPONSE_OVERHEAD)
        if ephemeral_private is None:
            ephemeral_private = X25519PrivateKey.generate()
        e_pub = public_bytes(ephemeral_private)
        state.mix_hash(e_pub)  # e
        state.mix_key(ephemeral_private.exchange(self._remote_ephemeral))  # ee
        state.mix_key(ephemeral_private.exchange(self._remote_static_key))  # se
        encrypted_payload = state.encrypt_and_hash(payload)
        self._state = None
        k1, k2 = state.split()
        return e_pub + encrypted_payload, TransportKeys(k1, k2, state.h)
