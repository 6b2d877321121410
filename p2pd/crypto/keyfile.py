"""Private key files: two lines, a tag naming the kind of key and the raw key in hex.

Created with mode 0600 (and refused when others may read them, on POSIX), so
that the daemon's identity and the coordinator's signing keys are stored and
checked the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

KEY_SIZE = 32


def load_or_create_key(path: Path, tag: str, what: str, generate: Callable[[], bytes],
                       error: type[Exception]) -> bytes:
    """The raw 32-byte key in the file at ``path``; a new one from ``generate``
    when there is no file. ``what`` names the kind of file in the messages of
    ``error``, which is raised for a file that is readable by others, malformed
    or not hexadecimal."""
    try:
        return load_key(path, tag, what, error)
    except FileNotFoundError:
        pass
    raw = generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return load_key(path, tag, what, error)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{tag}\n{raw.hex()}\n")
    return raw


def load_key(path: Path, tag: str, what: str, error: type[Exception]) -> bytes:
    if os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise error(
                f"{path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                "run chmod 600 on it"
            )
    lines = path.read_text(encoding="ascii", errors="replace").split()
    if len(lines) != 2 or lines[0] != tag:
        raise error(f"{path} is not a p2pd {what} file (expected {tag!r})")
    try:
        raw = bytes.fromhex(lines[1])
    except ValueError:
        raise error(f"{path}: the key is not hexadecimal") from None
    if len(raw) != KEY_SIZE:
        raise error(f"{path}: the key has {len(raw)} bytes, expected {KEY_SIZE}")
    return raw
