"""Real p2pd processes in the lab's namespaces: players behind their NATs and the
coordinator on the lab's internet, each with its own directory (ini, keys, logs).

``start_lab_coordinator`` runs ``p2pd coordinator`` on the lab's coordinator address
(192.0.2.10:7400); ``start_player`` runs ``p2pd run`` on a player's host the way a
user runs it: NAT traversal and port mapping on, STUN and TURN on the lab's coturn,
registered with the coordinator by a connect token minted with the coordinator's
issuer key. The tests reach each daemon's IPC through the Unix socket in its
runtime directory (a path on the shared filesystem, whatever the namespace)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import trio

from p2pd.client import DaemonClient
from p2pd.coordinator.credentials import load_or_create_signing_key, mint_token
from p2pd.crypto.identity import load_or_create_identity
from p2pd.localrun import DaemonProcess, p2pd_command, write_local_config
from tests.natlab.lab import COORDINATOR_ADDRESS, Lab, Side
from tests.natlab.netns import LabError, Netns

COORDINATOR_PORT = 7400
PLAYER_PORT = 7000


def start_lab_daemon(namespace: Netns, home: Path, *, port: int = PLAYER_PORT,
                     p2p: dict[str, str] | None = None,
                     coordinator: dict[str, str] | None = None,
                     port_mapping: dict[str, str] | None = None,
                     nat: dict[str, str] | None = None) -> DaemonProcess:
    """``p2pd run`` in ``namespace`` with its own ini, key, log and runtime directory
    under ``home``, UDP on ``port`` (a fresh namespace has every port free), and
    ``nat`` as its ``[nat]`` section. Its IPC is reachable from the test through the
    Unix socket in ``home/run`` (``tests.daemons.open_client``); the lab stops it at
    the end if the test did not."""
    config = write_local_config(home, port_low=port, port_high=port + 9, p2p=p2p,
                                coordinator=coordinator, port_mapping=port_mapping)
    if nat:
        with config.open("a", encoding="utf-8") as ini:
            ini.write("[nat]\n" + "".join(f"{key}={value}\n" for key, value in nat.items()))
    stderr = home / "stderr.txt"
    process = namespace.popen([*p2pd_command(), "run", "--config", str(config)], log=stderr,
                              cwd=home)
    return DaemonProcess(home, config, process, stderr_path=stderr)


@dataclass
class LabCoordinator:
    """``p2pd coordinator`` on the lab's internet."""

    process: Popen[bytes]
    home: Path
    address: str  # host:port daemons register at
    public_key: str  # hex, pinned by the daemons
    issuer_file: Path  # the Ed25519 key connect tokens are minted with
    info_file: Path  # written by the coordinator once it listens
    stderr_file: Path
    ready: bool = False

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the coordinator listens (its info file written), at the address and
        with the public key the daemons were given."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            text = self.info_file.read_text() if self.info_file.exists() else ""
            try:
                info = json.loads(text) if text.endswith("\n") else None
            except ValueError:  # half-written
                info = None
            if info is not None:
                if (info["udp"], info["public_key"]) != (self.address, self.public_key):
                    raise LabError(f"p2pd coordinator is at {info['udp']} with key "
                                   f"{info['public_key']}, expected {self.address} with "
                                   f"{self.public_key}")
                self.ready = True
            elif self.process.poll() is not None:
                raise LabError(f"p2pd coordinator exited with {self.process.returncode}: "
                               f"{self.stderr_file.read_text(errors='replace')[-2000:]}")
            elif time.monotonic() > deadline:
                raise LabError(f"p2pd coordinator not ready after {timeout} s")
            else:
                time.sleep(0.01)

    def log_records(self) -> list[dict[str, Any]]:
        path = self.home / "logs" / "coordinator.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def launch_lab_coordinator(lab: Lab, home: Path) -> LabCoordinator:
    """``p2pd coordinator`` started on the lab's internet (192.0.2.10:7400), not waited
    for: its keys are made here first, so its address, its public key and the issuer
    key tokens are minted with are known at once, and the players can start alongside
    it (they retry their handshake until it answers). :meth:`LabCoordinator.wait_ready`
    waits for it (``lab_players`` does)."""
    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(state / "coordinator.key")
    issuer_file = state / "issuer.key"
    load_or_create_signing_key(issuer_file)
    config = home / "coordinator.ini"
    config.write_text(f"[coordinator_server]\nlisten_host={COORDINATOR_ADDRESS}\n"
                      f"listen_port={COORDINATOR_PORT}\nlog_level=debug\n"
                      f"key_file={state / 'coordinator.key'}\n"
                      f"signing_key_file={state / 'signing.key'}\n"
                      f"issuer_key_file={issuer_file}\n"
                      f"status_file={state / 'status.json'}\n"
                      "[log]\nfile=logs/coordinator.log\n", encoding="utf-8")
    info_file = home / "info.json"
    log = home / "stderr.txt"
    process = lab.internet.popen([*p2pd_command(), "coordinator", "--config", str(config),
                                  "--info-file", str(info_file)], log=log, cwd=home)
    return LabCoordinator(process, home, f"{COORDINATOR_ADDRESS}:{COORDINATOR_PORT}",
                          identity.public_key.hex(), issuer_file, info_file, log)


