"""`p2pd run` without a coordinator address runs one of its own (LAN play): real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from p2pd.client import DaemonClient
from p2pd.crypto.identity import load_or_create_identity
from p2pd.io.embedded import derived_player_id
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config
from tests.daemons import free_udp_range, next_event_named, open_client

BIN = Path(sys.executable).parent


def host(root: Path, coordinator: dict[str, str]) -> DaemonProcess:
    low, high = free_udp_range()
    config = write_local_config(root, port_low=low, port_high=high,
                                p2p={"max_peers": "2", "log_level": "info"},
                                coordinator=coordinator)
    return start_daemon(root, config)


async def wait_registered(client: DaemonClient) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            status = await client.request("status")
            if (status["coordinator"] or {}).get("state") == "registered":
                return status
            await trio.sleep(0.05)


async def test_a_daemon_without_a_coordinator_runs_one_and_a_second_daemon_joins_it(
        tmp_path: Path) -> None:
    first = host(tmp_path / "first", {"embedded": "true", "embedded_host": "127.0.0.1",
                                      "embedded_port": "0", "player_id": "150001"})
    daemons = [first]
    try:
        first.wait_ready()
        async with await open_client(first) as client_a:
            status = await wait_registered(client_a)
            embedded = status["embedded_coordinator"]
            assert embedded["daemons"] == 1
            address, key = str(embedded["udp_address"]), str(embedded["public_key"])
            assert address.startswith("127.0.0.1:") and len(key) == 64
            assert status["coordinator"]["address"] == address
            shown = subprocess.run([str(BIN / "p2pctl"), "--runtime-dir",
                                    str(first.runtime_dir), "status"],
                                   capture_output=True, text=True, check=True).stdout
            assert f"embedded  coordinator on udp {address}" in shown and key in shown
            assert "registered" in shown
            # a second daemon of the LAN: a token from the first one's issuer key
            home = tmp_path / "second"
            home.mkdir()
            second_key = load_or_create_identity(home / "identity.key").public_key.hex()
            minted = subprocess.run(
                [str(BIN / "p2pctl"), "token", "--issuer-key", str(first.home / "issuer.key"),
                 "--player", "150002", "--key", second_key],
                capture_output=True, text=True, check=True).stdout
            (home / "token.hex").write_text(minted)
            second = host(home, {"address": address, "public_key": key,
                                 "token_file": "token.hex"})
            daemons.append(second)
            second.wait_ready()
            async with await open_client(second) as client_b:
                await wait_registered(client_b)
                await client_b.request("subscribe", events=["chat"])
                for client, x in ((client_a, 150), (client_b, 153)):
                    await client.request("position", map="prontera", x=x, y=180, dir=0, tick=1)
                with trio.fail_after(15):
                    while not any(p["peer"] == second.public_key and p["state"] == "established"
                                  for p in (await client_a.request("peers"))["peers"]):
                        await trio.sleep(0.05)
                await client_a.request("chat", text="hello from the LAN host")
                event = await next_event_named(client_b, "chat")
                assert event["text"] == "hello from the LAN host"
                assert event["from"] == first.public_key
                status = await client_a.request("status")
                assert status["embedded_coordinator"]["daemons"] == 2
                assert (await client_b.request("status"))["embedded_coordinator"] is None
    finally:
        for daemon in daemons:
            daemon.stop()
    records = first.log_records()
    started = [r for r in records if r["event"] == "embedded_coordinator_started"]
    assert started and started[0]["player_id"] == 150001
    assert any(r["event"] == "daemon_registered" for r in records)


async def test_a_taken_port_leaves_the_daemon_running_without_a_mesh(tmp_path: Path) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as taken:
        await taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        daemon = host(tmp_path, {"embedded": "true", "embedded_host": "127.0.0.1",
                                 "embedded_port": str(port)})
        try:
            daemon.wait_ready()
            async with await open_client(daemon) as client:
                status = await client.request("status")
        finally:
            daemon.stop()
    assert status["coordinator"] is None
    assert f"127.0.0.1:{port}" in status["embedded_coordinator"]["error"]
    assert "embedded coordinator" in daemon.stderr()


def test_a_derived_player_id_is_stable_and_depends_on_the_key() -> None:
    key = bytes(range(32))
    assert derived_player_id(key) == derived_player_id(key) < 2**31
    assert derived_player_id(key) != derived_player_id(bytes(32))
