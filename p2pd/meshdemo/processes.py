"""The demo's processes: one daemon per player on loopback, the first one hosting
the embedded coordinator, all under one temporary directory.

:class:`Cluster` starts them and always takes them down again: every process
it started is stopped (SIGTERM, then SIGKILL after a grace period) and the
directory is removed, on success, on error and on Ctrl-C alike.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pd.client import DaemonClient
from p2pd.coordinator.credentials import load_or_create_signing_key, mint_token
from p2pd.crypto.identity import load_or_create_identity
from p2pd.localrun import DaemonProcess, free_udp_range, start_daemon, write_local_config

TOKEN_LIFETIME = 3600.0  # seconds: the longest a connect token may live
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
PORTS_PER_DAEMON = 10


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    players: int
    max_peers: int
    backups: int
    relay_only: int = 0  # the last this many players keep their address to themselves
    first_port: int = 43000  # where the search for free UDP port ranges starts
    log_level: str = "info"
    player_id_base: int = 150_000


@dataclass(frozen=True, slots=True)
class CoordinatorInfo:
    """The embedded coordinator, as its host daemon's status shows it."""

    udp_address: str
    public_key: str
    issuer_key: str


@dataclass
class Cluster:
    """The daemons of one demo run; ``daemons[i]`` is player ``i``'s."""

    settings: ClusterSettings
    root: Path
    keep: bool = False  # leave the directory behind (to read the daemons' logs)
    daemons: list[DaemonProcess] = field(default_factory=list)
    coordinator: CoordinatorInfo | None = None
    _next_port: int = 0

    @classmethod
    def create(cls, settings: ClusterSettings, keep: bool = False) -> Cluster:
        return cls(settings, Path(tempfile.mkdtemp(prefix="p2pd-demo-")), keep)

    async def start(self) -> None:
        """The host daemon (player 0, with the embedded coordinator), then the others
        with tokens from its issuer key; returns once all are ready."""
        host = self._start(0, {"embedded": "true", "embedded_host": "127.0.0.1",
                               "embedded_port": "0",
                               "player_id": str(self.settings.player_id_base)})
        host.wait_ready()
        self.coordinator = await _embedded_coordinator(host)
        issuer = load_or_create_signing_key(host.home / "issuer.key")
        for index in range(1, self.settings.players):
            home = self.root / f"player{index}"
            home.mkdir(parents=True)
            key = load_or_create_identity(home / "identity.key").public_key
            token = mint_token(issuer, account_id=index,
                               player_id=self.settings.player_id_base + index,
                               daemon_key=key, lifetime=TOKEN_LIFETIME, now=time.time())
            (home / "token.hex").write_text(token.hex() + "\n", encoding="ascii")
            relay_only = index >= self.settings.players - self.settings.relay_only
            self._start(index, {"address": self.coordinator.udp_address,
                                "public_key": self.coordinator.public_key,
                                "token_file": "token.hex",
                                "relay_only": "true" if relay_only else "false"})
        for daemon in self.daemons[1:]:
            daemon.wait_ready()

    def _start(self, index: int, coordinator: dict[str, str]) -> DaemonProcess:
        settings = self.settings
        home = self.root / f"player{index}"
        low, high = free_udp_range(max(self._next_port, settings.first_port), PORTS_PER_DAEMON)
        self._next_port = high + 1
        config = write_local_config(
            home, port_low=low, port_high=high,
            p2p={"max_peers": str(settings.max_peers), "log_level": settings.log_level},
            coordinator={"backups": str(settings.backups), **coordinator})
        daemon = start_daemon(home, config)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        """Stop every daemon (all at once), then remove the directory."""
        for daemon in self.daemons:
            if daemon.process.poll() is None:
                daemon.process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for daemon in self.daemons:
            try:
                daemon.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # still there after the grace period
                daemon.process.kill()
                daemon.process.wait()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


async def _embedded_coordinator(host: DaemonProcess) -> CoordinatorInfo:
    async with await DaemonClient.open(host.runtime_dir, client_name="p2pd demo") as client:
        status: dict[str, Any] = await client.request("status")
    embedded = status.get("embedded_coordinator") or {}
    if "udp_address" not in embedded:
        raise RuntimeError(f"the host daemon runs no coordinator: {embedded or status}")
    return CoordinatorInfo(embedded["udp_address"], embedded["public_key"],
                           embedded["issuer_key"])
