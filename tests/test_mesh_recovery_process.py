"""The mesh recovering, with real daemon processes and a coordinator on loopback:
a direct path blocked (iptables on lo) falls back to the coordinator's relay and
comes back when it heals; a daemon killed with SIGKILL is replaced by a backup,
and when it starts again it is linked again and gets the chat of its outage once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pd.client import DaemonClient
from p2pd.coordinator.credentials import load_or_create_signing_key, mint_token
from p2pd.crypto.identity import load_or_create_identity
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config
from tests.daemons import free_udp_range, next_event_named, open_client
from tests.test_coordinator_process import start as start_coordinator


def write_token(home: Path, player_id: int, issuer_file: Path) -> None:
    identity = load_or_create_identity(home / "identity.key")
    token = mint_token(load_or_create_signing_key(issuer_file), account_id=player_id,
                       player_id=player_id, daemon_key=identity.public_key,
                       lifetime=600, now=time.time())
    (home / "token.hex").write_text(token.hex() + "\n")


def mesh_daemon(root: Path, name: str, player_id: int, coordinator: dict[str, str],
                issuer_file: Path, *, max_peers: int = 2, backups: int = 1) -> DaemonProcess:
    home = root / name
    home.mkdir(parents=True)
    write_token(home, player_id, issuer_file)
    low, high = free_udp_range(5)
    config = write_local_config(home, port_low=low, port_high=high,
                                p2p={"max_peers": str(max_peers)},
                                coordinator={"address": coordinator["udp"],
                                             "public_key": coordinator["public_key"],
                                             "token_file": "token.hex",
                                             "backups": str(backups)})
    return start_daemon(home, config)


async def peer_rows(client: DaemonClient) -> dict[str, dict[str, Any]]:
    return {p["peer"]: p for p in (await client.request("peers"))["peers"]
            if p["state"] == "established"}


async def wait_for(what: str, predicate: Any, timeout: float) -> float:
    """Poll ``await predicate()`` until true; the seconds it took."""
    started = trio.current_time()
    with trio.move_on_after(timeout):
        while not await predicate():
            await trio.sleep(0.1)
        return trio.current_time() - started
    raise AssertionError(f"{what}: not within {timeout} s")


async def stop_all(clients: list[DaemonClient], daemons: list[DaemonProcess],
                   coordinator: subprocess.Popen[bytes]) -> None:
    for client in clients:
        await client.aclose()
    for daemon in daemons:
        daemon.stop()
    coordinator.send_signal(signal.SIGTERM)
    coordinator.wait(10)


def port_of(daemon: DaemonProcess) -> int:
    return int(daemon.udp_address.rsplit(":", 1)[1])


@contextmanager
def blocked(a: int, b: int) -> Iterator[None]:
    """Drop UDP on loopback between ports ``a`` and ``b``, both ways (as a broken
    route would), until the block ends; the rules go even when the test fails."""
    tag = f"p2pd-test-{os.getpid()}-{a}-{b}"
    rules = [["INPUT", "-i", "lo", "-p", "udp", "--sport", str(s), "--dport", str(d),
              "-m", "comment", "--comment", tag, "-j", "DROP"] for s, d in ((a, b), (b, a))]
    for rule in rules:
        subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=False)


def iptables_usable() -> str | None:
    """Why the block cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root for iptables"
    if shutil.which("iptables") is None:
        return "needs iptables (scripts/test installs it with apt when run as root)"
    probe = subprocess.run(["iptables", "-S", "INPUT"], check=False, capture_output=True,
                           text=True)
    if probe.returncode != 0:
        return f"iptables does not work here: {probe.stderr.strip()[:200]}"
    return None


