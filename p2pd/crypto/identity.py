"""A daemon's long-term identity: an X25519 key pair kept in a 0600 file.

The file holds two lines: ``p2pd-identity-v1`` and the 32-byte private key in
hex. A coordinator-issued certificate binding a player id to the public key
(a later layer) travels in the handshake as ``Identity.certificate``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

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
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    identity = Identity.generate()
    raw = identity.private_key.private_bytes_raw()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return _load(path)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{FILE_TAG}\n{raw.hex()}\n")
    return identity


def _load(path: Path) -> Identity:
    if os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityFileError(
                f"{path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                "run chmod 600 on it"
            )
    lines = path.read_text(encoding="ascii", errors="replace").split()
    if len(lines) != 2 or lines[0] != FILE_TAG:
        raise IdentityFileError(f"{path} is not a p2pd identity file (expected {FILE_TAG!r})")
    try:
        raw = bytes.fromhex(lines[1])
    except ValueError:
        raise IdentityFileError(f"{path}: the key is not hexadecimal") from None
    if len(raw) != 32:
        raise IdentityFileError(f"{path}: the key has {len(raw)} bytes, expected 32")
    return Identity.from_private_bytes(raw)