def start_lab_coordinator(lab: Lab, home: Path, timeout: float = 20.0) -> LabCoordinator:
    """``p2pd coordinator`` on the lab's internet, listening when this returns."""
    coordinator = launch_lab_coordinator(lab, home)
    coordinator.wait_ready(timeout)
    return coordinator


def start_player(lab: Lab, side: Side, home: Path, coordinator: LabCoordinator, *,
                 player_id: int, relay_only: bool = False, turn: bool = True,
                 port_mapping: bool = True, max_peers: int = 4,
                 nat: dict[str, str] | None = None) -> DaemonProcess:
    """A player's daemon on ``side``'s host, configured as a user would: NAT traversal
    and port mapping on ([port_mapping] enabled; on a router without PCP, NAT-PMP or
    UPnP it simply finds none), the lab's coturn for STUN (RFC 5780 discovery) and,
    with ``turn``, TURN; registered with ``coordinator`` as ``player_id``."""
    home.mkdir(parents=True, exist_ok=True)
    identity = load_or_create_identity(home / "identity.key")
    token = mint_token(load_or_create_signing_key(coordinator.issuer_file), account_id=player_id,
                       player_id=player_id, daemon_key=identity.public_key, lifetime=3600,
                       now=time.time())
    (home / "token.hex").write_text(token.hex() + "\n", encoding="utf-8")
    settings: dict[str, str] = {}
    if lab.turn is not None:
        server = f"{lab.turn.address}:{lab.turn.port}"
        settings["stun_servers"] = server
        if turn:
            user, password = lab.turn.settings.users[0]
            settings.update(turn_server=server, turn_username=user, turn_password=password)
    settings.update(nat or {})
    return start_lab_daemon(
        side.host, home, p2p={"nat_traversal": "true", "max_peers": str(max_peers)},
        coordinator={"address": coordinator.address, "public_key": coordinator.public_key,
                     "token_file": "token.hex", "relay_only": str(relay_only).lower(),
                     "backups": "0"},
        port_mapping={"enabled": str(port_mapping).lower()}, nat=settings)


# -- asking the daemons ------------------------------------------------------------


async def open_player(daemon: DaemonProcess) -> DaemonClient:
    return await DaemonClient.open(daemon.runtime_dir, client_name="natlab")


