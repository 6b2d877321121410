"""Runtime files: the IPC token and ``daemon.json``, which tell clients how to connect."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

RUNTIME_FILE = "daemon.json"
TOKEN_FILE = "ipc.token"


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    public_key: str
    udp_port: int
    tcp_host: str
    tcp_port: int
    unix_socket: str | None
    token_file: str
    p2p_enabled: bool


class RuntimeFileError(Exception):
    """No daemon runtime file, or one that cannot be read."""


def prepare_runtime_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.name == "posix":
        path.chmod(0o700)


def write_token(runtime_dir: Path) -> str:
    """A fresh random token in a 0600 file; returns it (64 hex characters)."""
    token = secrets.token_hex(32)
    path = runtime_dir / TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token


def write_runtime_info(runtime_dir: Path, info: RuntimeInfo) -> Path:
    path = runtime_dir / RUNTIME_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)  # atomic: readers never see half a file
    return path


def remove_runtime_files(runtime_dir: Path, unix_socket: Path | None) -> None:
    for path in (runtime_dir / RUNTIME_FILE, runtime_dir / TOKEN_FILE, unix_socket):
        if path is not None:
            path.unlink(missing_ok=True)


def read_runtime_info(runtime_dir: Path) -> RuntimeInfo:
    path = runtime_dir / RUNTIME_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RuntimeInfo(**data)
    except FileNotFoundError:
        raise RuntimeFileError(f"no p2pd daemon is running ({path} does not exist)") from None
    except (OSError, ValueError, TypeError) as error:
        raise RuntimeFileError(f"cannot read {path}: {error}") from None


def read_token(info: RuntimeInfo) -> str:
    try:
        return Path(info.token_file).read_text(encoding="ascii").strip()
    except OSError as error:
        raise RuntimeFileError(f"cannot read the IPC token {info.token_file}: {error}") from None
