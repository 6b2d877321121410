"""The daemon's configuration, read from ``ai_client.ini`` and validated in one place.

Each setting is a field of a frozen dataclass below; the field default is the
setting's default and the field's rule says which values it accepts. The
repository's ``ai_client.ini`` documents the same defaults (a test checks that
the two agree). :func:`load_config` reads an ini file, fills missing keys with
the defaults, resolves relative paths against the ini file's directory and
refuses every bad value with a :class:`ConfigError` naming the file, section,
key, value and what is allowed. Unknown sections and keys are not errors; they
come back as warnings.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import logging
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from p2pd.session.config import EncryptionLevel, SessionConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is refused; the message says where and why."""


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    @classmethod
    def _missing_(cls, value: object) -> LogLevel | None:
        if isinstance(value, str):
            name = value.strip().lower()
            if name == "warning":
                return cls.WARN
            for member in cls:
                if member.value == name:
                    return member
        return None

    @property
    def logging_level(self) -> int:
        """The matching level of the standard ``logging`` module."""
        return {
            "debug": logging.DEBUG,
            "info": logging.INFO,
            "warn": logging.WARNING,
            "error": logging.ERROR,
        }[self.value]


# --------------------------------------------------------------------------- rules


class _Invalid(Exception):
    """A value broke a rule; ``expected`` says what the rule allows."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


class _Rule(Generic[T]):
    """How one setting is written in the ini file and which values it takes."""

    expected: str = ""
    # An empty value in the ini file means "use the default" (instead of an error).
    empty_is_default: ClassVar[bool] = False

    def parse(self, text: str) -> T:
        raise NotImplementedError

    def check(self, value: object) -> T:
        """Return ``value`` if the rule allows it, else raise ``_Invalid``."""
        raise NotImplementedError


_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PORT_RANGE = re.compile(r"([0-9]+)\s*-\s*([0-9]+)")


class _Bool(_Rule[bool]):
    expected = "true/false, yes/no, on/off or 1/0"

    def parse(self, text: str) -> bool:
        try:
            return _BOOLEANS[text.strip().lower()]
        except KeyError:
            raise _Invalid(self.expected) from None

    def check(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(self.expected)
        return value


class _Int(_Rule[int]):
    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high
        if high is None:
            self.expected = f"an integer of at least {low}"
        else:
            self.expected = f"an integer from {low} to {high}"

    def parse(self, text: str) -> int:
        if not _INTEGER.fullmatch(text.strip()):
            raise _Invalid(self.expected)
        return self.check(int(text))

    def check(self, value: object) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < self.low
            or (self.high is not None and value > self.high)
        ):
            raise _Invalid(self.expected)
        return value


class _Positive(_Rule[float]):
    """A number greater than zero, optionally with an upper limit."""

    def __init__(self, high: float | None = None) -> None:
        self.high = high
        self.expected = "a number greater than 0"
        if high is not None:
            self.expected += f" and at most {high:g}"

    def parse(self, text: str) -> float:
        if not _NUMBER.fullmatch(text.strip()):
            raise _Invalid(self.expected)
        return self.check(float(text))

    def check(self, value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not value > 0
            or (self.high is not None and value > self.high)
        ):
            raise _Invalid(self.expected)
        return float(value)


E = TypeVar("E", bound=StrEnum)


class _Choice(_Rule[E]):
    def __init__(self, enum: type[E]) -> None:
        self.enum = enum
        self.expected = "one of " + ", ".join(member.value for member in enum)

    def parse(self, text: str) -> E:
        try:
            return self.enum(text.strip().lower())
        except ValueError:
            raise _Invalid(self.expected) from None

    def check(self, value: object) -> E:
        if not isinstance(value, self.enum):
            raise _Invalid(self.expected)
        return value


class _PortRange(_Rule[tuple[int, int]]):
    expected = "LO-HI with 1 <= LO <= HI <= 65535"

    def parse(self, text: str) -> tuple[int, int]:
        match = _PORT_RANGE.fullmatch(text.strip())
        if match is None:
            raise _Invalid(self.expected)
        return self.check((int(match[1]), int(match[2])))

    def check(self, value: object) -> tuple[int, int]:
        if not (
            isinstance(value, tuple)
            and len(value) == 2
            and all(isinstance(port, int) and not isinstance(port, bool) for port in value)
        ):
            raise _Invalid(self.expected)
        low, high = value
        if not 1 <= low <= high <= 65535:
            raise _Invalid(self.expected)
        return (low, high)


class _Path(_Rule[Path]):
    expected = "a file path"

    def parse(self, text: str) -> Path:
        if not text.strip():
            raise _Invalid(self.expected)
        return Path(text.strip())

    def check(self, value: object) -> Path:
        if not isinstance(value, Path):
            raise _Invalid(self.expected)
        return value


class _PathOrDefault(_Path):
    """A path whose empty value selects a platform-dependent default."""

    expected = "a path, or nothing for the default"
    empty_is_default = True


class _OptionalPath(_Rule[Path | None]):
    """Like :class:`_PathOrDefault`, for a setting whose default may be "none"."""

    expected = "a path, or nothing for the default"
    empty_is_default = True

    def parse(self, text: str) -> Path | None:
        if not text.strip():
            raise _Invalid(self.expected)
        return Path(text.strip())

    def check(self, value: object) -> Path | None:
        if value is not None and not isinstance(value, Path):
            raise _Invalid(self.expected)
        return value


class _OptionalHexKey(_Rule[bytes | None]):
    """One 32-byte key as 64 hex digits, or nothing."""

    expected = "a 32-byte key as 64 hex digits, or nothing for none"
    empty_is_default = True

    def parse(self, text: str) -> bytes | None:
        text = text.strip()
        if len(text) != 64:
            raise _Invalid(self.expected)
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise _Invalid(self.expected) from None

    def check(self, value: object) -> bytes | None:
        if value is not None and not (isinstance(value, bytes) and len(value) == 32):
            raise _Invalid(self.expected)
        return value


class _Host(_Rule[str]):
    expected = "a host name or IP address"

    def parse(self, text: str) -> str:
        return self.check(text.strip())

    def check(self, value: object) -> str:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise _Invalid(self.expected)
        return value


class _OptionalInt(_Rule[int | None]):
    """An integer in ``[low, high]``, or nothing for none."""

    empty_is_default = True

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.expected = f"an integer from {low} to {high}, or nothing"

    def parse(self, text: str) -> int | None:
        if not _INTEGER.fullmatch(text.strip()):
            raise _Invalid(self.expected)
        return self.check(int(text))

    def check(self, value: object) -> int | None:
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, int)
                or not self.low <= value <= self.high):
            raise _Invalid(self.expected)
        return value


class _OptionalAddress(_Rule[str | None]):
    expected = "an address without spaces, or nothing for none"

    def parse(self, text: str) -> str | None:
        return self.check(text.strip() or None)

    def check(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise _Invalid(self.expected)
        return value


class _Names(_Rule[tuple[str, ...]]):
    """A comma-separated list of names from a fixed set, in order, each once."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.expected = "one or more of " + ", ".join(names) + ", separated by commas, each once"

    def parse(self, text: str) -> tuple[str, ...]:
        return self.check(tuple(item.strip().lower() for item in text.split(",")
                                if item.strip()))

    def check(self, value: object) -> tuple[str, ...]:
        if (not isinstance(value, tuple) or not value or len(set(value)) != len(value)
                or not all(isinstance(name, str) and name in self.names for name in value)):
            raise _Invalid(self.expected)
        return value


