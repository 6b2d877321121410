"""Validators for untrusted fields, and the schema reader that applies them.

A *check* is ``check(value, field) -> value``: it returns the value in the
form the dataclasses store (tuples instead of lists and maps, lower-case hex)
or raises IpcError('bad_field', ..., field). Types are exact: a bool is not an
int, an int is not a float. String limits count UTF-8 bytes, not characters.

A :class:`Field` ties a check to a field name, an optional default and the
compact key it has in peer payloads; :func:`read_fields` applies a tuple of
them to a map and rejects any key it does not know, so a misspelt optional
field fails loudly instead of silently taking its default.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from p2pd.ipc.errors import ErrorCode, IpcError

Scalar: TypeAlias = int | float | str | bool | None
ScalarMap: TypeAlias = tuple[tuple[str, Scalar], ...]  # sorted by key, keys unique
Check: TypeAlias = Callable[[Any, str], Any]

U32_MAX: Final = 0xFFFFFFFF
I63_MAX: Final = (1 << 63) - 1  # largest signed 64-bit integer
_MSGPACK_INT_MIN: Final = -(1 << 63)
_MSGPACK_INT_MAX: Final = (1 << 64) - 1
MAX_MAP_KEY_BYTES: Final = 32
_MAX_NAME_IN_ERROR = 64  # characters of an unknown key repeated in an error

# C0, DEL, C1, and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HEX64 = re.compile("[0-9a-fA-F]{64}")
_PORT = re.compile("[0-9]{1,5}")
_HOST_LABEL = re.compile("[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MAX_ADDRESS_BYTES: Final = 300


def bad_field(field: str, message: str) -> IpcError:
    return IpcError(ErrorCode.BAD_FIELD, f"{field} {message}", field)


def shorten(name: object) -> str:
    """A key as it may appear in an error: a string, and not a long one."""
    text = name if isinstance(name, str) else repr(name)
    return text if len(text) <= _MAX_NAME_IN_ERROR else text[:_MAX_NAME_IN_ERROR] + "..."


_TYPE_NAMES: Final[dict[type, str]] = {
    dict: "map",
    list: "array",
    str: "string",
    bytes: "binary",
    type(None): "nil",
}


def _type_name(value: object) -> str:
    kind = type(value)
    return _TYPE_NAMES.get(kind, kind.__name__)


def utf8_len(value: str, field: str) -> int:
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: never from msgpack, possible from Python
        raise bad_field(field, "is not valid UTF-8") from None


# -- scalar checks ------------------------------------------------------------


def check_int(lo: int, hi: int) -> Check:
    def check(value: Any, field: str) -> int:
        if type(value) is not int:
            raise bad_field(field, f"must be an integer, got {_type_name(value)}")
        if not lo <= value <= hi:
            raise bad_field(field, f"must be in {lo}..{hi}, got {value}")
        return value

    return check


def check_bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise bad_field(field, f"must be a boolean, got {_type_name(value)}")
    return value


def check_str(
    min_bytes: int, max_bytes: int, *, allow_control: bool = False, pattern: str | None = None
) -> Check:
    """A string of ``min_bytes..max_bytes`` UTF-8 bytes; no control characters
    unless allowed; matching ``pattern`` (whole string) when given."""
    compiled = re.compile(pattern) if pattern is not None else None

    def check(value: Any, field: str) -> str:
        if type(value) is not str:
            raise bad_field(field, f"must be a string, got {_type_name(value)}")
        size = utf8_len(value, field)
        if not min_bytes <= size <= max_bytes:
            raise bad_field(field, f"must be {min_bytes}..{max_bytes} UTF-8 bytes, got {size}")
        if compiled is not None and compiled.fullmatch(value) is None:
            raise bad_field(field, f"must match {pattern}")
        if not allow_control and _CONTROL.search(value) is not None:
            raise bad_field(field, "must not contain control characters")
        return value

    return check


def check_choice(*choices: str) -> Check:
    allowed = frozenset(choices)
    listing = ", ".join(choices)

    def check(value: Any, field: str) -> str:
        if type(value) is not str or value not in allowed:
            shown = shorten(value) if type(value) is str else _type_name(value)
            raise bad_field(field, f"must be one of {listing}, got {shown}")
        return value

    return check


def check_hex_key(value: Any, field: str) -> str:
    """64 hex digits (a 32-byte key or token), returned in lower case."""
    if type(value) is not str or _HEX64.fullmatch(value) is None:
        raise bad_field(field, "must be 64 hexadecimal digits")
    return value.lower()


# -- containers -----------------------------------------------------------------


def check_key_list(max_items: int) -> Check:
    """1..max_items peer keys; duplicates are dropped, the first occurrence kept."""

    def check(value: Any, field: str) -> tuple[str, ...]:
        if type(value) is not list and type(value) is not tuple:
            raise bad_field(field, f"must be an array, got {_type_name(value)}")
        if not 1 <= len(value) <= max_items:
            raise bad_field(
                field, f"must list 1..{max_items} peers (omit it for every peer), got {len(value)}"
            )
        keys = [check_hex_key(item, f"{field}.{i}") for i, item in enumerate(value)]
        return tuple(dict.fromkeys(keys))

    return check


def _check_scalar(value: Any, field: str, max_str_bytes: int) -> Scalar:
    kind = type(value)
    if value is None or kind is bool:
        return value  # type: ignore[no-any-return]
    if kind is int:
        if not _MSGPACK_INT_MIN <= value <= _MSGPACK_INT_MAX:
            raise bad_field(field, "is out of the 64-bit integer range")
        return value  # type: ignore[no-any-return]
    if kind is float:
        if not math.isfinite(value):
            raise bad_field(field, "must be a finite number")
        return value  # type: ignore[no-any-return]
    if kind is str:
        size = utf8_len(value, field)
        if size > max_str_bytes:
            raise bad_field(field, f"must be at most {max_str_bytes} UTF-8 bytes, got {size}")
        return value  # type: ignore[no-any-return]
    raise bad_field(
        field, f"must be an integer, number, string, boolean or nil, got {_type_name(value)}"
    )


def check_scalar_map(max_entries: int, max_str_bytes: int) -> Check:
    """A map of at most ``max_entries`` entries, keys 1..32 UTF-8 bytes without
    control characters, values int/float/str (<= ``max_str_bytes``)/bool/nil.
    Stored as a tuple of (key, value) pairs sorted by key."""

    def check(value: Any, field: str) -> ScalarMap:
        if type(value) is not dict:
            raise bad_field(field, f"must be a map, got {_type_name(value)}")
        if len(value) > max_entries:
            raise bad_field(field, f"must have at most {max_entries} entries, got {len(value)}")
        items: list[tuple[str, Scalar]] = []
        for key, item in value.items():
            if type(key) is not str:
                raise bad_field(field, "keys must be strings")
            label = f"{field}.{shorten(key)}"
            size = utf8_len(key, label)
            if not 1 <= size <= MAX_MAP_KEY_BYTES:
                raise bad_field(
                    label, f"key must be 1..{MAX_MAP_KEY_BYTES} UTF-8 bytes, got {size}"
                )
            if _CONTROL.search(key) is not None:
                raise bad_field(label, "key must not contain control characters")
            items.append((key, _check_scalar(item, label, max_str_bytes)))
        items.sort(key=_first)
        return tuple(items)

    return check


def _first(item: tuple[str, Scalar]) -> str:
    return item[0]


def map_to_dict(items: ScalarMap) -> dict[str, Scalar]:
    """A stored map back as a dict (for msgpack and for the game)."""
    return dict(items)


def map_from_dict(mapping: Mapping[str, Scalar]) -> ScalarMap:
    """A stored map from trusted code's dict (sorts; does not validate)."""
    return tuple(sorted(mapping.items(), key=_first))