async def wait_until_registered(client: DaemonClient, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while True:
            coordinator = (await client.request("status"))["coordinator"] or {}
            if coordinator.get("state") == "registered":
                return
            await trio.sleep(0.02)


async def wait_until_gathered(client: DaemonClient, timeout: float = 15.0, *,
                              discovery: bool = True) -> dict[str, Any]:
    """The ``nat`` picture once the TURN allocation (if any) has settled and, with
    ``discovery``, NAT behaviour discovery is done (about 6 s behind a NAT that
    filters: two CHANGE-REQUESTs go unanswered)."""
    with trio.fail_after(timeout):
        while True:
            nat = await client.request("nat")
            turn = nat.get("turn")
            behaviour = nat.get("behaviour") or {}
            if (not discovery or behaviour.get("state") in ("done", None)) and (
                    turn is None or turn["state"] in ("allocated", "failed")):
                return nat
            await trio.sleep(0.02)


def peer_of(nat: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The established link with ``key`` in a ``nat`` picture (its ``path`` and
    ``address``), or None."""
    for peer in nat.get("peers", []):
        if peer["peer"] == key and peer.get("state", "established") == "established":
            result: dict[str, Any] = peer
            return result
    return None


def stop_all(daemons: list[DaemonProcess], timeout: float = 10.0) -> list[int]:
    """SIGTERM every daemon at once, then wait for each (SIGKILL past ``timeout``):
    a daemon stops in up to 2 s (its port mapping deleted), so not one after another.
    Returns the exit codes."""
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.process.terminate()
    return [daemon.stop(timeout) for daemon in daemons]


@dataclass
class Player:
    """A player's daemon in the lab and an IPC client of it."""

    side: Side
    daemon: DaemonProcess
    client: DaemonClient

    @property
    def key(self) -> str:
        return self.daemon.public_key

    async def nat(self) -> dict[str, Any]:
        return await self.client.request("nat")

    async def link_to(self, other: Player) -> dict[str, Any] | None:
        """This side's established link with ``other`` (``nat`` peers[]), or None."""
        return peer_of(await self.nat(), other.key)


@asynccontextmanager
async def lab_players(lab: Lab, workdir: Path, coordinator: LabCoordinator,
                      sides: list[Side], *, each: list[dict[str, Any]] | None = None,
                      **options: Any) -> AsyncIterator[list[Player]]:
    """``start_player`` on each of ``sides`` (``options`` for all, ``each[i]`` for the
    i-th), all at once (and alongside the coordinator, if it was only launched), ready,
    registered and connected to over IPC; every daemon stopped at the end, also on
    failure."""
    daemons: list[DaemonProcess] = []
    players: list[Player] = []
    try:
        for index, side in enumerate(sides):
            own = {**options, **(each[index] if each else {})}
            daemons.append(start_player(lab, side, workdir / f"player-{side.name}",
                                        coordinator, player_id=index + 1, **own))
        coordinator.wait_ready()  # if launched alongside the players
        for daemon in daemons:
            daemon.wait_ready()
        for side, daemon in zip(sides, daemons, strict=True):
            players.append(Player(side, daemon, await open_player(daemon)))
        for player in players:
            await wait_until_registered(player.client)
        yield players
    finally:
        for player in players:
            await player.client.aclose()
        stop_all(daemons)


async def meet(x: Player, y: Player, map_name: str = "prontera",
               timeout: float = 15.0) -> float:
    """Place both players next to each other on ``map_name`` and wait until both have
    the link up (``peer_joined``); the seconds that took."""
    for player in (x, y):
        await player.client.request("subscribe", events=["peer_joined", "peer_left", "chat"])
    started = time.monotonic()
    await x.client.request("position", map=map_name, x=100, y=100, dir=0, tick=1)
    await y.client.request("position", map=map_name, x=103, y=100, dir=0, tick=1)
    with trio.fail_after(timeout):
        for player, other in ((x, y), (y, x)):
            while True:
                event = await player.client.next_event()
                if event["event"] == "peer_joined" and event["peer"] == other.key:
                    break
    return time.monotonic() - started


async def chat_both_ways(x: Player, y: Player, text: str, timeout: float = 5.0) -> list[str]:
    """A chat line from each to the other; the events seen on the way that were not
    chat (a ``peer_left`` would show here). Fails if a line does not arrive."""
    others: list[str] = []
    await x.client.request("chat", text=f"{text} from {x.side.name}")
    await y.client.request("chat", text=f"{text} from {y.side.name}")
    with trio.fail_after(timeout):
        for player, other in ((y, x), (x, y)):
            while True:
                event = await player.client.next_event()
                if event["event"] == "chat":
                    assert event["text"] == f"{text} from {other.side.name}", event
                    break
                others.append(str(event["event"]))
    return others