class _OptionalIPv4(_Rule[str | None]):
    expected = "an IPv4 address, or nothing"
    empty_is_default = True

    def parse(self, text: str) -> str | None:
        return self.check(text.strip())

    def check(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid(self.expected)
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise _Invalid(self.expected) from None


_RULE = "p2pd.config.rule"


class _HexKeys(_Rule[tuple[bytes, ...]]):
    """Comma-separated 32-byte keys in hex (64 hex digits each), or nothing."""

    expected = "32-byte keys as 64 hex digits, separated by commas, or nothing"

    def parse(self, text: str) -> tuple[bytes, ...]:
        keys = []
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            if len(item) != 64:
                raise _Invalid(self.expected)
            try:
                keys.append(bytes.fromhex(item))
            except ValueError:
                raise _Invalid(self.expected) from None
        return tuple(keys)

    def check(self, value: object) -> tuple[bytes, ...]:
        if not isinstance(value, tuple) or not all(
                isinstance(k, bytes) and len(k) == 32 for k in value):
            raise _Invalid(self.expected)
        return value


class _Addresses(_Rule[tuple[str, ...]]):
    """Comma-separated ``host:port`` addresses (names resolved at start), or nothing."""

    expected = "host:port addresses separated by commas, or nothing"

    def parse(self, text: str) -> tuple[str, ...]:
        return self.check(tuple(item.strip() for item in text.split(",") if item.strip()))

    def check(self, value: object) -> tuple[str, ...]:
        if not isinstance(value, tuple) or len(value) > 8:
            raise _Invalid(self.expected + " (at most 8)")
        for item in value:
            if not isinstance(item, str) or not _is_host_port(item):
                raise _Invalid(self.expected)
        return value


class _OptionalHostPort(_OptionalAddress):
    expected = "host:port, or nothing for none"

    def check(self, value: object) -> str | None:
        checked = super().check(value)
        if checked is not None and not _is_host_port(checked):
            raise _Invalid(self.expected)
        return checked


class _Text(_Rule[str]):
    """Any text without surrounding spaces (a username, a password), possibly empty."""

    expected = "text"
    empty_is_default = True

    def parse(self, text: str) -> str:
        return self.check(text.strip())

    def check(self, value: object) -> str:
        if not isinstance(value, str) or len(value) > 256:
            raise _Invalid("text of at most 256 characters")
        return value


def _is_host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535
                and not any(c.isspace() for c in text))