# -- addresses ------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port), host without brackets.

    Raises ValueError when the address is not one of those forms with a port
    in 1..65535 and a host that is an IPv4 or IPv6 address or a DNS name.
    """
    if address.startswith("["):
        close = address.find("]")
        if close < 0 or address[close + 1 : close + 2] != ":":
            raise ValueError("IPv6 addresses are written [address]:port")
        host, port_text = address[1:close], address[close + 2 :]
        ipaddress.IPv6Address(host)  # raises ValueError
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or not host:
            raise ValueError("an address is host:port")
        if ":" in host:
            raise ValueError("IPv6 addresses are written [address]:port")
        if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
            raise ValueError("the host is not an IPv4 address or a DNS name")
    if _PORT.fullmatch(port_text) is None or not 1 <= int(port_text) <= 65535:
        raise ValueError("the port must be 1..65535")
    return host, int(port_text)


def format_address(address: tuple[str, int]) -> str:
    """(host, port) -> ``"host:port"``, or ``"[v6]:port"``: what split_address reads."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_address(value: Any, field: str) -> str:
    if type(value) is not str:
        raise bad_field(field, f"must be a string, got {_type_name(value)}")
    if utf8_len(value, field) > MAX_ADDRESS_BYTES:
        raise bad_field(field, f"must be at most {MAX_ADDRESS_BYTES} bytes")
    try:
        split_address(value)
    except ValueError as exc:
        raise bad_field(field, f"must be host:port or [v6]:port ({exc})") from None
    return value


