"""The main job for now: two p2pd daemons on loopback exchanging game events.

Starts two daemons (each with its own directory under a temporary folder),
links them with `p2pctl connect`, has a game client on each side send its
player's events, prints what the other side's client receives, and shows
`p2pctl status` of both. Stops both daemons (SIGTERM) at the end.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from p2pd.client import DaemonClient
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config

P2PCTL = str(Path(sys.executable).parent / "p2pctl")


def p2pctl(daemon: DaemonProcess, *args: str) -> str:
    result = subprocess.run([P2PCTL, "--runtime-dir", str(daemon.runtime_dir), *args],
                            capture_output=True, text=True, timeout=30, check=True)
    return result.stdout


async def play(alice: DaemonProcess, bob: DaemonProcess) -> None:
    async with (await DaemonClient.open(alice.runtime_dir, client_name="alice-game") as a,
                await DaemonClient.open(bob.runtime_dir, client_name="bob-game") as b):
        await b.request("subscribe", events=["*"])
        await a.request("subscribe", events=["*"])
        print(f"$ p2pctl connect {alice.udp_address} ... (bob links to alice)")
        print(p2pctl(bob, "connect", alice.udp_address, alice.public_key), end="")
        with trio.fail_after(10):
            while (await b.next_event())["event"] != "peer_joined":
                pass
        events: list[tuple[str, dict[str, Any]]] = [
            ("position", {"map": "prontera", "x": 150, "y": 180, "dir": 2, "moving": True,
                          "tick": 1000}),
            ("chat", {"text": "Hi Bob! Selling red potions by the fountain."}),
            ("effect", {"effect_id": 316, "map": "prontera", "x": 150, "y": 180,
                        "start_ms": 1100, "duration_ms": 1500, "owner": 150001,
                        "params": {"level": 10}}),
            ("ai_interaction", {"interaction_id": 3, "ai_entity_id": 110001,
                                "player_id": 150001, "result": "quest accepted"}),
            ("environment", {"kind": "weather", "key": "prontera", "value": {"type": "rain"},
                             "version": 1}),
            ("legend", {"ai_entity_id": 110001, "kind": "dialogue",
                        "data": {"line": "The winds are restless tonight..."}, "version": 1}),
        ]
        for op, fields in events:
            await a.request(op, **fields)
            with trio.fail_after(5):
                while (got := await b.next_event())["event"] != op:
                    pass
            shown = {k: v for k, v in got.items() if k not in ("event", "from")}
            print(f"bob's game received {op:<15} from alice: {shown}")
        await b.request("chat", text="Thanks Alice, on my way!")
        with trio.fail_after(5):
            while (got := await a.next_event())["event"] != "chat":
                pass
        print(f"alice's game received chat from bob: {got['text']!r}")
        await trio.sleep(2.5)  # one PING round, so that both sides show an RTT


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="p2pd-demo-") as root:
        daemons = []
        try:
            for name, low in (("alice", 7000), ("bob", 7000)):
                home = Path(root) / name
                daemons.append(start_daemon(home, write_local_config(
                    home, port_low=low, port_high=low + 100, p2p={"log_level": "info"})))
            for daemon in daemons:
                daemon.wait_ready()
            alice, bob = daemons
            print(f"alice: UDP {alice.udp_address}, key {alice.public_key[:16]}...")
            print(f"bob:   UDP {bob.udp_address}, key {bob.public_key[:16]}...\n")
            trio.run(play, alice, bob)
            for name, daemon in zip(("alice", "bob"), daemons, strict=True):
                print(f"\n$ p2pctl status   ({name})")
                print(p2pctl(daemon, "status"), end="")
        finally:
            for daemon in daemons:
                daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
