"""Typed, validated settings of the session core.

Built by the daemon from ``ai_client.ini``; tests construct it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from p2pd.crypto.replay import MIN_WINDOW
from p2pd.wire.header import MAX_PAYLOAD

# RFC 9001 §6.6: AEAD_AES_256_GCM may protect at most 2^23 packets under one
# key (confidentiality limit). We rekey at 2^20 and refuse to send at 2^22.
AEAD_CONFIDENTIALITY_LIMIT = 1 << 23


class EncryptionLevel(StrEnum):
    """What ``encryption_level`` buys. Every level encrypts and authenticates
    every packet after the handshake with AES-256-GCM; none puts chat or
    positions readable on the wire, and at every level every packet travels
    as SEALED (a frame list), so the header never shows what it carries.
    The levels differ in the forward secrecy window and in padding:

    - low: keys renewed every 10 minutes.
    - medium: keys renewed every 2 minutes.
    - high: as medium, and frame lists that are not compressed are padded to
      32-byte steps, so a small datagram's size does not tell a position
      from a chat line.
    """

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_REKEY_AFTER_TIME = {
    EncryptionLevel.LOW: 600.0,
    EncryptionLevel.MEDIUM: 120.0,
    EncryptionLevel.HIGH: 120.0,
}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    handshake_timeout: float = 5.0  # seconds to complete a first handshake
    inactive_timeout: float = 60.0  # seconds without an authenticated packet
    ping_interval: float = 5.0  # seconds between PINGs (RTT, liveness, NAT keepalive < 25 s)
    handshake_retry_initial: float = 0.25  # first handshake retransmission
    handshake_retry_max: float = 1.0  # retransmission backoff cap
    encryption_level: EncryptionLevel = EncryptionLevel.HIGH
    compression_threshold: int = 100  # bytes; below it payloads go as they are
    zstd_threshold: int = 1000  # bytes; above it Zstandard instead of LZ4
    max_message_size: int = 65536  # largest decompressed payload accepted
    # packets remembered per direction (docs/protocol.md 5.3): between daemons 2048
    # (at least 1024); a coordinator keeps 128 (CoordinatorSettings.replay_window)
    replay_window: int = 2048
    # PING round trips kept per session for the p50 and p99 of statistics (0: none;
    # the smoothed RTT and its extremes are kept all the same)
    rtt_history: int = 256
    max_queued_bytes: int = 256 * 1024  # unsent bytes per reliable channel and peer
    max_sessions: int = 256  # peers one endpoint holds at once
    rekey_after_messages: int = 1 << 20
    reject_after_messages: int = 1 << 22
    handshake_load_limit: int = 64  # handshake requests per second before cookies
    # What one peer may send us (spec 5.1 rate limiting): authentic packets and
    # bytes per second, bursts of one second's worth; the excess is dropped and
    # the peer flagged as anomalous.
    # Batching: messages to one peer share a datagram of at most batch_budget
    # bytes (1200: links with a 1280-byte MTU carry it) and wait for company at
    # most coalesce_delay seconds (0: every message goes alone, at once).
    coalesce_delay: float = 0.005
    batch_budget: int = 1200
    incoming_packet_rate: float = 2000.0
    # Pacing: datagrams per second this side sends a peer; data beyond waits
    # and shares later datagrams, so that a peer's allowance (above) is never
    # what a well-behaved sender runs into.
    send_packet_rate: float = 1000.0
    incoming_byte_rate: float = 2 * 50 * 1024  # twice spec 7's bandwidth_limit default
    # Reliable channels: acks leave at most ack_delay after reliable data came
    # in (position acks: position_ack_delay) unless data carries them sooner;
    # retransmission timeout per RFC 6298 within [rto_min, rto_max], rto_initial
    # before any RTT sample.
    ack_delay: float = 0.01
    position_ack_delay: float = 0.5  # the peer's own positions usually carry it sooner
    rto_initial: float = 0.5
    rto_min: float = 0.05
    rto_max: float = 2.0
    effect_max_wait: float = 0.5  # an effect not sent by then is dropped
    # dead reckoning: a walking position is not sent while the peer's prediction
    # stays within this many cells (None: every position goes out, a fixed stream)
    position_error_budget: int | None = 1
    # seconds the channels of a closed session wait for a successor with the same
    # peer (0: never): reliable messages unacknowledged or queued are then sent in it
    resume_window: float = 30.0
    # Bandwidth (spec 3.3): bytes per second on the wire to this peer (None:
    # unlimited), and to all peers together (the endpoint's cap).
    send_rate: float | None = None
    total_send_rate: float | None = None

    def __post_init__(self) -> None:
        positive = {
            "handshake_timeout": self.handshake_timeout,
            "inactive_timeout": self.inactive_timeout,
            "ping_interval": self.ping_interval,
            "handshake_retry_initial": self.handshake_retry_initial,
            "handshake_retry_max": self.handshake_retry_max,
            "max_queued_bytes": self.max_queued_bytes,
            "ack_delay": self.ack_delay,
            "position_ack_delay": self.position_ack_delay,
            "rto_initial": self.rto_initial,
            "rto_min": self.rto_min,
            "effect_max_wait": self.effect_max_wait,
            "max_sessions": self.max_sessions,
            "handshake_load_limit": self.handshake_load_limit,
            "incoming_packet_rate": self.incoming_packet_rate,
            "send_packet_rate": self.send_packet_rate,
            "incoming_byte_rate": self.incoming_byte_rate,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not self.rto_min <= self.rto_initial <= self.rto_max:
            raise ValueError(
                f"need rto_min ({self.rto_min}) <= rto_initial ({self.rto_initial})"
                f" <= rto_max ({self.rto_max})"
            )
        for name in ("send_rate", "total_send_rate"):
            rate = getattr(self, name)
            if rate is not None and not rate >= 10 * self.batch_budget:
                raise ValueError(
                    f"{name} must be at least {10 * self.batch_budget} bytes/s (ten"
                    f" datagrams of batch_budget), got {rate!r}"
                )
        if not 0 <= self.resume_window <= 3600:
            raise ValueError(f"resume_window must be within 0..3600 s, got {self.resume_window!r}")
        if self.handshake_retry_max < self.handshake_retry_initial:
            raise ValueError(
                f"handshake_retry_max ({self.handshake_retry_max}) is below "
                f"handshake_retry_initial ({self.handshake_retry_initial})"
            )
        if self.compression_threshold < 0:
            raise ValueError(
                f"compression_threshold must be >= 0, got {self.compression_threshold}"
            )
        if self.zstd_threshold < self.compression_threshold:
            raise ValueError(
                f"zstd_threshold ({self.zstd_threshold}) is below "
                f"compression_threshold ({self.compression_threshold})"
            )
        if not 0 <= self.coalesce_delay <= 0.1:
            raise ValueError(f"coalesce_delay must be within 0..0.1 s, got {self.coalesce_delay}")
        if not 256 <= self.batch_budget <= MAX_PAYLOAD + 14:
            raise ValueError(
                f"batch_budget must be within 256..{MAX_PAYLOAD + 14}, got {self.batch_budget}"
            )
        if self.max_message_size < MAX_PAYLOAD:
            raise ValueError(f"max_message_size must be >= {MAX_PAYLOAD}")
        if self.rtt_history < 0:
            raise ValueError(f"rtt_history must be >= 0, got {self.rtt_history}")
        if self.replay_window < MIN_WINDOW:
            raise ValueError(f"replay_window must be >= {MIN_WINDOW}, got {self.replay_window}")
        if not 0 < self.rekey_after_messages < self.reject_after_messages:
            raise ValueError("need 0 < rekey_after_messages < reject_after_messages")
        if self.reject_after_messages >= AEAD_CONFIDENTIALITY_LIMIT:
            raise ValueError(
                "reject_after_messages must stay below the AES-GCM limit "
                f"{AEAD_CONFIDENTIALITY_LIMIT}"
            )
        if not isinstance(self.encryption_level, EncryptionLevel):
            raise ValueError(
                f"encryption_level must be low, medium or high, got {self.encryption_level!r}"
            )

    @property
    def rekey_after_time(self) -> float:
        return _REKEY_AFTER_TIME[self.encryption_level]

    @property
    def reject_after_time(self) -> float:
        """Age at which a keypair stops being used at all."""
        return self.rekey_after_time + 60.0