@pytest.mark.skipif(iptables_usable() is not None, reason=str(iptables_usable()))
async def test_a_blocked_direct_path_falls_back_to_the_relay_and_returns(tmp_path: Path) -> None:
    (tmp_path / "coordinator").mkdir()
    process, info = start_coordinator(tmp_path / "coordinator")
    issuer = tmp_path / "coordinator" / "state" / "issuer.key"
    daemons = [mesh_daemon(tmp_path, name, player, info, issuer)
               for name, player in (("alice", 160001), ("bob", 160002))]
    clients: list[DaemonClient] = []
    try:
        for daemon in daemons:
            daemon.wait_ready()
        alice, bob = daemons
        clients = [await open_client(d) for d in daemons]
        a, b = clients
        await b.request("subscribe", events=["chat"])
        for client, x in ((a, 150), (b, 153)):
            await client.request("position", map="prontera", x=x, y=180, dir=0, tick=1)

        async def path(client: DaemonClient, peer: DaemonProcess) -> str | None:
            row = (await peer_rows(client)).get(peer.public_key)
            return None if row is None else str(row["path"])

        async def both(kind: str) -> bool:
            return await path(a, bob) == kind and await path(b, alice) == kind

        await wait_for("a direct link", lambda: both("direct"), 20)
        with blocked(port_of(alice), port_of(bob)):
            took = await wait_for("relay fallback", lambda: both("relay"), 15)
            assert took <= 8.0, f"the relay took over after {took:.1f} s"
            await a.request("chat", text="through the coordinator")
            assert (await next_event_named(b, "chat"))["text"] == "through the coordinator"
        took = await wait_for("back to direct", lambda: both("direct"), 20)
        assert took <= 10.0, f"direct again {took:.1f} s after the path healed"
        await a.request("chat", text="direct again")
        assert (await next_event_named(b, "chat"))["text"] == "direct again"
        # the operator sees the relayed traffic and the daemons' reports of it
        config = tmp_path / "coordinator" / "coordinator.ini"

        async def operator_sees_it() -> bool:
            shown = subprocess.run([str(Path(sys.executable).parent / "p2pctl"),
                                    "coordinator-status", "--coordinator-config", str(config),
                                    "--json"], capture_output=True, text=True, check=False)
            if shown.returncode != 0:
                return False
            status = json.loads(shown.stdout)
            return status["relay"]["packets"] > 0 and any(
                r["code"] == "relay_fallback" for r in status["recent_reports"])

        await wait_for("the coordinator's status file", operator_sees_it, 12)
        shown = subprocess.run([str(Path(sys.executable).parent / "p2pctl"),
                                "coordinator-status", "--coordinator-config", str(config)],
                               capture_output=True, text=True, check=True)
        assert "relay_fallback" in shown.stdout and "2 registered" in shown.stdout
    finally:
        await stop_all(clients, daemons, process)


async def test_a_killed_daemon_is_replaced_by_a_backup_and_gets_its_outage_chat_once(
        tmp_path: Path) -> None:
    (tmp_path / "coordinator").mkdir()
    process, info = start_coordinator(tmp_path / "coordinator")
    issuer = tmp_path / "coordinator" / "state" / "issuer.key"
    alice = mesh_daemon(tmp_path, "alice", 170001, info, issuer, max_peers=1, backups=1)
    bob = mesh_daemon(tmp_path, "bob", 170002, info, issuer)
    carol = mesh_daemon(tmp_path, "carol", 170003, info, issuer)
    daemons = [alice, bob, carol]
    clients: list[DaemonClient] = []
    try:
        for daemon in daemons:
            daemon.wait_ready()
        clients = [await open_client(d) for d in daemons]
        a, b, c = clients
        for client, x in ((a, 150), (b, 152), (c, 156)):  # bob nearest to alice
            await client.request("position", map="prontera", x=x, y=180, dir=0, tick=1)

        async def roles() -> dict[str, str]:
            status = await a.request("status")
            return {p["peer"]: p.get("role", "?") for p in status["peers"]
                    if p["state"] == "established"}

        async def bob_active_carol_backup() -> bool:
            return await roles() == {bob.public_key: "active", carol.public_key: "backup"}

        await wait_for("bob active, carol backup", bob_active_carol_backup, 20)
        bob.kill()  # SIGKILL: no goodbye
        await b.aclose()
        clients.remove(b)
        await a.request("chat", text="outage 0", to=[bob.public_key])

        async def carol_active() -> bool:
            return (await roles()).get(carol.public_key) == "active"

        took = await wait_for("carol promoted", carol_active, 15)
        assert took <= 12.0, f"the backup took over after {took:.1f} s"
        answer = await a.request("chat", text="outage 1", to=[bob.public_key])
        assert answer == {"sent": 0, "rate_limited": 0, "out_of_view": 0, "absent": 1}
        await a.request("chat", text="outage 2", to=[bob.public_key])
        # bob comes back: the same key and home, a fresh token from the game
        write_token(tmp_path / "bob", 170002, issuer)
        bob = start_daemon(tmp_path / "bob", tmp_path / "bob" / "ai_client.ini")
        daemons[1] = bob
        bob.wait_ready()
        b = await open_client(bob)
        clients.append(b)
        await b.request("subscribe", events=["chat"])
        await b.request("position", map="prontera", x=152, y=180, dir=0, tick=2)
        texts = [(await next_event_named(b, "chat", timeout=20))["text"] for _ in range(3)]
        assert texts == ["outage 0", "outage 1", "outage 2"]
        with pytest.raises(trio.TooSlowError):  # and nothing twice
            extra = await next_event_named(b, "chat", timeout=2.0)
            raise AssertionError(f"delivered again: {extra}")
    finally:
        await stop_all(clients, daemons, process)
