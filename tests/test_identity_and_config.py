"""Identity key files and the validated session configuration."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from p2pd.crypto.identity import IdentityFileError, load_or_create_identity
from p2pd.session.config import EncryptionLevel, SessionConfig


def test_identity_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.key"
    first = load_or_create_identity(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_identity(path)
    assert again.public_key == first.public_key
    assert len(first.public_key) == 32


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_identity_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    load_or_create_identity(path)
    path.chmod(0o644)
    with pytest.raises(IdentityFileError, match="chmod 600"):
        load_or_create_identity(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("garbage\n", "not a p2pd identity file"),
        ("p2pd-identity-v1\nzz\n", "not hexadecimal"),
        ("p2pd-identity-v1\n" + "ab" * 16 + "\n", "16 bytes, expected 32"),
    ],
)
def test_malformed_identity_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "identity.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(IdentityFileError, match=message):
        load_or_create_identity(path)


def test_defaults_follow_the_specification() -> None:
    config = SessionConfig()
    assert config.handshake_timeout == 5.0
    assert config.inactive_timeout == 60.0
    assert config.compression_threshold == 100
    assert config.encryption_level is EncryptionLevel.HIGH
    assert config.replay_window >= 1024
    # rekeying well before the RFC 9001 limit of 2^23 packets per AES-GCM key
    assert config.rekey_after_messages < config.reject_after_messages < 2**23


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("handshake_timeout", 0.0, "handshake_timeout must be positive"),
        ("inactive_timeout", -1.0, "inactive_timeout must be positive"),
        ("compression_threshold", -5, "compression_threshold"),
        ("zstd_threshold", 50, "zstd_threshold"),
        ("replay_window", 64, "replay_window"),
        ("rtt_history", -1, "rtt_history"),
        ("reject_after_messages", 2**23, "AES-GCM limit"),
        ("rekey_after_messages", 2**22, "rekey_after_messages"),
        ("handshake_retry_max", 0.1, "handshake_retry_max"),
        ("encryption_level", "ultra", "low, medium or high"),
    ],
)
def test_bad_settings_are_refused_by_name(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionConfig(**{field: value})  # type: ignore[arg-type]


def test_rekey_interval_depends_on_the_level() -> None:
    assert SessionConfig(encryption_level=EncryptionLevel.LOW).rekey_after_time == 600.0
    assert SessionConfig(encryption_level=EncryptionLevel.MEDIUM).rekey_after_time == 120.0
