"""p2pd.io.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pd.io import sdnotify

HAS_UNIX_DGRAM = os.name == "posix" and hasattr(socket, "AF_UNIX")
needs_unix = pytest.mark.skipif(
    not HAS_UNIX_DGRAM, reason="the notify protocol needs AF_UNIX datagram sockets (POSIX only)"
)
needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract AF_UNIX sockets exist on Linux only"
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound to a path, named by $NOTIFY_SOCKET, as systemd does."""
    with contextlib.ExitStack() as stack:
        path = tmp_path / "notify"
        if len(os.fsencode(path)) >= 100:  # sun_path holds 104-108 bytes
            path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="p2pd-")))
            path /= "notify"
        sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        sock.settimeout(5.0)
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@needs_unix
def test_ready_with_status(listener: socket.socket) -> None:
    assert sdnotify.ready("x") is True
    assert listener.recv(4096) == b"READY=1\nSTATUS=x"


@needs_unix
def test_each_helper_sends_one_datagram(listener: socket.socket) -> None:
    assert sdnotify.ready()
    assert sdnotify.status("3 peers, 12 kB/s")
    assert sdnotify.watchdog()
    assert sdnotify.stopping()
    assert sdnotify.notify("RELOADING=1\nMONOTONIC_USEC=1")
    received = [listener.recv(4096) for _ in range(5)]
    assert received == [
        b"READY=1",
        b"STATUS=3 peers, 12 kB/s",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"RELOADING=1\nMONOTONIC_USEC=1",
    ]


@needs_unix
def test_status_cannot_inject_assignments(listener: socket.socket) -> None:
    assert sdnotify.status("fine\nREADY=1")
    assert listener.recv(4096) == b"STATUS=fine READY=1"


@needs_unix
def test_utf8_status(listener: socket.socket) -> None:
    assert sdnotify.status("Prontera caf\u00e9, 3 peers")
    assert listener.recv(4096) == "STATUS=Prontera caf\u00e9, 3 peers".encode()


@needs_unix
@needs_linux
def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"p2pd-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready("abstract") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=abstract"


def test_unset_variable_returns_false() -> None:
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready("x") is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("x") is False
    assert sdnotify.watchdog() is False


def test_empty_variable_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.ready() is False


@pytest.mark.parametrize("value", ["relative/notify", "@", "vsock:2:1234"])
def test_unsupported_addresses_return_false(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.ready() is False


@needs_unix
def test_nobody_listening_returns_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False


def test_platform_without_af_unix_returns_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.delattr(socket, "AF_UNIX", raising=False)  # as on Windows
    assert sdnotify.ready() is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdnotify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval() is None
