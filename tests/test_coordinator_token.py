"""Connect tokens from the game (IPC coordinator_token): a daemon without a token
file registers when the game hands it one, and a fresh token replaces the old
one for the next handshake with the coordinator."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from p2pd.config import CoordinatorSettings, DaemonConfig
from p2pd.coordinator.credentials import load_or_create_signing_key, mint_token
from p2pd.crypto.identity import Identity, load_or_create_identity
from p2pd.ipc.errors import IpcError
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config
from p2pd.node import Node
from p2pd.sim.nodes import CoreNode
from tests.daemons import free_udp_range, open_client
from tests.test_coordinator import COORD_ADDR, WALL, world
from tests.test_coordinator_process import start as start_coordinator


def test_a_daemon_waits_for_a_token_then_registers_and_takes_a_fresh_one() -> None:
    w, _ = world(31)
    identity = Identity.from_private_bytes(w.rng.randbytes(32))
    config = DaemonConfig(source=Path("test.ini"), coordinator=CoordinatorSettings(
        address="10.9.0.1:7300", public_key=w.coordinator.public_key, embedded=False))
    node = Node(config, identity, epoch=WALL, random_bytes=random.Random(1).randbytes)
    w.sim.add_node(CoreNode(("10.9.6.1", 7000), node))
    assert node.status(0.0)["coordinator"] == {"address": "10.9.0.1:7300", "state": "no_token"}

    def token(lifetime: float) -> bytes:
        return mint_token(w.issuer, account_id=5, player_id=5, daemon_key=identity.public_key,
                          lifetime=lifetime, now=w.wall())

    first = token(600)
    assert node.set_coordinator_token(first, COORD_ADDR, w.sim.now)["state"] == "connecting"
    w.sim.run_until(2.0)
    assert node.status(w.sim.now)["coordinator"]["state"] == "registered"
    fresh = token(3600)
    assert node.set_coordinator_token(fresh, None, w.sim.now)["state"] == "registered"
    session = node.endpoint._sessions[w.coordinator.public_key]
    assert session.credential == fresh  # what the next rekey presents


def test_a_token_without_a_coordinator_is_refused() -> None:
    config = DaemonConfig(source=Path("test.ini"),
                          coordinator=CoordinatorSettings(embedded=False))
    node = Node(config, Identity.from_private_bytes(bytes(range(32))))
    with pytest.raises(IpcError) as caught:
        node.set_coordinator_token(bytes(141), None, 0.0)
    assert caught.value.code == "no_coordinator"


async def test_the_game_hands_the_running_daemon_its_token(tmp_path: Path) -> None:
    (tmp_path / "coordinator").mkdir()
    process, info = start_coordinator(tmp_path / "coordinator")
    home = tmp_path / "player"
    home.mkdir()
    low, high = free_udp_range(5)
    config = write_local_config(home, port_low=low, port_high=high,
                                coordinator={"address": info["udp"],
                                             "public_key": info["public_key"]})
    daemon: DaemonProcess = start_daemon(home, config)
    try:
        daemon.wait_ready()
        async with await open_client(daemon) as client:
            status = await client.request("status")
            assert status["coordinator"]["state"] == "no_token"
            shown = subprocess.run(
                [str(Path(sys.executable).parent / "p2pctl"), "--runtime-dir",
                 str(daemon.runtime_dir), "status"], capture_output=True, text=True, check=True)
            assert "waiting for a connect token" in shown.stdout
            identity = load_or_create_identity(home / "identity.key")
            issuer = load_or_create_signing_key(tmp_path / "coordinator" / "state" / "issuer.key")
            token = mint_token(issuer, account_id=9, player_id=190001,
                               daemon_key=identity.public_key, lifetime=600, now=time.time())
            answer = await client.request("coordinator_token", token=token.hex())
            assert answer["state"] == "connecting"
            for _ in range(100):
                status = await client.request("status")
                if status["coordinator"]["state"] == "registered":
                    break
                await trio.sleep(0.05)
            assert status["coordinator"]["state"] == "registered"
            assert status["coordinator"]["daemon_id"] is not None
    finally:
        daemon.stop()
        process.terminate()
        process.wait(10)
