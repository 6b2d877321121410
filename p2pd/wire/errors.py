"""The one error type raised by every parser of untrusted network bytes.

Functions whose names end in ``_untrusted`` may raise only :class:`BadPacket`.
The caller drops the datagram, counts ``error.reason`` and carries on.
"""

from __future__ import annotations

from enum import StrEnum


class DropReason(StrEnum):
    """Why a datagram was dropped; the value is the name used in statistics."""

    # wire layer: checked before any cryptography
    TRUNCATED = "truncated"
    OVERSIZE = "oversize"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    LENGTH_MISMATCH = "length_mismatch"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FLAGS = "bad_flags"
    MALFORMED = "malformed"
    # compression layer
    BAD_COMPRESSION = "bad_compression"
    # crypto and session layers
    UNKNOWN_SESSION = "unknown_session"
    AUTH_FAILED = "auth_failed"
    REPLAYED = "replayed"
    BAD_MAC = "bad_mac"
    HANDSHAKE_FAILED = "handshake_failed"
    HANDSHAKE_REPLAYED = "handshake_replayed"
    PEER_REFUSED = "peer_refused"
    UNEXPECTED = "unexpected"
    KEY_EXHAUSTED = "key_exhausted"
    QUEUE_FULL = "queue_full"
    RATE_LIMITED = "rate_limited"  # an authentic packet beyond the peer's allowance


class BadPacket(Exception):
    """Untrusted bytes were rejected; ``reason`` is countable, ``detail`` is for logs."""

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
