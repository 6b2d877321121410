"""Packet protection after the handshake: AES-256-GCM with counter nonces.

A protected datagram is::

    offset  size  field
    0       14    header (flags has ENCRYPTED; length = 12 + len(ciphertext) + 16)
    14      4     receiver index (the index the receiving side chose)
    18      8     counter (u64, per direction, starts at 0, never reused)
    26      n     ciphertext
    26+n    16    GCM tag

The associated data is bytes 0-25 (header, index and counter), so none of them
can be changed in flight. The 12-byte nonce is four zero bytes followed by the
counter, big-endian: the same construction as the Noise AESGCM cipher.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pd.crypto.replay import COUNTER_LIMIT, ReplayWindow
from p2pd.wire.errors import BadPacket, DropReason
from p2pd.wire.header import MAGIC, PROTOCOL_VERSION

PROTECTED_PREFIX = struct.Struct(">IHHHIIQ")
PREFIX_SIZE = PROTECTED_PREFIX.size  # 26: header, receiver index, counter
TAG_SIZE = 16
OVERHEAD = PREFIX_SIZE + TAG_SIZE  # 42 bytes on top of the plaintext
_COUNTER = struct.Struct(">Q")
_pack_prefix = PROTECTED_PREFIX.pack
_unpack_counter = _COUNTER.unpack_from
_encrypt = AESGCM.encrypt
_decrypt = AESGCM.decrypt


class Keypair:
    """One pair of directional keys from one handshake, with its counters."""

    __slots__ = (
        "_open",
        "_replay",
        "_seal",
        "auth_failures",
        "created",
        "initiator",
        "local_index",
        "newest",
        "opened",
        "remote_index",
        "send_counter",
    )

    def __init__(
        self,
        *,
        send_key: bytes,
        receive_key: bytes,
        local_index: int,
        remote_index: int,
        initiator: bool,
        created: float,
        replay_window: int = 2048,
    ) -> None:
        # the ciphers, not their bound methods (called through _encrypt and _decrypt):
        # a coordinator holds a keypair per daemon
        self._seal = AESGCM(send_key)
        self._open = AESGCM(receive_key)
        self._replay = ReplayWindow(replay_window)
        self.local_index = local_index
        self.remote_index = remote_index
        self.initiator = initiator
        self.created = created
        self.send_counter = 0
        self.auth_failures = 0
        self.opened = 0  # packets that authenticated
        self.newest = False  # whether the last one opened had the highest counter yet

    def seal(self, flags: int, packet_type: int, plaintext: bytes) -> bytes:
        """Protect ``plaintext`` as one datagram and consume one counter value."""
        counter = self.send_counter
        self.send_counter = counter + 1
        prefix = _pack_prefix(
            MAGIC,
            PROTOCOL_VERSION,
            flags,
            packet_type,
            len(plaintext) + 28,
            self.remote_index,
            counter,
        )
        return prefix + _encrypt(self._seal, counter.to_bytes(12, "big"), plaintext, prefix)

    def open_untrusted(self, data: bytes) -> bytes:
        """Authenticate and decrypt a datagram whose header was already checked.

        The replay window moves only after the tag verifies. Raises only
        :class:`BadPacket`.
        """
        if len(data) < OVERHEAD:
            raise BadPacket(DropReason.TRUNCATED, f"{len(data)} bytes, protected needs {OVERHEAD}")
        (counter,) = _unpack_counter(data, 18)
        replay = self._replay
        # above the highest seen and below the limit is always new: skip check()
        if not replay.highest < counter < COUNTER_LIMIT and not replay.check(counter):
            raise BadPacket(DropReason.REPLAYED, f"counter {counter}")
        try:
            plaintext = _decrypt(
                self._open, counter.to_bytes(12, "big"), data[PREFIX_SIZE:], data[:PREFIX_SIZE]
            )
        except InvalidTag:
            self.auth_failures += 1
            raise BadPacket(DropReason.AUTH_FAILED, f"counter {counter}") from None
        self.newest = counter > replay.highest
        replay.update(counter)
        self.opened += 1
        return plaintext

    @property
    def packets_expected(self) -> int:
        """Packets the peer sent under this keypair, as far as this side can tell."""
        return self._replay.highest + 1

    @property
    def inbound_loss(self) -> float:
        """Share of the peer's packets under this keypair that never arrived (so far)."""
        sent = self._replay.highest + 1
        return 1.0 - self.opened / sent if sent > 0 else 0.0

    @property
    def received_any(self) -> bool:
        """Whether any packet under this keypair has authenticated."""
        return self._replay.highest >= 0