# -- schemas ----------------------------------------------------------------------


class _Required:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


def _same(value: object) -> object:
    return value


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message.

    ``compact`` is its key in peer payloads (None: not sent to peers);
    ``to_wire`` turns the stored value back into what msgpack carries.
    """

    name: str
    check: Check
    default: object = REQUIRED
    compact: str | None = None
    to_wire: Callable[[Any], Any] = _same

    def is_default(self, value: object) -> bool:
        default = self.default
        return default is not REQUIRED and type(value) is type(default) and value == default


def read_fields(
    msg: Mapping[str, Any],
    fields: tuple[Field, ...],
    *,
    compact: bool = False,
    prefix: str = "",
    also_allowed: Iterable[str] = (),
) -> dict[str, Any]:
    """Validate ``msg`` against ``fields`` -> {field name: stored value}.

    Keys are the fields' names, or their compact keys when ``compact``; with
    ``compact`` the fields without a compact key are skipped (they keep their
    dataclass defaults). Keys in ``also_allowed`` are the caller's business.
    Errors name fields by their full names, prefixed with ``prefix``.
    """
    out: dict[str, Any] = {}
    seen = 0
    for f in fields:
        key = f.compact if compact else f.name
        if key is None:
            continue
        if key in msg:
            out[f.name] = f.check(msg[key], prefix + f.name)
            seen += 1
        elif f.default is REQUIRED:
            raise bad_field(prefix + f.name, "is missing")
        else:
            out[f.name] = f.default
    extra = tuple(also_allowed)
    seen += sum(1 for key in extra if key in msg)
    if seen != len(msg):
        known = {f.compact if compact else f.name for f in fields}
        known.update(extra)
        unknown = sorted(shorten(key) for key in msg if key not in known)
        raise bad_field(prefix + unknown[0], "is not a known field")
    return out


def write_fields(
    obj: object, fields: tuple[Field, ...], *, compact: bool = False
) -> dict[str, Any]:
    """The inverse of :func:`read_fields`: wire form of ``obj``, defaults left out."""
    out: dict[str, Any] = {}
    for f in fields:
        key = f.compact if compact else f.name
        if key is None:
            continue
        value = getattr(obj, f.name)
        if not f.is_default(value):
            out[key] = f.to_wire(value)
    return out
