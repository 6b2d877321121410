"""Daemons that find each other through a coordinator: real processes on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from p2pd.client import DaemonClient
from p2pd.coordinator.credentials import load_or_create_signing_key, mint_token
from p2pd.crypto.identity import load_or_create_identity
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config
from tests.daemons import free_udp_range, next_event_named, open_client
from tests.test_coordinator_process import start as start_coordinator


def daemon_with_token(root: Path, name: str, player_id: int, coordinator: dict[str, str],
                      issuer_file: Path) -> DaemonProcess:
    home = root / name
    home.mkdir(parents=True)
    identity = load_or_create_identity(home / "identity.key")
    token = mint_token(load_or_create_signing_key(issuer_file), account_id=1,
                       player_id=player_id, daemon_key=identity.public_key,
                       lifetime=600, now=time.time())
    (home / "token.hex").write_text(token.hex() + "\n")
    low, high = free_udp_range(5)
    config = write_local_config(home, port_low=low, port_high=high, p2p={"max_peers": "2"},
                                coordinator={"address": coordinator["udp"],
                                             "public_key": coordinator["public_key"],
                                             "token_file": "token.hex"})
    return start_daemon(home, config)


async def peers_of(client: DaemonClient) -> dict[str, str]:
    return {p["peer"]: p["state"] for p in (await client.request("peers"))["peers"]}


async def test_daemons_near_each_other_link_by_themselves_and_far_ones_do_not(
        tmp_path: Path) -> None:
    (tmp_path / "coordinator").mkdir()
    process, info = start_coordinator(tmp_path / "coordinator")
    daemons: list[DaemonProcess] = []
    try:
        issuer = tmp_path / "coordinator" / "state" / "issuer.key"
        for player_id, name in enumerate(("alice", "bob", "carol"), start=150001):
            daemons.append(daemon_with_token(tmp_path, name, player_id, info, issuer))
        for daemon in daemons:
            daemon.wait_ready()
        alice, bob, carol = daemons
        clients = [await open_client(d) for d in daemons]
        try:
            spots = {0: ("prontera", 150, 180), 1: ("prontera", 153, 182),
                     2: ("prontera", 250, 300)}  # carol: far beyond view range
            for i, client in enumerate(clients):
                await client.request("subscribe", events=["chat"])
                where, x, y = spots[i]
                await client.request("position", map=where, x=x, y=y, dir=0, tick=1)
            with trio.fail_after(20):
                while (await peers_of(clients[0])).get(bob.public_key) != "established":
                    await trio.sleep(0.05)
            status = await clients[0].request("status")
            assert status["coordinator"]["state"] == "registered"
            shown = subprocess.run(
                [str(Path(sys.executable).parent / "p2pctl"), "--runtime-dir",
                 str(alice.runtime_dir), "status"], capture_output=True, text=True, check=True)
            assert "registered" in shown.stdout and "mesh" in shown.stdout
            await clients[0].request("chat", text="found you without an address")
            assert (await next_event_named(clients[1], "chat"))["text"] == (
                "found you without an address")
            await trio.sleep(1.0)
            assert carol.public_key not in await peers_of(clients[0])
            assert await peers_of(clients[2]) == {}  # carol is alone over there
        finally:
            for client in clients:
                await client.aclose()
    finally:
        for daemon in daemons:
            daemon.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(10)
