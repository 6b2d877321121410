"""A daemon's long-term identity: an X25519 key pair kept in a 0600 file.

The file holds two lines: ``p2pd-identity-v1`` and the 32-byte private key in
hex. A coordinator-issued certificate binding a player id to the public key
(a later layer) travels in the handshake as ``Identity.certificate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2pd.crypto.keyfile import load_or_create_key

FILE_TAG = "p2pd-identity-v1"


class IdentityFileError(Exception):
    """The identity file is unreadable, malformed or readable by others."""


@dataclass(frozen=True)
class Identity:
    private_key: X25519PrivateKey
    certificate: bytes | None = None
    public_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", self.private_key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls, certificate: bytes | None = None) -> Identity:
        return cls(X25519PrivateKey.generate(), certificate)

    @classmethod
    def from_private_bytes(cls, raw: bytes, certificate: bytes | None = None) -> Identity:
        return cls(X25519PrivateKey.from_private_bytes(raw), certificate)

    def with_certificate(self, certificate: bytes | None) -> Identity:
        return Identity(self.private_key, certificate)


def load_or_create_identity(path: Path) -> Identity:
    """Load the identity at ``path``, creating it (mode 0600) on first start."""
    raw = load_or_create_key(
        path, FILE_TAG, "identity",
        lambda: X25519PrivateKey.generate().private_bytes_raw(), IdentityFileError)
    return Identity.from_private_bytes(raw)
