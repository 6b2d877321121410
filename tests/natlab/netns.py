"""One network namespace of the NAT lab: commands, processes and sockets inside it.

Linux only, root only. A namespace is a name under ``/run/netns`` (``ip netns``);
commands run in it with ``ip netns exec``; a socket of the test process is
created inside it by a fresh thread that enters it with ``setns(2)`` through
ctypes (Python 3.11 has no ``os.setns``), so one test process can hold sockets
in several namespaces. Removing a namespace kills every process still in it
first: ``ip netns del`` on a namespace with processes would only remove its name.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_Socket = socket.socket  # the method named socket below hides the module in annotations
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


class LabError(RuntimeError):
    """The lab could not be built or a command in it failed; the message says which."""


def _enter(name: str) -> None:
    """Move the calling thread into namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({name}): {os.strerror(error)}")
    finally:
        os.close(fd)


def run_command(argv: Sequence[str], *, input_text: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                            check=False, timeout=30)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): "
                       f"{(result.stderr or result.stdout).strip()[:500]}")
    return result


class Netns:
    """A network namespace the lab made; :meth:`delete` removes it and its processes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[bytes]] = []

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    # -- commands ------------------------------------------------------------------

    def run(self, *argv: str, input_text: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        return run_command(["ip", "netns", "exec", self.name, *argv], input_text=input_text,
                           check=check)

    def ip(self, *args: str) -> None:
        """``ip -n NAME args``: configure the namespace's links, addresses and routes."""
        run_command(["ip", "-n", self.name, *args])

    def sysctl(self, key: str, value: object) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def popen(self, argv: Sequence[str], *, log: Path | None = None,
              **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace; the namespace stops it at :meth:`delete`.

        Its stdout and stderr go to ``log`` (or nowhere)."""
        with contextlib.ExitStack() as files:
            out: Any = subprocess.DEVNULL
            if log is not None:
                out = files.enter_context(log.open("wb"))
            process = subprocess.Popen(["ip", "netns", "exec", self.name, *argv],
                                       stdout=kwargs.pop("stdout", out),
                                       stderr=kwargs.pop("stderr", subprocess.STDOUT),
                                       stdin=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    # -- sockets and threads in the namespace ----------------------------------------

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` in a new thread that has entered this namespace; its
        sockets are made inside the namespace. Blocks until it returns (from trio:
        ``await trio.to_thread.run_sync(ns.call, function)``)."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                _enter(self.name)
                box["value"] = function()
            except BaseException as error:
                box["error"] = error

        thread = threading.Thread(target=body, name=f"netns {self.name}", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    def socket(self, family: int = socket.AF_INET,
               kind: int = socket.SOCK_DGRAM) -> _Socket:
        """A socket of this process, living in the namespace."""
        return self.call(lambda: _Socket(family, kind))

    def udp(self, host: str = "0.0.0.0", port: int = 0) -> _Socket:
        """A bound UDP socket in the namespace (blocking, with a 2 s timeout)."""
        sock = self.socket()
        sock.settimeout(2.0)
        sock.bind((host, port))
        return sock

    # -- removal ------------------------------------------------------------------

    def pids(self) -> list[int]:
        result = run_command(["ip", "netns", "pids", self.name], check=False)
        return [int(word) for word in result.stdout.split() if word.isdigit()]

    def kill_all(self, grace: float = 1.0) -> None:
        """SIGTERM every process in the namespace, SIGKILL what is left after ``grace``."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                for process in self.processes:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(0)
                pids = self.pids()
                if pids:
                    time.sleep(0.01)
            if not pids:
                break
        for process in self.processes:  # reap our children (ip netns exec wrappers)
            if process.poll() is None:
                process.kill()
            process.wait(5)

    def delete(self) -> None:
        self.kill_all()
        run_command(["ip", "netns", "del", self.name], check=False)


def create(name: str) -> Netns:
    run_command(["ip", "netns", "add", name])
    namespace = Netns(name)
    namespace.ip("link", "set", "lo", "up")
    return namespace


def existing() -> list[str]:
    result = run_command(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