def _allow(rule: _Rule[Any]) -> dict[str, _Rule[Any]]:
    """Field metadata: the rule the field's values must follow."""
    return {_RULE: rule}


def _rule(f: Field[Any]) -> _Rule[Any]:
    rule: _Rule[Any] = f.metadata[_RULE]
    return rule


def _show(value: object) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value)


def _validate(settings: DataclassInstance, section: str) -> None:
    """Check every field of a settings object against its rule."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        try:
            _rule(f).check(value)
        except _Invalid as exc:
            raise ConfigError(
                f"[{section}] {f.name} = {_show(value)}: expected {exc.expected}"
            ) from None


# ------------------------------------------------------------------- platform


def default_runtime_dir() -> Path:
    """Where the daemon keeps runtime files (its Unix socket) by default.

    ``$XDG_RUNTIME_DIR/p2pd`` when that variable holds an absolute path, else
    ``/tmp/p2pd-<uid>`` on POSIX; ``%LOCALAPPDATA%\\p2pd`` on Windows.
    """
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "p2pd"
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore relative paths
        return Path(xdg) / "p2pd"
    return Path("/tmp") / f"p2pd-{os.getuid()}"


def default_unix_socket(runtime_dir: Path) -> Path | None:
    """``<runtime_dir>/p2pd.sock`` on Linux; no Unix socket by default elsewhere."""
    if sys.platform.startswith("linux"):
        return runtime_dir / "p2pd.sock"
    return None


def _default_unix_socket() -> Path | None:
    return default_unix_socket(default_runtime_dir())


# ------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class P2PSettings:
    """Section ``[P2P]``: the keys of spec section 7."""

    SECTION: ClassVar[str] = "P2P"

    enabled: bool = field(default=True, metadata=_allow(_Bool()))
    max_peers: int = field(default=10, metadata=_allow(_Int(1, 64)))
    # KB/s; at least 12: ten datagrams of 1200 bytes per second
    bandwidth_limit: int = field(default=50, metadata=_allow(_Int(12, 100_000)))
    # KB/s to all peers together (beyond spec 7)
    total_bandwidth_limit: int = field(default=250, metadata=_allow(_Int(12, 1_000_000)))
    encryption_level: EncryptionLevel = field(
        default=EncryptionLevel.HIGH, metadata=_allow(_Choice(EncryptionLevel))
    )
    nat_traversal: bool = field(default=True, metadata=_allow(_Bool()))
    port_range: tuple[int, int] = field(default=(7000, 7100), metadata=_allow(_PortRange()))
    discovery_interval: float = field(default=30.0, metadata=_allow(_Positive()))  # seconds
    handshake_timeout: float = field(default=5.0, metadata=_allow(_Positive()))  # seconds
    inactive_timeout: float = field(default=60.0, metadata=_allow(_Positive()))  # seconds
    position_update_rate: float = field(default=5.0, metadata=_allow(_Positive(60)))  # per second
    effect_update_rate: float = field(default=10.0, metadata=_allow(_Positive(60)))  # per second
    compression_threshold: int = field(default=100, metadata=_allow(_Int(0, 65536)))  # bytes
    log_level: LogLevel = field(default=LogLevel.INFO, metadata=_allow(_Choice(LogLevel)))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)
        if self.total_bandwidth_limit < self.bandwidth_limit:
            raise ConfigError(
                f"[{self.SECTION}] total_bandwidth_limit = {self.total_bandwidth_limit!r}, "
                f"bandwidth_limit = {self.bandwidth_limit!r}: expected "
                "total_bandwidth_limit at least bandwidth_limit"
            )
        if not self.handshake_timeout < self.inactive_timeout:
            raise ConfigError(
                f"[{self.SECTION}] handshake_timeout = {self.handshake_timeout!r}, "
                f"inactive_timeout = {self.inactive_timeout!r}: expected "
                "handshake_timeout less than inactive_timeout"
            )


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """Section ``[identity]``."""

    SECTION: ClassVar[str] = "identity"

    key_file: Path = field(default=Path("state/identity.key"), metadata=_allow(_Path()))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class IpcSettings:
    """Section ``[ipc]``: how game clients reach the daemon."""

    SECTION: ClassVar[str] = "ipc"

    tcp_host: str = field(default="127.0.0.1", metadata=_allow(_Host()))
    tcp_port: int = field(default=7300, metadata=_allow(_Int(0, 65535)))  # 0: any free port
    unix_socket: Path | None = field(
        default_factory=_default_unix_socket, metadata=_allow(_OptionalPath())
    )
    runtime_dir: Path = field(
        default_factory=default_runtime_dir, metadata=_allow(_PathOrDefault())
    )
    max_clients: int = field(default=16, metadata=_allow(_Int(1)))
    max_frame_bytes: int = field(default=65536, metadata=_allow(_Int(1024, 16 * 1024 * 1024)))
    client_queue_limit: int = field(default=1024, metadata=_allow(_Int(1)))  # messages

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Section ``[log]``: the log file (spec section 8.1) and the console."""

    SECTION: ClassVar[str] = "log"

    file: Path = field(default=Path("logs/p2p.log"), metadata=_allow(_Path()))
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=_allow(_Int(4096)))
    backups: int = field(default=5, metadata=_allow(_Int(0, 100)))
    console: bool = field(default=False, metadata=_allow(_Bool()))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    """Section ``[coordinator]``: where this daemon registers and finds its peers.

    With an ``address``, ``public_key`` pins the coordinator's key and
    ``token_file`` holds the connect token (hex) that the game (or ``p2pctl
    token``) wrote for this daemon's key, re-read when it changes; without a
    token file the game hands tokens over IPC (``coordinator_token``). With none, the daemon runs a
    coordinator of its own (``embedded``, LAN play: :mod:`p2pd.io.embedded`) on
    ``embedded_host:embedded_port``, with its keys next to the identity key,
    and registers with it as ``player_id``; with ``embedded = false`` it is
    linked by hand (``p2pctl connect``)."""

    SECTION: ClassVar[str] = "coordinator"

    address: str | None = field(default=None, metadata=_allow(_OptionalAddress()))
    public_key: bytes | None = field(default=None, metadata=_allow(_OptionalHexKey()))
    token_file: Path | None = field(default=None, metadata=_allow(_OptionalPath()))
    backups: int = field(default=1, metadata=_allow(_Int(0, 4)))  # warm links beyond max_peers
    relay_only: bool = field(default=False, metadata=_allow(_Bool()))
    embedded: bool = field(default=True, metadata=_allow(_Bool()))
    embedded_host: str = field(default="0.0.0.0", metadata=_allow(_Host()))
    embedded_port: int = field(default=7400, metadata=_allow(_Int(0, 65535)))  # 0: any free
    # the embedded coordinator's token for this daemon; none: derived from the identity key
    player_id: int | None = field(default=None, metadata=_allow(_OptionalInt(0, 2**32 - 1)))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)
        if self.address is not None and self.public_key is None:
            raise ConfigError(
                f"[{self.SECTION}] address = {self.address!r}: expected public_key as well "
                "(the coordinator's key; the connect token comes from token_file, or from "
                "the game over IPC: coordinator_token)"
            )
        try:
            ipaddress.IPv4Address(self.embedded_host)
        except ValueError:
            raise ConfigError(
                f"[{self.SECTION}] embedded_host = {self.embedded_host!r}: expected an IPv4 "
                "address (0.0.0.0 for every interface; the daemon's sockets are IPv4)"
            ) from None
        if self.address is not None and self.player_id is not None:
            raise ConfigError(
                f"[{self.SECTION}] player_id = {self.player_id!r}: expected no player_id "
                "with an address (the connect token in token_file names the player; "
                "player_id is for the embedded coordinator only)"
            )
        if self.address is None and not self.embedded and self.player_id is not None:
            raise ConfigError(
                f"[{self.SECTION}] player_id = {self.player_id!r}: expected no player_id "
                "with embedded = false (no coordinator to register with)"
            )

    @property
    def runs_embedded(self) -> bool:
        """No coordinator configured and the embedded one not turned off."""
        return self.address is None and self.embedded


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Section ``[sync]``: game-state smoothing and cheat prevention (spec 4.1, 5.2);
    :mod:`p2pd.sync`, :mod:`p2pd.cheat`."""

    SECTION: ClassVar[str] = "sync"

    # rAthena map files (<map>.gat, or map_cache.dat) for walls and line of sight
    map_dir: Path | None = field(default=None, metadata=_allow(_OptionalPath()))
    error_budget: int = field(default=1, metadata=_allow(_Int(0, 8)))  # cells
    interpolation_intervals: float = field(default=3.0, metadata=_allow(_Positive(20)))
    max_playout_ms: int = field(default=1000, metadata=_allow(_Int(100, 5000)))
    max_extrapolation_ms: int = field(default=2000, metadata=_allow(_Int(0, 5000)))
    snap_cells: int = field(default=4, metadata=_allow(_Int(1, 1023)))
    anomaly_threshold: float = field(default=20.0, metadata=_allow(_Positive(1_000_000)))
    ban_seconds: float = field(default=300.0, metadata=_allow(_Positive(86400)))
    snapshot_interval: float = field(default=60.0, metadata=_allow(_Positive(86400)))
    # what one peer may send of chat lines and AI interactions (per second, and at
    # once): beyond, they are dropped and count against its anomaly score (a flood)
    chat_rate: float = field(default=5.0, metadata=_allow(_Positive(10_000)))
    chat_burst: int = field(default=50, metadata=_allow(_Int(1, 100_000)))
    interaction_rate: float = field(default=10.0, metadata=_allow(_Positive(10_000)))
    interaction_burst: int = field(default=50, metadata=_allow(_Int(1, 100_000)))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class PortMappingSettings:
    """Section ``[port_mapping]``: asking the router to forward the daemon's UDP port
    (PCP, NAT-PMP, UPnP IGD; :mod:`p2pd.portmap`). Only with ``[P2P] nat_traversal``."""

    SECTION: ClassVar[str] = "port_mapping"

    enabled: bool = field(default=True, metadata=_allow(_Bool()))
    protocols: tuple[str, ...] = field(default=("pcp", "natpmp", "upnp"),
                                       metadata=_allow(_Names(("pcp", "natpmp", "upnp"))))
    lifetime: int = field(default=7200, metadata=_allow(_Int(2, 86400)))  # seconds asked for
    # the PCP / NAT-PMP server; none: the default route's gateway
    gateway: str | None = field(default=None, metadata=_allow(_OptionalIPv4()))
    retry_interval: float = field(default=300.0, metadata=_allow(_Positive(86400)))  # seconds

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class NatSettings:
    """Section ``[nat]``: NAT traversal (spec §3.2), on when ``[P2P] nat_traversal``.

    ``stun_servers``: STUN servers the daemon asks for its public mapping (the
    first also for NAT behaviour discovery, RFC 5780, when it gives an
    OTHER-ADDRESS). ``turn_server``: a TURN server for a relayed candidate, with
    long-term credentials (``turn_username``, ``turn_password``) or REST-style
    time-limited ones from ``turn_secret`` (``turn_username`` is then the user
    part). ``punch_ttl``: the IP TTL of the first hole-punching packets (0: no
    low-TTL punches)."""

    SECTION: ClassVar[str] = "nat"

    stun_servers: tuple[str, ...] = field(default=(), metadata=_allow(_Addresses()))
    turn_server: str | None = field(default=None, metadata=_allow(_OptionalHostPort()))
    turn_username: str = field(default="", metadata=_allow(_Text()))
    turn_password: str = field(default="", metadata=_allow(_Text()))
    turn_secret: str = field(default="", metadata=_allow(_Text()))
    punch_ttl: int = field(default=2, metadata=_allow(_Int(0, 255)))
    discovery: bool = field(default=True, metadata=_allow(_Bool()))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)
        if self.turn_server is not None and not (self.turn_secret or (
                self.turn_username and self.turn_password)):
            raise ConfigError(
                f"[{self.SECTION}] turn_server = {self.turn_server!r}: expected "
                "turn_username and turn_password, or turn_secret (REST credentials)")
        if self.turn_secret and self.turn_password:
            raise ConfigError(
                f"[{self.SECTION}] turn_secret and turn_password: expected one of them "
                "(REST credentials derive the password from the secret)")


@dataclass(frozen=True, slots=True)
class CoordinatorServerSettings:
    """Section ``[coordinator_server]`` of the coordinator's own ini file."""

    SECTION: ClassVar[str] = "coordinator_server"

    listen_host: str = field(default="0.0.0.0", metadata=_allow(_Host()))
    listen_port: int = field(default=7400, metadata=_allow(_Int(0, 65535)))  # 0: any free port
    key_file: Path = field(default=Path("state/coordinator.key"), metadata=_allow(_Path()))
    signing_key_file: Path = field(default=Path("state/signing.key"), metadata=_allow(_Path()))
    # the token issuer's own key (p2pctl token mints with it); trusted as an issuer
    issuer_key_file: Path = field(default=Path("state/issuer.key"), metadata=_allow(_Path()))
    # more issuers (the game server's), Ed25519 public keys
    trusted_issuers: tuple[bytes, ...] = field(default=(), metadata=_allow(_HexKeys()))
    certificate_lifetime: float = field(default=3600.0, metadata=_allow(_Positive(86400)))
    view_range: int = field(default=14, metadata=_allow(_Int(1, 255)))
    max_daemons: int = field(default=100_000, metadata=_allow(_Int(1, 10_000_000)))
    # KiB per second relayed for one daemon (spec 10.1, fallback to server)
    relay_rate: float = field(default=64.0, metadata=_allow(_Positive(100_000)))
    # where the operator's view (counts, relayed traffic, recent reports) is written
    status_file: Path = field(default=Path("state/status.json"), metadata=_allow(_Path()))
    log_level: LogLevel = field(default=LogLevel.INFO, metadata=_allow(_Choice(LogLevel)))

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Section ``[metrics]``: the opt-in Prometheus endpoint (``GET /metrics``)."""

    SECTION: ClassVar[str] = "metrics"

    enabled: bool = field(default=False, metadata=_allow(_Bool()))
    host: str = field(default="127.0.0.1", metadata=_allow(_Host()))
    port: int = field(default=9470, metadata=_allow(_Int(0, 65535)))  # 0: any free port

    def __post_init__(self) -> None:
        _validate(self, self.SECTION)


@dataclass(frozen=True, slots=True)
class CoordinatorMetricsSettings(MetricsSettings):
    """``[metrics]`` of coordinator.ini: as the daemon's, on a port of its own."""

    port: int = field(default=9471, metadata=_allow(_Int(0, 65535)))


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """The coordinator's configuration (its own ini file, not ai_client.ini)."""

    source: Path
    server: CoordinatorServerSettings = field(default_factory=CoordinatorServerSettings)
    log: LogSettings = field(default_factory=LogSettings)
    metrics: CoordinatorMetricsSettings = field(default_factory=CoordinatorMetricsSettings)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    source: Path  # the ini file the configuration came from
    p2p: P2PSettings = field(default_factory=P2PSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    ipc: IpcSettings = field(default_factory=IpcSettings)
    log: LogSettings = field(default_factory=LogSettings)
    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    port_mapping: PortMappingSettings = field(default_factory=PortMappingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    nat: NatSettings = field(default_factory=NatSettings)

    def __post_init__(self) -> None:
        coordinator, (low, high) = self.coordinator, self.p2p.port_range
        if coordinator.runs_embedded and low <= coordinator.embedded_port <= high:
            raise ConfigError(
                f"[{coordinator.SECTION}] embedded_port = {coordinator.embedded_port!r}: "
                f"expected a port outside [{self.p2p.SECTION}] port_range = {low}-{high} "
                "(the embedded coordinator needs a socket of its own), or 0 for any free port"
            )

    def session_config(self) -> SessionConfig:
        """The session core's settings; those not in the ini keep their defaults."""
        p2p = self.p2p
        return SessionConfig(
            handshake_timeout=p2p.handshake_timeout,
            inactive_timeout=p2p.inactive_timeout,
            encryption_level=p2p.encryption_level,
            compression_threshold=p2p.compression_threshold,
            # the session core needs zstd_threshold >= compression_threshold
            zstd_threshold=max(SessionConfig().zstd_threshold, p2p.compression_threshold),
            # a peer may send twice what we allow ourselves: its settings may differ
            incoming_byte_rate=2 * p2p.bandwidth_limit * 1024,
            send_rate=p2p.bandwidth_limit * 1024,
            total_send_rate=p2p.total_bandwidth_limit * 1024,
            position_error_budget=self.sync.error_budget,
        )


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: DaemonConfig
    warnings: tuple[str, ...]


# --------------------------------------------------------------------- loading

# DaemonConfig attribute -> settings class; the class names its ini section.
_SECTIONS: Mapping[str, type[Any]] = {
    "p2p": P2PSettings,
    "identity": IdentitySettings,
    "ipc": IpcSettings,
    "log": LogSettings,
    "coordinator": CoordinatorSettings,
    "sync": SyncSettings,
    "port_mapping": PortMappingSettings,
    "metrics": MetricsSettings,
    "nat": NatSettings,
}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(
        inline_comment_prefixes=(";", "#"),
        interpolation=None,
        strict=True,
        empty_lines_in_values=False,
        # no [DEFAULT] magic: a [DEFAULT] section is reported as unknown
        default_section="\x00p2pd: no default section",
    )


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read(path: Path) -> configparser.ConfigParser:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path.absolute()}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    parser = _parser()
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: not a valid ini file: {detail}") from None
    return parser


def _section(
    path: Path, parser: configparser.ConfigParser, cls: type[Any], warnings: list[str]
) -> tuple[Any, set[str]]:
    """Build one settings object; also return the keys the file set."""
    section: str = cls.SECTION
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    if parser.has_section(section):
        for key, raw in parser.items(section):
            if key not in known:
                warnings.append(
                    f"{path}: [{section}] unknown key {key!r} ignored" + _suggest(key, list(known))
                )
                continue
            rule = _rule(known[key])
            if rule.empty_is_default and not raw.strip():
                continue
            try:
                values[key] = rule.parse(raw)
            except _Invalid as exc:
                raise ConfigError(
                    f"{path}: [{section}] {key} = {raw!r}: expected {exc.expected}"
                ) from None
    try:
        settings = cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # relative paths (set or default) are relative to the ini file's directory
    base = path.absolute().parent
    relative = {
        name: base / value
        for name in known
        if isinstance(value := getattr(settings, name), Path) and not value.is_absolute()
    }
    return (replace(settings, **relative) if relative else settings), set(values)


# systemd's service directories (RuntimeDirectory= and so on, see systemd/p2pd.service):
# where the ini file does not name a path itself, the daemon uses them.
_SERVICE_DIRECTORIES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("identity", "key_file"): ("STATE_DIRECTORY", "identity.key"),
    ("log", "file"): ("LOGS_DIRECTORY", "p2p.log"),
    ("ipc", "runtime_dir"): ("RUNTIME_DIRECTORY", None),
}


