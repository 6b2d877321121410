"""Start p2pd daemons as real processes on this machine, for demos, tests and benches.

Each daemon gets a directory of its own: an ``ai_client.ini`` derived from
the repository's, its identity key, its log and its runtime directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pd.client import DaemonClient
from p2pd.io.runtime import RUNTIME_FILE, RuntimeFileError, RuntimeInfo, read_runtime_info


def write_local_config(home: Path, *, port_low: int, port_high: int,
                       p2p: dict[str, str] | None = None,
                       ipc: dict[str, str] | None = None,
                       coordinator: dict[str, str] | None = None,
                       port_mapping: dict[str, str] | None = None,
                       sync: dict[str, str] | None = None) -> Path:
    """An ai_client.ini for a daemon living in ``home`` (IPC on a free TCP port).

    Without an embedded coordinator unless ``coordinator`` asks for one
    (``{"embedded": "true", "embedded_port": "0"}``): daemons on one machine
    would otherwise each run their own, on the same port. Without port mapping
    unless ``port_mapping`` turns it on: daemons on loopback have nothing to
    ask the machine's router for."""
    coordinator = {"embedded": "false", **(coordinator or {})}
    settings = {
        "enabled": "true", "port_range": f"{port_low}-{port_high}", "log_level": "debug",
        **(p2p or {}),
    }
    lines = ["[P2P]", *(f"{key}={value}" for key, value in settings.items()),
             "", "[identity]", "key_file=identity.key",
             "", "[ipc]", "tcp_host=127.0.0.1", "tcp_port=0", f"runtime_dir={home / 'run'}",
             *(f"{key}={value}" for key, value in (ipc or {}).items()),
             "", "[log]", "file=logs/p2p.log",
             "", "[coordinator]", *(f"{key}={value}" for key, value in coordinator.items()),
             "", "[port_mapping]",
             *(f"{key}={value}" for key, value in {"enabled": "false",
                                                    **(port_mapping or {})}.items()),
             *(["", "[sync]", *(f"{key}={value}" for key, value in sync.items())]
               if sync else []),
             ""]
    home.mkdir(parents=True, exist_ok=True)
    path = home / "ai_client.ini"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class DaemonProcess:
    home: Path
    config: Path
    process: subprocess.Popen[bytes]
    info: RuntimeInfo | None = None
    stderr_path: Path = field(default_factory=Path)

    @property
    def runtime_dir(self) -> Path:
        return self.home / "run"

    @property
    def udp_address(self) -> str:
        assert self.info is not None
        return f"127.0.0.1:{self.info.udp_port}"

    @property
    def public_key(self) -> str:
        assert self.info is not None
        return self.info.public_key

    def wait_ready(self, timeout: float = 20.0) -> RuntimeInfo:
        deadline = time.monotonic() + timeout
        path = self.runtime_dir / RUNTIME_FILE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"p2pd exited with {self.process.returncode}: {self.stderr()}")
            if path.exists():
                try:
                    info = read_runtime_info(self.runtime_dir)
                except RuntimeFileError:  # half-written: try again
                    time.sleep(0.02)
                    continue
                if info.pid == self.process.pid:
                    self.info = info
                    return info
            time.sleep(0.02)
        raise TimeoutError(f"p2pd in {self.home} not ready after {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not go."""
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM on POSIX
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def log_records(self) -> list[dict[str, object]]:
        path = self.home / "logs" / "p2p.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def p2pd_command() -> list[str]:
    """How to run p2pd from this environment (its console script, else the module)."""
    script = Path(sys.executable).parent / "p2pd"
    if script.exists():
        return [str(script)]
    found = shutil.which("p2pd")
    if found:
        return [found]
    return [sys.executable, "-m", "p2pd_cli.p2pd_main"]


def start_daemon(home: Path, config: Path,
                 env: dict[str, str] | None = None) -> DaemonProcess:
    home.mkdir(parents=True, exist_ok=True)
    stderr_path = home / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*p2pd_command(), "run", "--config", str(config)],
            cwd=home, stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
    return DaemonProcess(home, config, process, stderr_path=stderr_path)


def free_udp_range(start: int, width: int = 10) -> tuple[int, int]:
    """A port range whose first port is free on 0.0.0.0 (UDP), from ``start`` on."""
    for low in range(start, 65000, width):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("0.0.0.0", low))
        except OSError:
            continue
        finally:
            probe.close()
        return low, low + width - 1
    raise RuntimeError("no free UDP port range")


@contextmanager
def running_daemons(root: Path, count: int, *, first_port: int,
                    p2p: dict[str, str] | None = None,
                    ipc: dict[str, str] | None = None,
                    sync: dict[str, str] | None = None) -> Iterator[list[DaemonProcess]]:
    """``count`` daemons under ``root``, ready on return, stopped (SIGTERM) on exit."""
    started: list[DaemonProcess] = []
    port = first_port
    try:
        for i in range(count):
            home = root / f"daemon{i}"
            low, high = free_udp_range(port)
            port = high + 1
            config = write_local_config(home, port_low=low, port_high=high, p2p=p2p, ipc=ipc,
                                        sync=sync)
            started.append(start_daemon(home, config))
        for daemon in started:
            daemon.wait_ready()
        yield started
    finally:
        for daemon in started:
            daemon.stop()


async def link(a: DaemonProcess, b: DaemonProcess, client_a: DaemonClient,
               client_b: DaemonClient, timeout: float = 10) -> None:
    """Connect a to b and wait until both report the link established."""
    await client_a.request("connect", address=b.udp_address, key=b.public_key)
    with trio.fail_after(timeout):
        for client, other in ((client_a, b), (client_b, a)):
            while not any(p["peer"] == other.public_key and p["state"] == "established"
                          for p in (await client.request("peers"))["peers"]):
                await trio.sleep(0.02)
