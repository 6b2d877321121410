"""The systemd notify protocol (``sd_notify(3)``), written natively.

Under ``Type=notify`` systemd passes the path of a datagram socket in ``$NOTIFY_SOCKET``;
the service sends newline-separated ``KEY=VALUE`` assignments to it, one datagram per
notification: ``READY=1`` once it serves, ``STATUS=...`` for ``systemctl status``,
``STOPPING=1`` when it begins a graceful stop, ``WATCHDOG=1`` as the keep-alive ping
when the unit sets ``WatchdogSec=``.

Every function returns ``True`` when the datagram was sent, and ``False`` — silently —
when there is no one to tell: the variable is unset (not started by systemd), the
platform has no ``AF_UNIX`` datagram sockets (Windows, where this module still
imports), or the send failed. A daemon therefore calls these unconditionally.

The send is a blocking ``sendto`` bounded by a short timeout: it can only wait when
systemd's receive queue is full, and a trio task calling it then blocks the loop for
at most :data:`SEND_TIMEOUT` seconds.
"""

from __future__ import annotations

import os
import socket
from typing import Final

__all__ = [
    "SEND_TIMEOUT",
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

SEND_TIMEOUT: Final = 1.0


def _address(raw: str) -> str | None:
    """``$NOTIFY_SOCKET`` as a socket address: an absolute path, or ``@name`` for a
    Linux abstract socket (leading NUL byte). Anything else (vsock, relative) is not
    supported here."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    return None


def notify(state: str) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) as one datagram to ``$NOTIFY_SOCKET``."""
    raw = os.environ.get("NOTIFY_SOCKET")
    family = getattr(socket, "AF_UNIX", None)  # absent on Windows
    if not raw or family is None:
        return False
    address = _address(raw)
    if address is None:
        return False
    kind = socket.SOCK_DGRAM | getattr(socket, "SOCK_CLOEXEC", 0)
    try:
        with socket.socket(family, kind) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(state.encode("utf-8"), address)
    except (OSError, ValueError):
        # No listener, permission denied, a full queue past the timeout, or an
        # address the platform rejects: notifications are best effort.
        return False
    return True


def _one_line(text: str) -> str:
    """A value may not contain a newline, or it would start another assignment."""
    return " ".join(text.splitlines())


def ready(status: str = "") -> bool:
    """Startup is finished: ``READY=1``, with a ``STATUS=`` line when ``status`` is given."""
    if status:
        return notify(f"READY=1\nSTATUS={_one_line(status)}")
    return notify("READY=1")


def stopping() -> bool:
    """A graceful stop has begun: ``STOPPING=1``."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """A one-line status for ``systemctl status``: ``STATUS=text``."""
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    """The keep-alive ping for ``WatchdogSec=``: ``WATCHDOG=1``."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects :func:`watchdog` pings (``$WATCHDOG_USEC``),
    or ``None`` when the watchdog is off or meant for another process
    (``$WATCHDOG_PID``). Pinging at half this interval is the usual practice."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