def _service_directory(section: str, key: str, environ: Mapping[str, str]) -> Path | None:
    variable, name = _SERVICE_DIRECTORIES[(section, key)]
    first = environ.get(variable, "").split(":")[0]
    if not first or not Path(first).is_absolute():
        return None
    return Path(first) / name if name else Path(first)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read and validate the ini file at ``path``; raise :class:`ConfigError` if refused.

    ``environ`` (default: the process environment) supplies systemd's
    ``$STATE_DIRECTORY``, ``$LOGS_DIRECTORY`` and ``$RUNTIME_DIRECTORY`` for the
    identity key, the log file and the runtime directory when the file leaves
    them unset.
    """
    environ = os.environ if environ is None else environ
    path = Path(path)
    parser = _read(path)
    warnings: list[str] = []
    by_section = {cls.SECTION: cls for cls in _SECTIONS.values()}
    for name in parser.sections():
        if name not in by_section:
            same = [known for known in by_section if known.lower() == name.lower()]
            hint = (
                f" (section names are case-sensitive: did you mean [{same[0]}]?)"
                if same
                else _suggest(name, list(by_section))
            )
            warnings.append(f"{path}: unknown section [{name}] ignored{hint}")
    built: dict[str, Any] = {}
    for attribute, cls in _SECTIONS.items():
        settings, given = _section(path, parser, cls, warnings)
        overrides = {
            key: directory
            for (section, key) in _SERVICE_DIRECTORIES
            if section == cls.SECTION and key not in given
            and (directory := _service_directory(section, key, environ)) is not None
        }
        if overrides:
            settings = replace(settings, **overrides)
        if isinstance(settings, IpcSettings):
            if "unix_socket" not in given:  # follows the configured runtime_dir
                settings = replace(settings, unix_socket=default_unix_socket(settings.runtime_dir))
            if not _is_loopback(settings.tcp_host):
                warnings.append(
                    f"{path}: [ipc] tcp_host = {settings.tcp_host!r} is not a loopback "
                    "address: anyone who can reach it can control the daemon"
                )
        _warn_public_metrics(path, settings, warnings)
        built[attribute] = settings
    try:
        config = DaemonConfig(source=path.absolute(), **built)
    except ConfigError as exc:  # a rule across sections
        raise ConfigError(f"{path}: {exc}") from None
    return LoadedConfig(config, tuple(warnings))


_COORDINATOR_SECTIONS: Mapping[str, type[Any]] = {
    "server": CoordinatorServerSettings,
    "log": LogSettings,
    "metrics": CoordinatorMetricsSettings,
}


# the coordinator's files where its ini names none: (section, key) -> (variable, name)
_COORDINATOR_DIRECTORIES: dict[tuple[str, str], tuple[str, str]] = {
    ("coordinator_server", "key_file"): ("STATE_DIRECTORY", "coordinator.key"),
    ("coordinator_server", "signing_key_file"): ("STATE_DIRECTORY", "signing.key"),
    ("coordinator_server", "issuer_key_file"): ("STATE_DIRECTORY", "issuer.key"),
    ("coordinator_server", "status_file"): ("STATE_DIRECTORY", "status.json"),
    ("log", "file"): ("LOGS_DIRECTORY", "coordinator.log"),
}


def load_coordinator_config(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[CoordinatorConfig, tuple[str, ...]]:
    """Read and validate the coordinator's ini file; raise :class:`ConfigError` if
    refused. Returns the configuration and the warnings (unknown keys). As for
    the daemon, systemd's ``$STATE_DIRECTORY`` and ``$LOGS_DIRECTORY`` hold the
    keys and the log where the file names no path."""
    environ = os.environ if environ is None else environ
    path = Path(path)
    parser = _read(path)
    warnings: list[str] = []
    known = {cls.SECTION for cls in _COORDINATOR_SECTIONS.values()}
    for name in parser.sections():
        if name not in known:
            warnings.append(f"{path}: unknown section [{name}] ignored"
                            + _suggest(name, sorted(known)))
    built: dict[str, Any] = {}
    for attribute, cls in _COORDINATOR_SECTIONS.items():
        settings, given = _section(path, parser, cls, warnings)
        overrides = {}
        for (section, key), (variable, name) in _COORDINATOR_DIRECTORIES.items():
            first = environ.get(variable, "").split(":")[0]
            if section == cls.SECTION and key not in given and Path(first).is_absolute():
                overrides[key] = Path(first) / name
        built[attribute] = replace(settings, **overrides) if overrides else settings
        _warn_public_metrics(path, settings, warnings)
    return CoordinatorConfig(source=path.absolute(), **built), tuple(warnings)


def _warn_public_metrics(path: Path, settings: object, warnings: list[str]) -> None:
    if (isinstance(settings, MetricsSettings) and settings.enabled
            and not _is_loopback(settings.host)):
        warnings.append(
            f"{path}: [metrics] host = {settings.host!r} is not a loopback address: "
            "anyone who can reach it can read the metrics"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
