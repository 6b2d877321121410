"""Start a real coturn (Debian's turnserver) on loopback for a test, and always stop it."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pd.nat.stun import Method, binding_request, decode_message_untrusted

REALM = "p2pd.test"
USER, PASSWORD = "alice", "wonderland"
SECRET = "rest-secret"


@dataclass(frozen=True)
class Coturn:
    address: tuple[str, int]  # primary
    alternate_ip: str
    alternate_port: int


def turnserver_or_skip() -> str:
    path = shutil.which("turnserver")
    if path is None:
        pytest.skip("coturn is not installed (apt-get install coturn, as root)")
    return path


def _free_udp_port(host: str, count: int = 1) -> int:
    """A port p with p..p+count-1 free on ``host`` (good enough for a test)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port + count >= 65000:
            continue
        ok = True
        for extra in range(1, count):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                try:
                    other.bind((host, port + extra))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free UDP ports")


@contextlib.contextmanager
def coturn(tmp: Path, *, rest: bool = False) -> Iterator[Coturn]:
    binary = turnserver_or_skip()
    port = _free_udp_port("127.0.0.1", 2)
    relay_low = _free_udp_port("127.0.0.1", 20)
    auth = (["--use-auth-secret", f"--static-auth-secret={SECRET}"] if rest
            else ["--lt-cred-mech", f"--user={USER}:{PASSWORD}"])
    command = [
        binary, "-n", "--listening-ip=127.0.0.1", "--listening-ip=127.0.0.2",
        f"--listening-port={port}", f"--alt-listening-port={port + 1}",
        "--relay-ip=127.0.0.1", f"--min-port={relay_low}", f"--max-port={relay_low + 19}",
        f"--realm={REALM}", *auth, "--allow-loopback-peers", "--no-tls", "--no-dtls",
        "--no-cli", "--no-tcp-relay", f"--log-file={tmp / 'turn.log'}", "--simple-log",
        f"--pidfile={tmp / 'turn.pid'}", f"--userdb={tmp / 'turndb'}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(("127.0.0.1", port), process)
        yield Coturn(("127.0.0.1", port), "127.0.0.2", port + 1)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_ready(address: tuple[str, int], process: subprocess.Popen[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"turnserver exited with {process.returncode}")
            sock.sendto(binding_request(b"readyreadyre"), address)
            try:
                data, _ = sock.recvfrom(2048)
            except OSError:
                continue
            if decode_message_untrusted(data).method == Method.BINDING:
                return
        raise RuntimeError("turnserver did not answer in 10 s")
